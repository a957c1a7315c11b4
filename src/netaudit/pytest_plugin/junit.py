"""Violations recorded in pytest's JUnit XML (``--junitxml``) on their test cases.

The calls of a test are known only once the trace has been read, at the session's finish,
but junitxml builds each test case's element when the test's teardown is reported, and writes
its file in its own ``pytest_sessionfinish``. So: the Driver judges before junitxml writes
(see Driver.pytest_sessionfinish_ends_the_last_test); a Cases object notes each test case's
reporter at its teardown, just before junitxml seals it; and at the finish the violations are
added to those test cases: through the reporter's own API (``add_property``, ``append``, as
``record_property`` does) while a case is open, or to the element it was sealed into.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any

import pytest
from _pytest.junitxml import LogXML, xml_key

from ..model import Destination
from ..render.text import IN_JSON, MAX_PER_TEST, evidence_line, violation_line

#: The property each violation becomes, one per (test, destination).
PROPERTY = "netaudit_violation"


def log_xml(config: pytest.Config) -> LogXML | None:
    """junitxml's writer, when --junitxml is given (and not in an xdist worker)."""
    return config.stash.get(xml_key, None)


class Cases:
    """Registered next to junitxml in the process that writes the file."""

    def __init__(self, xml: LogXML) -> None:
        self.xml = xml
        self.reporters: list[tuple[str, Any]] = []

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Before junitxml's own hook seals the case at its teardown."""
        if report.when != "teardown":
            return
        worker = getattr(report, "node", None)
        for (nodeid, node), reporter in self.xml.node_reporters.items():
            if node is worker and str(nodeid) == report.nodeid:
                self.reporters.append((report.nodeid, reporter))

    def record(self, violations: Iterable[Destination], failures: bool) -> None:
        """A property on each test case for each of its violations (at most MAX_PER_TEST,
        then one that counts the rest) and, with ``failures``, one failure entry on a test
        case that has no failure or error yet."""
        by_test: dict[str, tuple[list[Destination], list[int]]] = {}
        for d in violations:
            listed, seen = by_test.setdefault(d.test, ([], [0]))
            seen[0] += 1
            if len(listed) < MAX_PER_TEST:
                listed.append(d)
        for nodeid, reporter in self.reporters:
            if nodeid in by_test:
                listed, (count,) = by_test[nodeid]
                self._add(reporter, listed, count, failures)

    def _add(self, reporter: Any, found: list[Destination], count: int, failures: bool) -> None:
        if failures:
            failures = self._one_more_failure(reporter)
        values = [f"{violation_line(d)}; {evidence_line(d)}" for d in found]
        if count > len(found):
            values.append(f"and {count - len(found)} more; {IN_JSON}")
        failure = _failure(found, count) if failures else None
        if hasattr(reporter, "properties"):  # still open: junitxml's own API
            for value in values:
                reporter.add_property(PROPERTY, value)
            if failure is not None:
                reporter.append(failure)  # counted in the suite's failures by junitxml
            return
        case: ET.Element = reporter.to_xml()  # sealed: the element junitxml will write
        properties = case.find("properties")
        if properties is None:
            properties = ET.Element("properties")
            case.insert(0, properties)
        for value in values:
            properties.append(ET.Element("property", name=PROPERTY, value=value))
        if failure is not None:
            case.append(failure)
            self.xml.add_stats("failure")

    def _one_more_failure(self, reporter: Any) -> bool:
        """Whether the case takes a failure entry (not when it failed or errored already).

        The case was counted once already (passed, say): junitxml's own count of cases with
        two outcomes keeps the suite's ``tests`` right.
        """
        nodes = reporter.nodes if hasattr(reporter, "nodes") else list(reporter.to_xml())
        if any(node.tag in ("failure", "error") for node in nodes):
            return False
        self.xml.cnt_double_fail_tests += 1
        return True


def _failure(found: list[Destination], count: int) -> ET.Element:
    noun = "destination" if count == 1 else "destinations"
    node = ET.Element("failure", message=f"netaudit: {count} {noun} not allowed")
    listed = [f"{violation_line(d)}\n  {evidence_line(d)}" for d in found]
    if count > len(found):
        listed.append(f"and {count - len(found)} more; {IN_JSON}")
    node.text = "\n".join(listed)
    return node
