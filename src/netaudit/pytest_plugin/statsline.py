"""netaudit's verdict in pytest's own last line, where pytest users look first:
``6 passed, 2 netaudit violations in 0.61s``, in red, also under ``-q``.

pytest builds that line with ``TerminalReporter.build_summary_stats_line`` (its parts and their
colour), after every ``pytest_sessionfinish``; its stats keys cannot say "red" for a kind of
their own (an unknown key is yellow), so the reporter's method is wrapped, once, with ours
added to what it returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..outcome import Outcome

#: Markup of netaudit's parts, as pytest marks "failed".
_RED = {"red": True, "bold": True}


def parts(outcome: Outcome | None) -> list[str]:
    """``2 netaudit violations``, ``netaudit audit incomplete``: what the line gains;
    ``outcome`` None when the audit could not be had at all."""
    from ..outcome import Kind

    if outcome is None:
        return ["netaudit audit incomplete"]
    found = []
    violations = len(outcome.result.violations)
    if violations:
        found.append(f"{violations} netaudit violation{'' if violations == 1 else 's'}")
    if outcome.kind is Kind.INCOMPLETE:
        found.append("netaudit audit incomplete")
    return found


def add(config: pytest.Config, added: list[str]) -> None:
    """From pytest_sessionfinish: pytest's last line, written after it, says ``added`` too."""
    reporter: Any = config.pluginmanager.get_plugin("terminalreporter")
    build = getattr(reporter, "build_summary_stats_line", None)
    if not added or build is None:
        return

    def with_netaudit() -> tuple[list[tuple[str, dict[str, bool]]], str]:
        found, _ = build()
        return [*found, *((part, dict(_RED)) for part in added)], "red"

    reporter.build_summary_stats_line = with_netaudit
