"""The plugin inside the traced session: it marks where each test starts (and where the
session's own end begins), and at the end asks the supervisor for what the run did, judges it
and reports it.

One Driver per traced pytest process: the session itself, each xdist worker (which only
marks its tests; the controller reports), and any ``pytest --netaudit`` run from a test,
which reports its own part of the trace.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import socket
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import pytest

from .. import markers, version
from ..audit import judge
from ..errors import AllowlistError
from ..model import AuditResult, MarkVerb, RunInfo
from ..policy import Wire, policies
from ..proctree import tracer_pid
from ..render import github, text
from ..render import json as json_report
from ..rules import Allowlist
from ..settings import Settings
from ..supervisor import ENV_SUPERVISOR, RunAudit, connect, read_audit
from ..trace import traced_syscalls
from . import junit, marks
from .status import INTERNAL_ERROR, TESTS_FAILED, worse
from .where import WhereRecorder
from .xdist import WHERE_KEY


@dataclass(frozen=True)
class Role:
    """Which run this process drives, and where its supervisor listens."""

    token: str
    run: str
    worker: str = ""

    @property
    def reports(self) -> bool:
        """xdist workers only mark; their controller reports for the whole run."""
        return not self.worker


class Driver:
    """Registered as a plugin in each traced pytest process that drives a run."""

    def __init__(
        self, config: pytest.Config, settings: Settings, allowlist: Allowlist, role: Role
    ) -> None:
        self.config = config
        self.settings = settings
        self.allowlist = allowlist
        self.role = role
        self.started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.result: AuditResult | None = None
        self.audit: RunAudit | None = None
        self.problem = ""
        self._tests: dict[str, int] = {}
        self._policies: dict[str, Wire | None] = {}
        self._finished = False
        #: The test cases of the --junitxml file this process writes, if it writes one.
        self.junit_cases: junit.Cases | None = None
        self._current = -1
        self._outbox: list[str] = []
        self._pending = 0
        self._sent = 0.0
        try:
            self._control = connect(role.token)
            self._control_id = _identity(self._control.fileno())
            self._hello = self._greet()
        except (OSError, ValueError) as err:
            raise pytest.UsageError(
                f"netaudit: {ENV_SUPERVISOR} is set, but no netaudit supervisor answers ({err}): "
                "unset it if it was left over, and run pytest --netaudit from outside any "
                "traced process"
            ) from err
        traced_by = tracer_pid(os.getpid())
        if traced_by != self._hello.get("strace_pid"):
            self.close()
            raise pytest.UsageError(
                "netaudit: this process is not traced by its session's strace "
                f"(TracerPid {traced_by}); the audit cannot run here"
            )
        self.where = WhereRecorder(config.rootpath)
        self._running: tuple[str, object] = ("", None)
        self._mark(MarkVerb.START)

    def _greet(self) -> dict[str, Any]:
        self._send({"op": "hello", "run": self.role.run, "worker": self.role.worker,
                    "pid": os.getpid()})  # fmt: skip
        line = b""
        while not line.endswith(b"\n"):
            part = self._control.recv(4096)
            if not part:
                raise ValueError("the supervisor closed the connection")
            line += part
        hello: dict[str, Any] = json.loads(line)
        return hello

    def _send(self, message: dict[str, object], *, batch: bool = False) -> None:
        """A plain write(2), not send(2): sendto is traced, and each would cost a stop.

        Batched messages (the table of tests) wait until 8 KiB or 50 ms have gathered; the
        supervisor needs them only to name tests in the report.
        """
        self._outbox.append(json.dumps(message) + "\n")
        self._pending += len(self._outbox[-1])
        now = time.monotonic()
        if batch and self._pending < 8192 and now - self._sent < 0.05:
            return
        data = "".join(self._outbox).encode()
        self._outbox.clear()
        self._pending, self._sent = 0, now
        fd = self._control.fileno()
        if _identity(fd) != self._control_id:
            # A test closed it (os.closerange) and the number may name a file of its own now.
            raise ConnectionError("a test closed the connection to the supervisor")
        while data:
            data = data[os.write(fd, data) :]

    def _mark(self, verb: MarkVerb, test: int = -1) -> None:
        """A fresh socket each time (socket() and close() are not traced): nothing a test
        does to its descriptors can turn a marker into a call on one of the test's sockets."""
        if verb is MarkVerb.BEGIN:
            self.where.begin(*self._running)
        else:
            self.where.end()
        address = markers.address(self.role.run, verb, test, self.role.worker)
        cpus = self._near_strace()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as marker:
                marker.connect_ex(address)
        finally:
            if cpus is not None:
                os.sched_setaffinity(0, cpus)

    def _near_strace(self) -> set[int] | None:
        """Moves this thread to strace's CPU for the marker, and returns its CPUs to go back
        to: strace then wakes on the CPU it runs on, which is 5-10x cheaper in a VM."""
        cpu = self._hello.get("strace_cpu")
        if not isinstance(cpu, int) or self.role.worker:
            # xdist workers keep every CPU busy: moving to a busy one costs far more.
            return None
        try:
            cpus = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {cpu})
        except OSError:
            return None
        return cpus

    def close(self) -> None:
        where = getattr(self, "where", None)  # absent when __init__ refused to go on
        if where is not None:
            where.close()
        if self._outbox:
            with contextlib.suppress(OSError):
                self._send({"op": "bye"})
        self._control.close()

    # -- test boundaries ----------------------------------------------------------------

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """junitxml's writer exists once every plugin is configured."""
        xml = junit.log_xml(self.config) if self.role.reports else None
        if xml is not None:
            self.junit_cases = junit.Cases(xml)
            self.config.pluginmanager.register(self.junit_cases, "netaudit-junit")

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, object, object]:
        # One marker per test: the next BEGIN (or the END at the session's finish) ends it,
        # and nothing but pytest's own loop runs between two tests.
        test = self._index(item)
        self._current = test
        self._running = (item.nodeid, getattr(item, "obj", None))
        self._mark(MarkVerb.BEGIN, test)
        try:
            return (yield)
        finally:
            self._current = -1

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest
    ) -> Generator[None, object, object]:
        """A fixture wider than a test belongs to the session, its set-up and its tear-down
        alike, even though both run inside some test's protocol."""
        if fixturedef.scope == "function" or self._current < 0:
            return (yield)
        fixturedef.addfinalizer(self._resume)  # finalizers run last-in, first-out
        self._mark(MarkVerb.END)
        try:
            return (yield)
        finally:
            self._resume()
            fixturedef.addfinalizer(self._pause)

    def _pause(self) -> None:
        if self._current >= 0:
            self._mark(MarkVerb.END)

    def _resume(self) -> None:
        if self._current >= 0:
            self._mark(MarkVerb.BEGIN, self._current)

    def _index(self, item: pytest.Item) -> int:
        test = self._tests.get(item.nodeid)
        if test is None:
            test = self._tests[item.nodeid] = len(self._tests)
            path, line, _ = item.location
            where = path if line is None else f"{path}:{line + 1}"
            message = {"op": "test", "run": self.role.run, "worker": self.role.worker,
                       "test": test, "nodeid": item.nodeid, "location": where}  # fmt: skip
            policy = self._policy(item)
            if policy is not None:
                message["policy"] = policy
            # A lost connection shows at the end, when the report cannot be asked for.
            with contextlib.suppress(OSError):
                self._send(message, batch=test > 0)
        return test

    def _policy(self, item: pytest.Item) -> Wire | None:
        if item.nodeid not in self._policies:
            self._policies[item.nodeid] = marks.item_policy(item)
        return self._policies[item.nodeid]

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Every test's markers are checked before any test runs: a mistake is a usage error."""
        for item in items:
            self._policy(item)

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
                    self._policy(node)
                except pytest.UsageError as err:
                    return pytest.CollectReport(
                        collector.nodeid, "failed", str(err), [], sections=report.sections
                    )
        return report

    # -- the report ---------------------------------------------------------------------

    def pytest_report_header(self) -> list[str]:
        mode = "seccomp-bpf" if self._hello.get("seccomp_bpf") else "plain ptrace (slower)"
        mode += ", DNS names" if self.settings.names else ""
        unnamed = self.allowlist.unnamed_hosts(self.settings.names)
        return [
            f"netaudit: auditing network egress; allowlist: {self.settings.allowlist.describe()}",
            f"netaudit: strace {self._hello.get('strace_version')} "
            f"({self._hello.get('strace')}, {mode})",
        ] + ([f"netaudit: warning: {unnamed}"] if unnamed else [])

    @pytest.hookimpl(tryfirst=True, specname="pytest_sessionfinish")
    def pytest_sessionfinish_ends_the_last_test(self, session: pytest.Session) -> None:
        """What other plugins do at the session's finish belongs to the session.

        With --junitxml, the run is judged here, before junitxml writes its file, so that the
        violations can be recorded in it; what other plugins then do is reported by the
        supervisor as calls made after the session's own report.
        """
        self._mark(MarkVerb.END)
        if self._outbox:
            with contextlib.suppress(OSError):
                self._send({"op": "bye"})  # the rest of the table, at once
        if self.junit_cases is not None:
            self._finish(session)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.role.reports:
            self.where.close()
            workeroutput = getattr(self.config, "workeroutput", None)
            if isinstance(workeroutput, dict):
                workeroutput[WHERE_KEY] = self.where.export()  # xdist sends it after this hook
            return
        if not self._finished:
            self._finish(session)

    def _finish(self, session: pytest.Session) -> None:
        self._finished = True
        self.where.close()
        self._mark(MarkVerb.FINISH)
        try:
            self._send({"op": "finish", "run": self.role.run})
            audit = self.audit = read_audit(self._control)
        except (OSError, ValueError, EOFError) as err:
            self.problem = f"the supervisor did not answer ({err})"
            return self._fail(session, INTERNAL_ERROR)
        self.problem = audit.problem
        try:
            tests = policies(audit.policies, dict(audit.locations))
        except AllowlistError as err:  # checked where the test ran: only a bug gets here
            self.problem = f"a test's netaudit marker cannot be read: {err}"
            tests = {}
        destinations = self.where.attach(audit.destinations)
        result = self.result = AuditResult(
            judge(destinations, self.allowlist, tests), audit.findings, audit.stats
        )
        if result.findings or self.problem:
            self._fail(session, INTERNAL_ERROR)
        elif result.violations:
            self._fail(session, TESTS_FAILED)
        if self.junit_cases is not None:
            self.junit_cases.record(result.violations, self.settings.junit_failures)
        if self.settings.report is not None:
            self._write_report(result, int(session.exitstatus))
        if github.enabled(os.environ):
            self._step_summary(result)

    def _github_locations(self) -> dict[str, str]:
        """Test locations relative to the checkout ($GITHUB_WORKSPACE), as annotations need."""
        locations = dict(self.audit.locations) if self.audit is not None else {}
        workspace = os.environ.get("GITHUB_WORKSPACE")
        if not workspace:
            return locations
        root = self.config.rootpath
        return {test: os.path.relpath(root / where, workspace) for test, where in locations.items()}

    def _step_summary(self, result: AuditResult) -> None:
        path = os.environ.get(github.ENV_SUMMARY)
        if not path:
            return
        try:
            with open(path, "a", encoding="utf-8") as summary:
                summary.write(github.summary(result, self._github_locations()))
        except OSError as err:
            self.problem = self.problem or f"cannot write {path}: {err.strerror}"

    def _fail(self, session: pytest.Session, failure: int) -> None:
        session.exitstatus = worse(int(session.exitstatus), failure)

    def _write_report(self, result: AuditResult, status: int) -> None:
        assert self.settings.report is not None and self.audit is not None
        run = RunInfo(
            started=self.started,
            host=platform.node(),
            netaudit_version=version(),
            command=("pytest", *self.config.invocation_params.args),
            allowlist=_path(self.settings),
            strace_version=self._hello.get("strace_version"),
            syscalls=traced_syscalls(self.settings.names),
            exit_status=status,
        )
        try:
            with open(self.settings.report, "w", encoding="utf-8") as report:
                json_report.write_json(result, run, report, dict(self.audit.locations))
        except OSError as err:
            self.problem = f"cannot write the report {self.settings.report}: {err.strerror}"

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        tr, result = terminalreporter, self.result
        if self.problem:
            tr.write_line(f"netaudit: audit incomplete: {self.problem}", red=True, bold=True)
        if result is None:
            return
        locations = dict(self.audit.locations) if self.audit is not None else {}
        more = text.full_list(self.settings.report, "--netaudit-report")
        for finding in result.findings:
            tr.write_line(f"netaudit: {finding}", red=True, bold=True)
        if self.settings.verbose:
            tr.write_line("")
            for line in text.verbose_table(result.destinations, locations, more).splitlines():
                tr.write_line(line)
        tr.write_line("")
        block = text.violations_block(result, locations, more)
        for line in block.splitlines():
            header = line.startswith((text.BAR, "  netaudit:"))
            tr.write_line(line, red=bool(result.violations) and header, bold=header,
                          green=not result.violations)  # fmt: skip
        summary = text.by_destination(result.destinations, self.settings.verbose, more)
        if summary:
            tr.write_line("")
            for line in summary.splitlines():
                tr.write_line(line)
        if github.enabled(os.environ):
            for line in github.error_commands(result, self._github_locations()).splitlines():
                tr.write_line(line)
        if self.settings.suggest_rules and result.violations:
            from ..render.suggest import suggest_rules  # loads PyYAML, needed only here

            tr.write_line("")
            tr.write_line("netaudit: rules that would allow the violations above:")
            for line in suggest_rules(result.violations).splitlines():
                tr.write_line(line)


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _path(settings: Settings) -> str | None:
    path = settings.allowlist.path
    return None if path is None else str(path)
