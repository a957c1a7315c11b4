"""The supervisor of a traced test session: it reads the trace while the session runs and
tells each run inside it what that run did.

The supervisor runs strace around a command (a pytest session) and, in threads of its own,
follows the log as strace writes it (parse -> attribute -> fold) and serves a control socket
(protocol.py). Each test run inside the traced tree (the session itself, its xdist workers,
and any ``pytest --netaudit`` a test starts) connects there, says which run it drives, sends
the table of its tests as they start, and at its end asks for its part of the trace. Because
the run puts a FINISH marker in the trace before it asks, and a traced process only goes on
once strace has written its line, the answer covers everything the run did up to that point.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from . import ENV_RUN, ENV_SUPERVISOR, markers
from .errors import TraceError
from .markers import SESSION, MarkVerb
from .trace import TracedRun, Tracer, has_hole, tampered

if TYPE_CHECKING:
    from .attribute import Attributed
    from .audit import Folder
    from .model import Destination, Finding, Mark
    from .parse import Parser
    from .protocol import Ask, Hello, Message, RunAudit, TableEntry, Welcome


_POLL = 0.005
_CHUNK = 1 << 20
_NAME_WAIT = 2.0
#: strace's niceness, when this process may raise it (measured: -n 2 suites 10% faster).
STRACE_NICE = -10


class _Pipeline(NamedTuple):
    """What reads the log: made by the reader thread, so that the modules it needs are
    imported while the traced session starts, not before it (the supervisor imports nothing
    it does not need to start strace: docs/performance.md)."""

    parser: Parser
    folder: Folder
    #: What the top run did after it asked for its report.
    late: Folder

    @classmethod
    def make(cls) -> _Pipeline:
        from .audit import Folder
        from .parse import Parser

        return cls(Parser(), Folder(), Folder())


class _Run:
    """What the supervisor knows of one run (mutable: it learns as the run talks)."""

    def __init__(self) -> None:
        self.tests: dict[tuple[str, int], tuple[str, str]] = {}
        self.policies: dict[str, str] = {}
        self.hello: Hello | None = None
        #: Connections of the run (its session's, its workers') still being read.
        self.talking = 0
        self.finished = False
        self.served = False


class Supervisor:
    """Runs a command under strace and audits it live; one per traced session."""

    def __init__(
        self,
        tracer: Tracer,
        run: str,
        traced: TracedRun | None = None,
        *,
        names: bool = False,
        io_uring: str = "report",
    ) -> None:
        self.tracer = tracer
        self.run_id = run
        self.token = markers.new_run_id() + markers.new_run_id()
        self.traced = traced or TracedRun(
            tracer,
            strace_cpu=_one_cpu(),
            strace_nice=STRACE_NICE,
            names=names,
            io_uring=io_uring,
        )
        self._cond = threading.Condition()
        self._runs: dict[str, _Run] = {run: _Run()}
        self._pipe: _Pipeline | None = None
        self._done = threading.Event()
        self._consumed = False
        #: How many times the reader has caught up with strace; how many lines it has read.
        self._caught_up = 0
        self._lines = 0
        #: Bytes of the log read so far; whether a hole was found behind them (see _cut).
        self._read = 0
        self._holed = False
        self._holed_served = False
        self._failure = ""
        #: Foreign lines already reported in the top run's own answer.
        self._foreign_served = 0
        self._server: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> bytes:
        return markers.address(self.token, MarkVerb.CONTROL)

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """The traced command's environment: where the supervisor is, and which run it is."""
        return {**base, ENV_SUPERVISOR: self.token, ENV_RUN: self.run_id}

    def run(self, command: Sequence[str], *, env: Mapping[str, str], cwd: str) -> int:
        """Runs the command to its end and returns its status; the log is read meanwhile."""
        with self.traced:
            server = self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                try:
                    server.bind(self.address)
                    server.listen(64)
                except OSError as err:
                    raise TraceError(f"cannot open the control socket: {err.strerror}") from err
                self._start(self._serve, "netaudit-control")
                try:
                    return self.traced.run(
                        command,
                        env=env,
                        cwd=cwd,
                        started=lambda: self._start(self._consume, "netaudit-consume"),
                    )
                finally:
                    self._done.set()
                    for thread in self._threads[1:]:
                        thread.join()
                    with self._cond:
                        self._cut()  # while the log is still there
            finally:
                with contextlib.suppress(OSError):  # wakes the accept() close() would not
                    server.shutdown(socket.SHUT_RDWR)
                server.close()
                for thread in self._threads[:1]:
                    thread.join()

    def _start(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- reading the log ----------------------------------------------------------------

    def _consume(self) -> None:
        try:
            from . import protocol  # noqa: F401 - for the first run's hello, answered at once
            from .attribute import Lineage

            lineage = Lineage(root=(self.run_id, SESSION))
            with self._cond:
                pipe = self._pipe = _Pipeline.make()
                items = lineage.attribute(pipe.parser.records(self._follow()))
                pipe.folder.feed(_until_late(items, self), self._on_mark)
                pipe.late.feed(items)
        except Exception as exc:  # any failure here makes the audit incomplete
            self._failure = f"reading the trace failed: {exc!r}"
        finally:
            with self._cond:
                self._consumed = True
                self._cond.notify_all()

    def _follow(self) -> Iterator[str]:
        """The log's lines as strace writes them, until strace is gone and all is read.

        Called with the condition held; it lets go only while waiting for more, so a run's
        question is answered from a log read as far as it has been written.
        """
        path = self.traced.log_path
        while not os.path.exists(path):
            if self._done.is_set():
                return
            self._cond.wait(_POLL)
        with open(path, "rb") as log:
            rest = b""
            while True:
                chunk = log.read(_CHUNK)
                if chunk:
                    self._read += len(chunk)
                    lines = (rest + chunk).split(b"\n")
                    rest = lines.pop()
                    self._lines += len(lines)
                    for line in lines:
                        yield line.decode("utf-8", "surrogateescape") + "\n"
                    continue
                if self._done.is_set():
                    break
                self._caught_up += 1
                self._cond.notify_all()
                self._cond.wait(_POLL)
            if rest:
                self._lines += 1
                yield rest.decode("utf-8", "surrogateescape")

    def _on_mark(self, mark: Mark) -> None:
        if mark.verb is MarkVerb.FINISH and not mark.worker:
            self._runs.setdefault(mark.run, _Run()).finished = True
            self._cond.notify_all()

    def _cut(self) -> bool:
        """Whether the log was cut behind the reader, where the parser cannot see the hole.

        Called with the condition held, so the reader stands still meanwhile.
        """
        if not self._holed and self._read:
            self._holed = has_hole(self.traced.log_path, self._read)
        return self._holed

    @property
    def top_finished(self) -> bool:
        return self._runs[self.run_id].finished

    # -- answering runs -----------------------------------------------------------------

    def _serve(self) -> None:
        assert self._server is not None
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return  # closed: the session is over
            threading.Thread(
                target=self._talk, args=(conn,), name="netaudit-run", daemon=True
            ).start()

    def _talk(self, conn: socket.socket) -> None:
        from .protocol import MAX_LINE, Bye, Hello, decode, reply

        run: _Run | None = None
        try:
            with conn, conn.makefile("rb") as stream:
                for raw in iter(lambda: stream.readline(MAX_LINE), b""):
                    message = decode(raw)
                    if isinstance(message, Hello) and run is None:
                        run = self._greet(message)
                        conn.sendall(reply(self.welcome()))
                    elif isinstance(message, Bye) and run is not None:
                        self._hung_up(run)
                        run = None
                    else:
                        self._answer(conn, message)
        except OSError:
            pass  # the run is gone: what it did is in the trace, and its end says so
        finally:
            if run is not None:
                self._hung_up(run)

    def _hung_up(self, run: _Run) -> None:
        with self._cond:
            run.talking -= 1
            self._cond.notify_all()

    def _answer(self, conn: socket.socket, message: Message | None) -> None:
        from .protocol import Ask, Finish, TableEntry, reply

        if isinstance(message, TableEntry):
            self._table(message)
        elif isinstance(message, Ask):
            conn.sendall(reply(self.audit_of_test(message)))
        elif isinstance(message, Finish):
            conn.sendall(reply(self.audit_of(message.run)))

    def welcome(self) -> Welcome:
        from .protocol import Welcome

        return Welcome(
            strace_pid=self.traced.strace_pid,
            strace=self.tracer.path,
            strace_version=self.tracer.version,
            seccomp_bpf=self.tracer.seccomp_bpf,
            strace_cpu=self.traced.strace_cpu,
            names=self.traced.names,
            io_uring=self.traced.io_uring,
        )

    def _greet(self, hello: Hello) -> _Run:
        with self._cond:
            entry = self._runs.setdefault(hello.run, _Run())
            entry.talking += 1
            if entry.hello is None and not hello.worker:  # a worker's controller speaks
                entry.hello = hello
            return entry

    @property
    def hello(self) -> Hello | None:
        """What the top run said of itself, if it said anything (it may have crashed first)."""
        return self._runs[self.run_id].hello

    def _table(self, entry: TableEntry) -> None:
        with self._cond:
            run = self._runs.setdefault(entry.run, _Run())
            run.tests[(markers.safe_worker(entry.worker), entry.test)] = (
                entry.nodeid,
                entry.location,
            )
            if entry.policy is not None:
                import json

                run.policies[entry.nodeid] = json.dumps(entry.policy)
            self._cond.notify_all()

    def audit_of(self, run: str) -> RunAudit:
        """Waits until the log has been read up to the run's FINISH marker, then folds.

        The run asks only once its marker is in the log, so a reader that has caught up
        twice since the question and still not seen it never will: the answer then says so,
        rather than keep the session waiting.
        """
        with self._cond:
            entry = self._runs.setdefault(run, _Run())
            asked = self._caught_up
            self._cond.notify_all()
            self._cond.wait_for(
                lambda: entry.finished or self._consumed or self._caught_up >= asked + 2
            )
            entry.served = True
            cut = self._cut()
            pipe = self._piped()
            if run == self.run_id:
                self._foreign_served = pipe.parser.stats.foreign
                self._holed_served = cut
            problem = self._failure or tampered(pipe.parser.stats.foreign, cut)
            if not entry.finished and not problem:
                problem = (
                    "the trace ended before the run finished"
                    if self._consumed
                    else "the run's end marker never reached the trace"
                )
            return self._named(
                run, pipe.folder.destinations(run), pipe.folder.findings(run), problem
            )

    def audit_of_test(self, ask: Ask) -> RunAudit:
        """What one test did so far: the log read to its end as it was when the test asked
        (its own calls are in it: a traced call goes on only once strace has written it)."""
        key = markers.test_key(markers.safe_worker(ask.worker), ask.test)
        with self._cond:
            asked = self._caught_up
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._consumed or self._caught_up > asked)
            pipe = self._piped()
            problem = self._failure or tampered(pipe.parser.stats.foreign)
            destinations = [d for d in pipe.folder.destinations(ask.run) if d.test == key]
            findings = [f for f in pipe.folder.findings(ask.run) if f.test == key]
            return self._named(ask.run, destinations, findings, problem)

    def _named(
        self,
        run: str,
        destinations: Sequence[Destination],
        findings: Sequence[Finding],
        problem: str,
    ) -> RunAudit:
        """Test keys replaced by nodeids.

        A run sends its table before it asks, on the same connection; an xdist worker's
        lines come on the worker's own, which may still be read when the controller asks: a
        key still unknown is waited for while a connection of the run is still open (a
        worker is gone by then; ``_NAME_WAIT`` bounds a worker that a test stopped).
        """
        entry = self._runs[run]
        tests = entry.tests
        wanted = {d.test for d in destinations} | {f.test for f in findings}
        keys = {key for key in wanted if key != SESSION}
        self._cond.wait_for(
            lambda: entry.talking <= 1 or all(_split(key) in tests for key in keys),
            timeout=_NAME_WAIT,
        )
        from dataclasses import replace

        from .audit import merge
        from .protocol import RunAudit

        names = {key: tests.get(_split(key), (f"<unnamed test {key}>", ""))[0] for key in keys}
        names[SESSION] = SESSION
        folded: dict[tuple[object, ...], Destination] = {}
        for d in destinations:
            d = replace(d, test=names.get(d.test, d.test))
            where = (d.test, d.endpoint, d.raw, d.after_test)  # a DNS query's raw names it
            folded[where] = merge(folded[where], d) if where in folded else d
        calls = sum(d.count for d in destinations)
        unparsed = sum(d.count for d in destinations if d.endpoint is None)
        return RunAudit(
            destinations=tuple(folded.values()),
            findings=tuple(replace(f, test=names.get(f.test, f.test)) for f in findings),
            # The parser's own counts are written back only when its stream ends.
            stats=replace(
                self._piped().parser.stats, lines=self._lines, calls=calls, unparsed=unparsed
            ),
            locations=tuple(sorted(set(tests.values()))),
            problem=problem,
            policies=tuple(sorted(self._runs[run].policies.items())),
        )

    def leftovers(self) -> tuple[RunAudit, bool]:
        """After the session: what the top run did that its own report could not cover, and
        whether that is all it did (its report never came, say after a crash)."""
        run = self.run_id
        with self._cond:
            pipe = self._piped()
            foreign = pipe.parser.stats.foreign
            if self._runs[run].served:
                late = pipe.late
                cut = self._holed and not self._holed_served
                problem = tampered(foreign - self._foreign_served, cut)
                return self._named(run, late.destinations(run), late.findings(run), problem), False
            problem = self._failure or tampered(foreign, self._holed)
            whole = pipe.folder
            return self._named(run, whole.destinations(run), whole.findings(run), problem), True

    def _piped(self) -> _Pipeline:
        """The reader's pipeline; an empty one if the reader failed before it made its own
        (its failure is then the audit's problem)."""
        if self._pipe is None:
            self._pipe = _Pipeline.make()
        return self._pipe


def _one_cpu() -> int | None:
    """The CPU strace is kept on, when there is more than one to choose from."""
    cpus = os.sched_getaffinity(0)
    return max(cpus) if len(cpus) > 1 else None


def _split(key: str) -> tuple[str, int]:
    worker, _, test = key.rpartition(":")
    return worker, int(test) if test.isdigit() else -1


def _until_late(items: Iterator[Attributed], supervisor: Supervisor) -> Iterator[Attributed]:
    """The stream until the top run has asked for its report; the rest is 'late'."""
    for item in items:
        yield item
        if supervisor.top_finished:
            return
