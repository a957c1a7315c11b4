"""One error hierarchy, and the exit statuses it maps to.

Each error carries its exit status; the command line is the one place that turns errors into
messages and statuses. The statuses are pytest's own numbers for the same outcomes, so that
``netaudit`` and ``pytest --netaudit`` read alike: 1 for violations (pytest: tests failed), 3
for an incomplete audit (pytest: internal error), 4 for bad usage or input (pytest: usage
error). The whole table is in docs/cli.md.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """netaudit's own exit statuses, for every command and the pytest plugin."""

    #: Clean: every call allowed, the allowlist valid, nothing undeclared.
    OK = 0
    #: Violations: a call no rule allows (triage: undeclared destinations).
    VIOLATIONS = 1
    #: The audit could not be completed (a hazard seen, strace died, the trace unreadable).
    INCOMPLETE = 3
    #: Bad usage or input, found before anything was judged: a wrong option, an invalid
    #: allowlist or setting, an unreadable log or report, strace unable to trace here.
    USAGE = 4


EXIT_VIOLATIONS = ExitCode.VIOLATIONS
EXIT_INCOMPLETE = ExitCode.INCOMPLETE
EXIT_USAGE = ExitCode.USAGE


class NetauditError(Exception):
    """Base of every error netaudit reports to a user instead of a traceback."""

    exit_code: int = ExitCode.INCOMPLETE


class ConfigError(NetauditError):
    """A setting is wrong; ``path`` and ``line`` say where, when known."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        self.message = message
        self.path = path
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line else f"{self.path}: "
        return f"{where}{self.message}"

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message, self.path, self.line))


class AllowlistError(ConfigError):
    """The allowlist file cannot be loaded as written."""


class InputError(NetauditError):
    """A file named on the command line (a log, a report) cannot be read as what it should be."""

    exit_code = ExitCode.USAGE


class TraceError(NetauditError):
    """The audit could not be completed: the trace is missing, cut short or unreadable."""


class TracerUnavailable(TraceError):
    """strace cannot run here; the message says what to install or change. Nothing ran."""

    exit_code = ExitCode.USAGE


class CommandError(NetauditError):
    """The command to audit cannot be run; the exit codes are a shell's (127, 126)."""

    def __init__(self, message: str, exit_code: int = 127) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.exit_code))
