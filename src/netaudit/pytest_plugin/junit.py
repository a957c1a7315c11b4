"""Violations in pytest's JUnit XML (``--junitxml``), through pytest's public API only.

As each test ends, the process that ran it asks the supervisor what the test did so far and
judges it; each violation becomes a property of the test's teardown report
(``report.user_properties``), which junitxml writes on the test case as ``record_property``
would. With ``--netaudit-junit-failures`` the test's call phase also fails, with the violations
as its failure text, so the terminal, ``--lf`` and the JUnit file all name the test.

What the test did that made the audit incomplete (io_uring used with ``io_uring = "report"``,
an untraced child...) is recorded too, as a property and as an error of the test's teardown,
so that a dashboard that reads the file cannot show the run green.

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
    from ..outcome import Outcome
    from ..rules import Allowlist

#: The property each violation becomes, one per (test, destination).
PROPERTY = "netaudit_violation"
#: The property each kind of finding that made the audit incomplete becomes.
INCOMPLETE = "netaudit_incomplete"


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
        self.nameservers: frozenset[str] | None = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if call.when == "call" and self.failures and report.passed:
            lines, count = _violations(self._outcome(item))
            if lines:
                report.outcome = "failed"
                noun = "destination" if count == 1 else "destinations"
                report.longrepr = f"netaudit: {count} {noun} not allowed\n" + "\n".join(
                    f"  {line}" for line in lines
                )
        elif call.when == "teardown":
            outcome = self._outcome(item)
            for line in _violations(outcome)[0]:
                report.user_properties.append((PROPERTY, line))
            from ..render.text import findings_lines

            incomplete = findings_lines(outcome.result.findings) if outcome else []
            for line in incomplete:
                report.user_properties.append((INCOMPLETE, line))
            if incomplete and report.passed:
                # An error of the test's teardown: a JUnit dashboard cannot show it green.
                report.outcome = "failed"
                report.longrepr = "\n".join(incomplete)
        return report

    def _outcome(self, item: pytest.Item) -> Outcome | None:
        from .. import resolvers
        from ..outcome import judge_run

        test = self.boundaries.tests.get(item.nodeid)
        if test is None:
            return None
        try:
            audit = self.link.ask(test)
        except (OSError, ValueError, EOFError):
            return None  # the session's own report says the audit is incomplete
        if self.nameservers is None:
            self.nameservers = resolvers.nameservers()
        servers = self.nameservers
        return judge_run(audit, self.allowlist, lambda found: resolvers.mark(found, servers))


def _violations(outcome: Outcome | None) -> tuple[list[str], int]:
    """The test's violations (at most MAX_PER_TEST, then a line that counts the rest), and
    how many there are."""
    if outcome is None:
        return [], 0
    from ..render.text import IN_JSON, MAX_PER_TEST, evidence_line, violation_line

    violations = outcome.result.violations
    lines = [
        f"{violation_line(d)}; {evidence_line(d)}"
        for d in itertools.islice(violations, MAX_PER_TEST)
    ]
    if len(violations) > MAX_PER_TEST:
        lines.append(f"and {len(violations) - MAX_PER_TEST} more; {IN_JSON}")
    return lines, len(violations)
