"""Live verdicts: each test judged as it ends, through pytest's public API only.

As each test ends, the process that ran it asks the supervisor what the test did so far and
judges it. With ``--junitxml``, each violation becomes a property of the test's teardown
report (``report.user_properties``), which junitxml writes on the test case as
``record_property`` would. With ``--netaudit-fail-tests`` (implied by block mode, and by
``--netaudit-junit-failures`` with ``--junitxml``) the test's call phase also fails, with the
violations as its failure text, so the terminal, ``-x``, ``--lf``, IDEs and the JUnit file all
name the test; a test that failed already gets them as a section of its report, and calls made
after the call phase (a teardown's) fail the teardown.

A call a test's daemon makes after the test ended is in the session's report, not on the
test case: the case was written when the test ended.
"""

from __future__ import annotations

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
        #: The lines each test was failed for already, by nodeid (until its teardown).
        self._told: dict[str, set[str]] = {}

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if call.when == "call" and self.failures:
            lines = self._violations(item)
            self._told[item.nodeid] = set(lines)
            if lines and report.passed:
                report.outcome = "failed"
                report.longrepr = _failure(lines)
            elif lines:  # a test that failed of itself keeps its failure, and shows these too
                report.sections.append(("netaudit", _failure(lines)))
        elif call.when == "teardown" and (self.properties or self.failures):
            lines = self._violations(item)
            if self.properties:
                report.user_properties += [(PROPERTY, line) for line in lines]
            told = self._told.pop(item.nodeid, set())
            later = [line for line in lines if line not in told]
            if self.failures and later and report.passed:  # made after the call phase
                report.outcome = "failed"
                report.longrepr = _failure(later)
        return report

    def _violations(self, item: pytest.Item) -> list[str]:
        from ..outcome import judge_run
        from ..render.text import evidence_line, violation_line

        test = self.boundaries.tests.get(item.nodeid)
        if test is None:
            return []
        try:
            audit = self.link.ask(test)
        except (OSError, ValueError, EOFError):
            return []  # the session's own report says the audit is incomplete
        outcome = judge_run(audit, self.allowlist)
        return [f"{violation_line(d)}; {evidence_line(d)}" for d in outcome.result.violations]


def _failure(lines: list[str]) -> str:
    noun = "destination" if len(lines) == 1 else "destinations"
    return f"netaudit: {len(lines)} {noun} not allowed\n" + "\n".join(f"  {line}" for line in lines)
