"""Runs the netaudit command line, and pytest with the plugin, as a user would: in a
process of its own, with its output captured."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from tests.netns import Netns
from tests.processes import terminal_signals


def netaudit(
    *args: str,
    cwd: Path,
    netns: Netns | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``python -m netaudit ARGS`` in ``cwd``; inside a private network namespace if given."""
    return _run([sys.executable, "-m", "netaudit", *args], cwd, netns, env, timeout)


#: Where pytest_run runs when no namespace is given: tests/plugin sets the private network
#: namespace here for its whole session.
DEFAULT_NETNS: Netns | None = None


def pytest_run(
    *args: str,
    cwd: Path,
    netns: Netns | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
    cache: bool = False,
    shuffle: bool = False,
) -> pytest.RunResult:
    """``python -m pytest ARGS`` in ``cwd`` in a process of its own, as a user would run it
    (the plugin loads from its entry point); inside a private network namespace if given,
    else in DEFAULT_NETNS. The cache is off unless asked for; so is pytest-randomly, where the
    compatibility matrix installs it (tests expect the tests in file order), unless
    ``shuffle``."""
    off = [
        *([] if cache else ["-p", "no:cacheprovider"]),
        *([] if shuffle else ["-p", "no:randomly"]),
    ]
    argv = [sys.executable, "-m", "pytest", *off, *args]
    started = time.monotonic()
    done = _run(argv, cwd, netns or DEFAULT_NETNS, env, timeout)
    return pytest.RunResult(
        done.returncode,
        done.stdout.splitlines(),
        done.stderr.splitlines(),
        time.monotonic() - started,
    )


def private_tmp(folder: Path) -> tuple[Path, dict[str, str]]:
    """A TMPDIR of the test's own (``folder/tmp``) and an environment naming it: netaudit's
    private dir goes there, so whatever a run leaves behind shows."""
    scratch = folder / "tmp"
    scratch.mkdir()
    return scratch, {**os.environ, "TMPDIR": str(scratch)}


def _run(
    argv: Sequence[str],
    cwd: Path,
    netns: Netns | None,
    env: Mapping[str, str] | None,
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        netns(argv) if netns else argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else dict(env),
        preexec_fn=terminal_signals,
    )
