"""The plugin's own start, where the start hook (netaudit_start) did not act: a
``pytest.main()`` host, an environment without the .pth file, or a command line the hook could
not read for sure.

The pytest process becomes the supervisor from its first hook (``pytest_load_initial_conftests``,
before any conftest.py is imported): it runs the same pytest command again as a child, under
strace, and returns the child's status. A host program that called ``pytest.main()`` gets that
status back; nothing is exec'd. Then every other plugin is unregistered from this process, so
that none of their hooks runs here after the traced session has run them: the session is the
only place where plugins (pytest-cov, junitxml, the cache) act.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence

import pytest

from ..launch import run_session
from ..settings import Settings

#: The traced child: the same interpreter and sys.path as this process, then pytest's own
#: command-line entry point, with this process's arguments.
_LAUNCHER = """\
import json, sys
sys.path[:] = json.loads(sys.argv[1])
sys.argv[:] = sys.argv[2:]
try:
    from _pytest.config import _console_main as main
except ImportError:
    from pytest import console_main as main
raise SystemExit(main())
"""


def supervise(config: pytest.Config, settings: Settings, lenient: str = "") -> int | None:
    """Runs the session under strace; returns the status the user should see, or None when
    this process is to run it unaudited (strace cannot trace here, and ``lenient`` says why
    that is allowed: launch.run_session)."""
    plugins = config.invocation_params.plugins or ()
    if any(not isinstance(p, str) for p in plugins):
        print(
            "netaudit: warning: plugins passed as objects to pytest.main() cannot be carried "
            "into the traced session; pass them with -p NAME or from a conftest.py",
            file=sys.stderr,
        )
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "pytest"
    command = [
        sys.executable,
        *_interpreter_flags(),
        "-c",
        _LAUNCHER,
        json.dumps(sys.path),
        argv0,
        *_plugin_args(plugins),
        *config.invocation_params.args,
    ]
    block = None
    if settings.block:
        from ..supervisor import BlockPlan

        path = settings.allowlist.path
        block = BlockPlan(settings.block_errno, None if path is None else str(path))
    return run_session(
        command,
        cwd=str(config.invocation_params.dir),
        env=os.environ,
        names=settings.names,
        io_uring=settings.io_uring,
        lenient=lenient,
        keep_trace=settings.keep_trace,
        block=block,
    )


def stand_down(
    config: pytest.Config, namespace: argparse.Namespace, args: list[str], keep: object
) -> None:
    """After supervising: nothing of the session may happen again in this process.

    The hook call this runs in goes on to the other plugins' implementations of it (pluggy
    fixed the list when the call began): they see no option given (pytest's defaults, which
    start nothing: no coverage, no capture of a log) and no conftest to import. Every plugin
    but ours is then unregistered, so no later hook reaches one.
    """
    for name, default in vars(config.option).items():
        setattr(namespace, name, default)
    namespace.noconftest = True
    args[:] = [str(config.invocation_params.dir)]
    manager = config.pluginmanager
    for plugin in list(manager.get_plugins()):
        if plugin is not keep:
            manager.unregister(plugin)


def _interpreter_flags() -> list[str]:
    """-W, -X, -O and the like, as this interpreter was started with."""
    flags: list[str] = getattr(subprocess, "_args_from_interpreter_flags")()  # noqa: B009
    return flags


def _plugin_args(plugins: Sequence[object]) -> list[str]:
    """Plugins given to pytest.main() by module name travel as -p NAME."""
    args: list[str] = []
    for plugin in plugins:
        if isinstance(plugin, str):
            args += ["-p", plugin]
    return args
