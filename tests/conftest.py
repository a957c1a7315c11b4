"""Shared fixtures: a private network namespace, and the real strace.

Both skip where the machine cannot provide them, except under ``CI=true``, where a skip would
hide a gap in coverage: there they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from netaudit.errors import TracerUnavailable
from netaudit.trace import Tracer, find_tracer
from tests import fakedns
from tests import netns as netns_helper

pytest_plugins = ["pytester"]


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI=true: not skipping)", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="session")
def netns() -> netns_helper.Netns:
    """``netns(argv)`` -> argv prefixed to run in a private network namespace (only ``lo``).

    Wrap the whole traced command (strace or ``netaudit run`` included), never just the tracee.
    """
    reason = netns_helper.unavailable_reason()
    if reason:
        _missing(f"no private network namespace here: {reason}")
    return netns_helper.isolated


@pytest.fixture(scope="session")
def tracer() -> Tracer:
    """The real strace, after the pre-flight of a real run."""
    try:
        return find_tracer()
    except TracerUnavailable as exc:
        _missing(f"strace cannot trace here: {exc}")
        raise


@pytest.fixture
def fake_dns() -> Iterator[fakedns.FakeDns]:
    """``fake_dns.wrap(argv)`` -> argv run in a private network namespace whose resolver is a
    fake DNS server on 127.0.0.1:53 answering for ``fakedns.EXAMPLE_ZONE``."""
    reason = fakedns.unavailable_reason()
    if reason:
        _missing(f"no fake DNS server here: {reason}")
    dns = fakedns.FakeDns(fakedns.EXAMPLE_ZONE)
    try:
        yield dns
    finally:
        dns.close()


#: ``tiny_tmpfs(argv, folder)`` -> argv prefixed to run in a private mount namespace with a
#: 64 KiB tmpfs mounted on ``folder`` and TMPDIR pointing there (so netaudit's log goes there).
TinyTmpfs = Callable[[Sequence[str], Path], list[str]]


@pytest.fixture(scope="session")
def tiny_tmpfs() -> TinyTmpfs:
    """A full disk on demand: the mount is private to the command (``unshare -m``, as root),
    so nothing outside it sees the tmpfs, and it goes away with the command."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        _missing("a tiny tmpfs needs root and unshare (util-linux) for a private mount")
    script = 'mount -t tmpfs -o size=64k tmpfs "$1" && TMPDIR="$1" && export TMPDIR && shift && '
    script += 'exec "$@"'

    def wrap(argv: Sequence[str], folder: Path) -> list[str]:
        return [str(unshare), "-m", "/bin/sh", "-c", script, "tiny", str(folder), *argv]

    probe = tempfile.mkdtemp()
    try:
        argv = wrap(["df", "-k", probe], Path(probe))
        done = subprocess.run(argv, capture_output=True, text=True)
    finally:
        os.rmdir(probe)
    if done.returncode != 0 or "tmpfs" not in done.stdout:
        _missing(f"cannot mount a tiny tmpfs here: {done.stderr.strip() or done.stdout.strip()}")
    return wrap
