"""Audit the network egress of a command or a test suite, traced by strace."""

from __future__ import annotations

import functools

__all__ = ["__version__", "version"]


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
