"""Audit the network egress of a command or a test suite, traced by strace."""

from __future__ import annotations

import functools

__all__ = [
    "BLOCK_ERRNO_CHOICES",
    "ENV_RUN",
    "ENV_SUPERVISOR",
    "ENV_UNAUDITED",
    "HOW_TO_SKIP",
    "IO_URING_CHOICES",
    "IO_URING_DEFAULT",
    "__version__",
    "version",
]

#: Set in a traced session's environment: its supervisor's token (a secret: the control
#: socket's name), and the id of the run the supervisor started the session for. Here, where
#: the plugin can read them without importing anything else.
ENV_SUPERVISOR = "NETAUDIT_SUPERVISOR"
ENV_RUN = "NETAUDIT_RUN"
#: Set for a pytest that runs unaudited (strace cannot trace here, and only ``enabled = true``
#: asked for the audit), and its children: the warning has been given already.
ENV_UNAUDITED = "NETAUDIT_UNAUDITED"
#: What every error that stops an audited pytest session ends with: how to run it anyway.
HOW_TO_SKIP = "to run the tests without the audit, pass --no-netaudit"
#: What to do about io_uring, whose connects no syscall tracer sees (notes §f): make
#: ``io_uring_setup`` fail (programs fall back to sockets, as under Docker's default seccomp
#: profile), or report its use as an incomplete audit.
IO_URING_CHOICES = ("report", "deny")
#: How a call block mode refuses fails (``--netaudit-block-errno``): EPERM first, a
#: PermissionError that no retry loop spins on (ECONNREFUSED makes wait-for-port loops spin).
BLOCK_ERRNO_CHOICES = ("EPERM", "ECONNREFUSED", "EACCES", "ENETUNREACH")
IO_URING_DEFAULT = "deny"


@functools.cache
def version() -> str:
    """The installed version; looked up on demand, as importlib.metadata costs ~35 ms to load."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("netaudit")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
