"""Marking tests: where each test of this process begins, in the trace itself.

A marker is a ``connect()`` to an abstract Unix address nobody listens on (markers.py): one
traced call, two ptrace stops, and its line lands in strace's single ordered stream between the
calls it separates. One marker per test: the next test's BEGIN (or the END at the session's
finish) ends a test, and nothing but pytest's own loop runs between two tests.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Generator

import pytest

from .. import markers
from ..markers import MarkVerb
from . import marks
from .link import Link
from .where import WhereRecorder


class Boundaries:
    """Registered in each traced pytest process that runs tests (the session, xdist workers)."""

    def __init__(self, link: Link, where: WhereRecorder, strace_cpu: int | None) -> None:
        self.link = link
        self.where = where
        self.role = link.role
        #: The CPU strace runs on, where a marker's two stops are cheapest (see _near_strace).
        self.strace_cpu = None if self.role.worker else strace_cpu
        self.policies: dict[str, dict[str, object] | None] = {}
        self.tests: dict[str, int] = {}
        self.current = -1
        self._running: tuple[str, object] = ("", None)
        self._socket: socket.socket | None = None
        self._identity = (0, 0)
        self.mark(MarkVerb.START)

    # -- test boundaries ----------------------------------------------------------------

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, object, object]:
        test = self.index(item)
        self.current = test
        self._running = (item.nodeid, getattr(item, "obj", None))
        self.mark(MarkVerb.BEGIN, test)
        try:
            return (yield)
        finally:
            self.current = -1

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest
    ) -> Generator[None, object, object]:
        """A fixture wider than a test belongs to the session, its set-up and its tear-down
        alike, even though both run inside some test's protocol."""
        if fixturedef.scope == "function" or self.current < 0:
            return (yield)
        fixturedef.addfinalizer(self._resume)  # finalizers run last-in, first-out
        self.mark(MarkVerb.END)
        try:
            return (yield)
        finally:
            self._resume()
            fixturedef.addfinalizer(self._pause)

    def _pause(self) -> None:
        if self.current >= 0:
            self.mark(MarkVerb.END)

    def _resume(self) -> None:
        if self.current >= 0:
            self.mark(MarkVerb.BEGIN, self.current)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """What other plugins do at the session's finish belongs to the session."""
        self.mark(MarkVerb.END)
        self.link.flush()  # the rest of the table, at once

    # -- the table of tests -------------------------------------------------------------

    def index(self, item: pytest.Item, *, gathering: bool = False) -> int:
        test = self.tests.get(item.nodeid)
        if test is None:
            test = self.tests[item.nodeid] = len(self.tests)
            path, line, _ = item.location
            where = path if line is None else f"{path}:{line + 1}"
            self.link.table(test, item.nodeid, where, self.policy(item), gathering=gathering)
        return test

    def policy(self, item: pytest.Item) -> dict[str, object] | None:
        if item.nodeid not in self.policies:
            self.policies[item.nodeid] = marks.item_policy(item)
        return self.policies[item.nodeid]

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Every test's markers are checked before any test runs: a mistake is a usage error."""
        for item in items:
            self.policy(item)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """The table of the tests that will run, at once: a test then pays its marker only."""
        for item in session.items:
            self.index(item, gathering=True)
        self.link.flush()

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(
        self, collector: pytest.Collector
    ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
        """In an xdist worker, a usage error would crash the worker: there a marker's mistake
        is a collection error instead, which xdist reports and which stops the session."""
        report = yield
        if not self.role.worker or not report.passed:
            return report
        for node in report.result:
            if isinstance(node, pytest.Item):
                try:
                    self.policy(node)
                except pytest.UsageError as err:
                    return pytest.CollectReport(
                        collector.nodeid, "failed", str(err), [], sections=report.sections
                    )
        return report

    # -- markers ------------------------------------------------------------------------

    def mark(self, verb: MarkVerb, test: int = -1) -> None:
        if verb is MarkVerb.BEGIN:
            self.where.begin(*self._running)
        else:
            self.where.end()
        address = markers.address(self.role.run, verb, test, self.role.worker)
        cpus = self._near_strace()
        try:
            self._marker().connect_ex(address)
        finally:
            if cpus is not None:
                os.sched_setaffinity(0, cpus)

    def _marker(self) -> socket.socket:
        """One socket for every marker (socket() and close() would cost more than the mark);
        a new one whenever its number no longer names it (a test closed it, and perhaps
        opened a file of its own there), so a marker never goes out on a test's socket."""
        sock = self._socket
        if sock is not None and sock.fileno() >= 0:
            try:
                st = os.fstat(sock.fileno())
                if (st.st_dev, st.st_ino) == self._identity:
                    return sock
            except OSError:
                pass
            sock.detach()  # the number is not ours any more: never close it
        sock = self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        st = os.fstat(sock.fileno())
        self._identity = (st.st_dev, st.st_ino)
        return sock

    def _near_strace(self) -> set[int] | None:
        """Moves this thread to strace's CPU for the marker, and returns its CPUs to go back
        to: strace then wakes on the CPU it runs on, which is 5-10x cheaper in a VM."""
        cpu = self.strace_cpu
        if cpu is None:
            return None
        try:
            cpus = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {cpu})
        except OSError:
            return None
        return cpus

    def close(self) -> None:
        if self._socket is not None:
            try:
                st = os.fstat(self._socket.fileno())
                if (st.st_dev, st.st_ino) == self._identity:
                    self._socket.close()
                    return
            except OSError:
                pass
            self._socket.detach()
