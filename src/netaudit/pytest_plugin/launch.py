"""Starting the traced session: this pytest process becomes the supervisor and runs the same
pytest command again, as a child, under strace.

It happens in ``pytest_load_initial_conftests``, before any conftest.py is imported, so that
no project code runs untraced here; the child does all the work and the reporting, and this
process returns the child's status (adjusted only for what the child could not see).
A host program that called ``pytest.main()`` gets that status back; nothing is exec'd.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

import pytest

from .. import markers
from ..audit import judge
from ..errors import AllowlistError, NetauditError, TracerUnavailable
from ..model import AuditResult
from ..policy import policies
from ..render import text
from ..rules import Allowlist
from ..settings import Settings
from ..supervisor import Supervisor
from ..trace import find_tracer
from .status import INTERNAL_ERROR, TESTS_FAILED, USAGE_ERROR, worse

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


def supervise(config: pytest.Config, settings: Settings, allowlist: Allowlist) -> int:
    """Runs the session under strace; returns the status the user should see."""
    try:
        tracer = find_tracer()
    except TracerUnavailable as err:
        raise pytest.UsageError(f"netaudit cannot trace this session: {err}") from err
    for warning in tracer.warnings:
        print(f"netaudit: warning: {warning}", file=sys.stderr)
    plugins = config.invocation_params.plugins or ()
    objects = [p for p in plugins if not isinstance(p, str)]
    if objects:
        print(
            "netaudit: warning: plugins passed as objects to pytest.main() cannot be carried "
            "into the traced session; pass them with -p NAME or from a conftest.py",
            file=sys.stderr,
        )
    supervisor = Supervisor(
        tracer, markers.new_run_id(), names=settings.names, io_uring=settings.io_uring,
        keep_trace=settings.keep_trace,
    )  # fmt: skip
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
    try:
        status = supervisor.run(
            command,
            env=supervisor.environment(os.environ),
            cwd=str(config.invocation_params.dir),
        )
    except NetauditError as err:
        _say(f"netaudit: error: {err}")
        return INTERNAL_ERROR
    return _after(supervisor, settings, allowlist, status)


def _after(supervisor: Supervisor, settings: Settings, allowlist: Allowlist, status: int) -> int:
    """What the child's own report could not cover: calls made after it asked for its
    report, or everything when it never asked (it crashed, or was killed)."""
    traced = supervisor.traced
    if traced.leftover_pids:
        pids = ", ".join(str(pid) for pid in traced.leftover_pids)
        _say(f"netaudit: the session left processes running; they were ended: {pids}")
    audit, whole = supervisor.leftovers()
    try:
        tests = policies(audit.policies, dict(audit.locations))
    except AllowlistError:  # the session refused it already, as a usage error
        tests = {}
    result = AuditResult(judge(audit.destinations, allowlist, tests), audit.findings, audit.stats)
    if whole and status == USAGE_ERROR and result.clean and not audit.problem:
        return status  # pytest refused its arguments, and said so: nothing ran to report on
    if whole:
        how = "ended"
        if status > 128 and traced.interrupted is None:
            with contextlib.suppress(ValueError):
                how = f"was killed by {signal.Signals(status - 128).name}"
        _say(f"netaudit: the session {how} before it could report; the audit of what it ran:")
        if not result.stats.looks_like_strace:
            _say("netaudit: audit incomplete: strace wrote no trace")
            return worse(status, INTERNAL_ERROR)
    elif result.clean and not audit.problem:
        return status
    elif not result.clean:
        _say("netaudit: calls made after the session's own report:")
    if audit.problem:
        _say(f"netaudit: audit incomplete: {audit.problem}")
    _say(text.report(result, settings.verbose, dict(audit.locations)))
    if result.findings or audit.problem:
        return worse(status, INTERNAL_ERROR)
    return worse(status, TESTS_FAILED) if result.violations else status


def _say(message: str) -> None:
    print(message, flush=True)


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
