"""One error hierarchy. Each error carries the exit code ``netaudit run`` uses for it.

The command line is the one place that turns these into messages and exit codes; the exit
codes are documented in docs/cli.md.
"""

from __future__ import annotations

#: `netaudit run`: the command succeeded but the allowlist was violated.
EXIT_VIOLATIONS = 100
#: The audit could not be completed (hazard seen, tracer died, log unreadable).
EXIT_INCOMPLETE = 101
#: strace cannot trace here (missing, ptrace not permitted, not Linux).
EXIT_NO_TRACER = 102
#: The allowlist or the settings are invalid.
EXIT_CONFIG = 103


class NetauditError(Exception):
    """Base of every error netaudit reports to a user instead of a traceback."""

    exit_code = EXIT_INCOMPLETE


class ConfigError(NetauditError):
    """A setting is wrong; ``path`` and ``line`` say where, when known."""

    exit_code = EXIT_CONFIG

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


class TraceError(NetauditError):
    """The audit could not be completed: the trace is missing, cut short or unreadable."""


class TracerUnavailable(TraceError):
    """strace cannot run here; the message says what to install or change."""

    exit_code = EXIT_NO_TRACER


class CommandError(NetauditError):
    """The command to audit cannot be run; the exit codes are a shell's (127, 126)."""

    def __init__(self, message: str, exit_code: int = 127) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.exit_code))
