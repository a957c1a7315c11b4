"""The ``netaudit`` marker: per-test policy, read where the test runs (see netaudit.policy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..policy import Wire

MARKER = (
    "netaudit(allow=[...], strict=False): netaudit policy for this test: destinations it may "
    "also reach (allowlist rule dicts, or strings such as '10.0.0.5:5432', "
    "'AF_UNIX:/run/docker.sock'); strict=True switches the built-in rules off for it"
)


def register(config: pytest.Config) -> None:
    """Always, so that --strict-markers accepts the marker even when auditing is off; once,
    whichever of the plugin and always.py comes first."""
    if MARKER not in config.getini("markers"):
        config.addinivalue_line("markers", MARKER)


def item_policy(item: pytest.Item) -> Wire | None:
    """The test's markers (function, class, module), checked; a mistake is a usage error at
    the test's file and line."""
    markers = [(mark.args, mark.kwargs) for mark in item.iter_markers("netaudit")]
    if not markers:
        return None
    from ..errors import AllowlistError
    from ..policy import normalise

    path, line, _ = item.location
    try:
        return normalise(markers, path, None if line is None else line + 1)
    except AllowlistError as err:
        from .options import usage_error

        raise usage_error(f"{err} (in {item.nodeid})") from None
