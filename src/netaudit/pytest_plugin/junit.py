"""Live verdicts: each test judged as it ends, through pytest's public API only.

As each test ends, the process that ran it asks the supervisor what the test did so far and
judges it. With ``--junitxml``, each violation becomes a property of the test's teardown
report (``report.user_properties``), which junitxml writes on the test case as
``record_property`` would. With ``--netaudit-fail-tests`` (implied by block mode, and by
``--netaudit-junit-failures`` with ``--junitxml``) the test's call phase also fails, with the
violations as its failure text, so the terminal, ``-x``, ``--lf``, IDEs and the JUnit file all
name the test; a test that failed already gets them as a section of its report, and calls made
after the call phase (a teardown's) fail the teardown.

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
        self,
        link: Link,
        boundaries: Boundaries,
        allowlist: Allowlist,
        failures: bool,
        properties: bool = True,
    ) -> None:
        self.link = link
        self.boundaries = boundaries
        self.allowlist = allowlist
        self.failures = failures
        #: With --junitxml: each violation a property of its test case.
        self.properties = properties
        self.nameservers: frozenset[str] | None = None
        #: The lines each test was failed for already, by nodeid (until its teardown).
        self._told: dict[str, set[str]] = {}

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if call.when == "call" and self.failures:
            lines, count = _violations(self._outcome(item))
            self._told[item.nodeid] = set(lines)
            if lines and report.passed:
                report.outcome = "failed"
                report.longrepr = _failure(lines, count)
            elif lines:  # a test that failed of itself keeps its failure, and shows these too
                report.sections.append(("netaudit", _failure(lines, count)))
        elif call.when == "teardown":
            from ..render.text import findings_lines

            outcome = self._outcome(item)
            lines, _ = _violations(outcome)
            incomplete = findings_lines(outcome.result.findings) if outcome else []
            if self.properties:
                report.user_properties += [(PROPERTY, line) for line in lines]
                report.user_properties += [(INCOMPLETE, line) for line in incomplete]
            told = self._told.pop(item.nodeid, set())
            later = [line for line in lines if line not in told]
            if self.failures and later and report.passed:  # made after the call phase
                report.outcome = "failed"
                report.longrepr = _failure(later, len(later))
            elif incomplete and report.passed:
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


def _failure(lines: list[str], count: int) -> str:
    noun = "destination" if count == 1 else "destinations"
    return f"netaudit: {count} {noun} not allowed\n" + "\n".join(f"  {line}" for line in lines)
