"""Violations in pytest's JUnit XML (``--junitxml``), through pytest's public API only.

As each test ends, the process that ran it asks the supervisor what the test did so far and
judges it; each violation becomes a property of the test's teardown report
(``report.user_properties``), which junitxml writes on the test case as ``record_property``
would. With ``--netaudit-junit-failures`` the test's call phase also fails, with the violations
as its failure text, so the terminal, ``--lf`` and the JUnit file all name the test.

A call a test's daemon makes after the test ended is in the session's report, not on the
test case: the case was written when the test ended.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator
from typing import TYPE_CHECKING

import pytest

from .boundaries import Boundaries
from .link import Link

if TYPE_CHECKING:
    from ..rules import Allowlist

#: The property each violation becomes, one per (test, destination).
PROPERTY = "netaudit_violation"


def wanted(config: pytest.Config) -> bool:
    """Whether a JUnit file is written for this session (the controller writes it under
    xdist; its workers see the option too, and judge the tests they run)."""
    return bool(getattr(config.option, "xmlpath", None))


class Verdicts:
    """Registered beside Boundaries in each process that runs tests, when ``wanted``."""

    def __init__(
        self, link: Link, boundaries: Boundaries, allowlist: Allowlist, failures: bool
    ) -> None:
        self.link = link
        self.boundaries = boundaries
        self.allowlist = allowlist
        self.failures = failures

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if call.when == "call" and self.failures and report.passed:
            lines, count = self._violations(item)
            if lines:
                report.outcome = "failed"
                noun = "destination" if count == 1 else "destinations"
                report.longrepr = f"netaudit: {count} {noun} not allowed\n" + "\n".join(
                    f"  {line}" for line in lines
                )
        elif call.when == "teardown":
            for line in self._violations(item)[0]:
                report.user_properties.append((PROPERTY, line))
        return report

    def _violations(self, item: pytest.Item) -> tuple[list[str], int]:
        """The test's violations (at most MAX_PER_TEST, then a line that counts the rest),
        and how many there are."""
        from ..outcome import judge_run
        from ..render.text import IN_JSON, MAX_PER_TEST, evidence_line, violation_line

        test = self.boundaries.tests.get(item.nodeid)
        if test is None:
            return [], 0
        try:
            audit = self.link.ask(test)
        except (OSError, ValueError, EOFError):
            return [], 0  # the session's own report says the audit is incomplete
        violations = judge_run(audit, self.allowlist).result.violations
        listed = itertools.islice(violations, MAX_PER_TEST)
        lines = [f"{violation_line(d)}; {evidence_line(d)}" for d in listed]
        if len(violations) > MAX_PER_TEST:
            lines.append(f"and {len(violations) - MAX_PER_TEST} more; {IN_JSON}")
        return lines, len(violations)
