"""Running a pytest session under strace, with a supervisor, and saying what the session's own
report could not: calls made after it, or everything when it never came.

Two callers: the start hook (``early``), which supervises before anything of pytest is
imported, and the plugin's fallback (``pytest_plugin.fallback``), which does so from its
first hook when the hook was not installed or stood aside. Neither imports pytest here: this
process is the supervisor, never a test session, and it prints on its own stdout and stderr.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from . import HOW_TO_SKIP, IO_URING_DEFAULT
from .errors import BlockUnavailable, NetauditError, TracerUnavailable
from .status import INTERNAL_ERROR, USAGE_ERROR

if TYPE_CHECKING:
    from .supervisor import BlockPlan, Supervisor


def run_session(
    command: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    names: bool = False,
    io_uring: str = IO_URING_DEFAULT,
    keep_trace: str | os.PathLike[str] | None = None,
    block: BlockPlan | None = None,
    expected: bool = True,
    lenient: str = "",
) -> int | None:
    """Runs the session under strace and returns the status the user should see.

    ``block``: the command runs under block mode's filter (supervisor.BlockPlan).
    ``expected``: the session was asked to audit itself, so one that never says so to the
    supervisor (its plugin was not loaded, say) has not been audited, and fails.

    ``lenient``: what asked for the audit, when only the project's ``enabled = true`` did,
    outside CI. Where strace cannot trace (macOS, no ptrace, no strace), the caller then runs
    the session unaudited (None), after one warning line, rather than lock every developer
    without strace out of the suite; ``--netaudit`` and ``CI=true`` still fail closed.
    """
    # Only what starting the session needs is imported before it starts; the rest (reading
    # the trace, judging) is imported by the supervisor's threads while the session starts.
    from . import markers
    from .supervisor import Supervisor
    from .trace import find_tracer

    try:
        tracer = find_tracer(probe=False)  # a strace that cannot trace fails before the run
        for warning in tracer.warnings:
            _say(f"netaudit: warning: {warning}", err=True)
        supervisor = Supervisor(
            tracer,
            markers.new_run_id(),
            names=names,
            io_uring=io_uring,
            keep_trace=keep_trace,
            block=block,
        )
        status = supervisor.run(command, env=supervisor.environment(env), cwd=cwd)
    except TracerUnavailable as err:  # worded as pytest words a usage error
        if lenient:
            _say(
                f"netaudit: warning: not auditing this run: {err} ({lenient} asks for the "
                "audit; with --netaudit or CI=true this would fail the run)",
                err=True,
            )
            return None
        _say(f"ERROR: netaudit cannot trace this session: {err}; {HOW_TO_SKIP}", err=True)
        return USAGE_ERROR
    except BlockUnavailable as err:
        _say(
            f"ERROR: netaudit cannot block in this session: {err}; to audit without "
            f"blocking, leave out --netaudit-block; {HOW_TO_SKIP}",
            err=True,
        )
        return USAGE_ERROR
    except NetauditError as err:
        _say(f"netaudit: error: {err}")
        return INTERNAL_ERROR
    for warning in (*supervisor.traced.warnings, *supervisor.warnings):
        _say(f"netaudit: warning: {warning}", err=True)
    return account(supervisor, status, expected=expected)


def account(supervisor: Supervisor, status: int, *, expected: bool = True) -> int:
    """What the session's own report could not cover: calls made after it asked for its
    report, or everything when it never asked (it crashed, or was killed)."""
    traced = supervisor.traced
    if traced.leftover_pids:
        pids = ", ".join(str(pid) for pid in traced.leftover_pids)
        _say(f"netaudit: the session left processes running; they were ended: {pids}")
    hello = supervisor.hello
    if hello is not None and not hello.audit:
        return status  # the session found nothing to audit (an opt-out, --collect-only...)
    audit, whole = supervisor.leftovers()
    if not whole and not (audit.destinations or audit.findings or audit.problem):
        return status  # the usual end: the session reported everything itself
    from . import resolvers
    from .errors import AllowlistError, ConfigError
    from .outcome import Kind, judge_run
    from .render import text
    from .settings import Settings
    from .status import with_outcome

    settings = Settings.from_wire(hello.settings if hello is not None else {})
    try:
        allowlist = settings.allowlist.load()
    except (AllowlistError, ConfigError):  # the session refused it already, as a usage error
        from .rules import DEFAULT

        allowlist = DEFAULT
    servers = resolvers.nameservers()
    outcome = judge_run(audit, allowlist, lambda found: resolvers.mark(found, servers))
    kind = outcome.kind
    if whole and status == USAGE_ERROR and outcome.kind is Kind.CLEAN:
        return status  # pytest refused its arguments, and said so: nothing ran to report on
    if whole:
        how = "ended"
        if status > 128 and traced.interrupted is None:
            with contextlib.suppress(ValueError):
                how = f"was killed by {signal.Signals(status - 128).name}"
        _say(f"netaudit: the session {how} before it could report; the audit of what it ran:")
        if hello is None and expected and status < 128 and traced.interrupted is None:
            _say(
                "netaudit: audit incomplete: the session never started its audit: pytest did "
                "not load netaudit's plugin (with PYTEST_DISABLE_PLUGIN_AUTOLOAD set, add "
                f"-p netaudit); {HOW_TO_SKIP}"
            )
            kind = Kind.INCOMPLETE
        if not outcome.result.stats.looks_like_strace:
            _say("netaudit: audit incomplete: strace wrote no trace")
            return with_outcome(status, Kind.INCOMPLETE)
    elif outcome.kind is Kind.CLEAN:
        return status
    elif outcome.result.violations:
        _say("netaudit: calls made after the session's own report:")
    if outcome.problem:
        _say(f"netaudit: audit incomplete: {outcome.problem}")
    _say(text.report(outcome.result, settings.verbose, dict(audit.locations)))
    return with_outcome(status, kind)


def _say(message: str, *, err: bool = False) -> None:
    print(message, file=sys.stderr if err else sys.stdout, flush=True)
