"""The supervisor of a traced test session: it reads the trace while the session runs and
tells each run inside it what that run did.

The supervisor runs strace around a command (a pytest session) and, in two threads of its
own, follows the log as strace writes it (parse -> attribute -> fold) and serves a control
socket. Each test run inside the traced tree (the session itself, its xdist workers, and any
``pytest --netaudit`` a test starts) connects there, says which run it drives, sends the
table of its tests as they start, and at its end asks for its part of the trace. Because the
run puts a FINISH marker in the trace before it asks, and a traced process only goes on once
strace has written its line, the answer covers everything the run did up to that point.

The control socket is an abstract AF_UNIX address named after a random token: no file to
clean up, and nothing for the traced tree to find but the token it is given.

Protocol, one JSON object per line from the run; replies are a JSON line to ``hello`` and a
length-prefixed pickle of ``RunAudit`` to ``finish`` (the supervisor is the trusted side,
so only it sends pickles):
``{"op": "hello", "run", "worker", "pid"}``, ``{"op": "test", "run", "worker", "test",
"nodeid", "location"[, "policy"]}``, ``{"op": "finish", "run"}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from . import markers, spill
from .attribute import Attributed, Lineage
from .audit import Folder
from .errors import TraceError
from .model import SESSION, Destinations, Finding, Mark, MarkVerb, TraceStats
from .parse import Parser
from .trace import TracedRun, Tracer, has_hole, tampered

ENV_SUPERVISOR = "NETAUDIT_SUPERVISOR"
ENV_RUN = "NETAUDIT_RUN"
_POLL = 0.005
_CHUNK = 1 << 20
_MAX_LINE = 1 << 20
_NAME_WAIT = 2.0
_HEADER = struct.Struct("!Q")
#: strace's niceness, when this process may raise it (measured: -n 2 suites 10% faster).
STRACE_NICE = -10


@dataclass(frozen=True)
class RunAudit:
    """What one run did, folded but not judged: the run judges it with its own allowlist."""

    #: Kept on disk, in the supervisor's private directory, when there are many.
    destinations: Destinations
    findings: tuple[Finding, ...] = ()
    stats: TraceStats = field(default_factory=TraceStats)
    #: nodeid -> "file:line" of each test the run named.
    locations: tuple[tuple[str, str], ...] = ()
    #: Why the audit of this run is incomplete; "" when it is complete.
    problem: str = ""
    #: nodeid -> the JSON of its netaudit markers (policy.normalise), for tests that have any.
    policies: tuple[tuple[str, str], ...] = ()


@dataclass
class _Run:
    tests: dict[tuple[str, int], tuple[str, str]] = field(default_factory=dict)
    policies: dict[str, str] = field(default_factory=dict)
    finished: bool = False
    served: bool = False


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
        keep_trace: str | os.PathLike[str] | None = None,
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
            keep=keep_trace,
        )
        self._cond = threading.Condition()
        self._runs: dict[str, _Run] = {run: _Run()}
        self._folder = Folder()
        self._late = Folder()
        self._parser = Parser()
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
                self._start(self._consume, "netaudit-consume")
                try:
                    return self.traced.run(command, env=env, cwd=cwd)
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
        lineage = Lineage(root=(self.run_id, SESSION))
        try:
            with self._cond:
                items = lineage.attribute(self._parser.records(self._follow()))
                self._folder.feed(_until_late(items, self), self._on_mark)
                self._late.feed(items)
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
        with conn, conn.makefile("rb") as stream:
            for raw in iter(lambda: stream.readline(_MAX_LINE), b""):
                try:
                    message = json.loads(raw)
                    op = message["op"]
                except (ValueError, KeyError, TypeError):
                    continue  # a run speaks this protocol or says nothing
                if op == "hello":
                    conn.sendall(json.dumps(self._hello()).encode() + b"\n")
                elif op == "test":
                    self._table(message)
                elif op == "finish":
                    answer = pickle.dumps(self.audit_of(str(message.get("run", ""))))
                    conn.sendall(_HEADER.pack(len(answer)) + answer)

    def _hello(self) -> dict[str, object]:
        return {
            "strace_pid": self.traced.strace_pid,
            "strace": self.tracer.path,
            "strace_version": self.tracer.version,
            "seccomp_bpf": self.tracer.seccomp_bpf,
            "strace_cpu": self.traced.strace_cpu,
        }

    def _table(self, message: Mapping[str, object]) -> None:
        run, worker, test = message.get("run"), message.get("worker", ""), message.get("test")
        nodeid, location = message.get("nodeid"), message.get("location", "")
        if not (isinstance(run, str) and isinstance(worker, str) and isinstance(test, int)):
            return
        if isinstance(nodeid, str) and isinstance(location, str):
            with self._cond:
                entry = self._runs.setdefault(run, _Run())
                entry.tests[(markers.safe_worker(worker), test)] = (nodeid, location)
                policy = message.get("policy")
                if isinstance(policy, dict):
                    entry.policies[nodeid] = json.dumps(policy)
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
            self._cond.wait_for(
                lambda: entry.finished or self._consumed or self._caught_up >= asked + 2
            )
            entry.served = True
            cut = self._cut()
            if run == self.run_id:
                self._foreign_served = self._parser.stats.foreign
                self._holed_served = cut
            problem = self._failure or tampered(self._parser.stats.foreign, cut)
            if not entry.finished and not problem:
                problem = (
                    "the trace ended before the run finished"
                    if self._consumed
                    else "the run's end marker never reached the trace"
                )
            return self._named(run, self._folder, problem)

    def _named(self, run: str, folder: Folder, problem: str) -> RunAudit:
        """The run's part of ``folder``, with test keys replaced by nodeids (waiting a moment
        for a table line still in flight); destinations that then fall together are merged.

        Many destinations stay on disk, in the folder's private directory: the answer holds
        their path (see spill.Spilled), which the run reads before the session ends.
        """
        tests = self._runs[run].tests
        findings = folder.findings(run)
        wanted = {*folder.tests(run), *(f.test for f in findings)}
        keys = {key for key in wanted if key != SESSION}
        deadline = time.monotonic() + _NAME_WAIT
        while any(_split(key) not in tests for key in keys):
            left = deadline - time.monotonic()
            if left <= 0 or not self._cond.wait(left):
                break
        names = {key: tests.get(_split(key), (f"<unnamed test {key}>", ""))[0] for key in keys}
        destinations = folder.destinations(run, names)
        calls, unparsed = spill.calls(destinations)
        return RunAudit(
            destinations=destinations,
            findings=tuple(replace(f, test=names.get(f.test, f.test)) for f in findings),
            # The parser's own counts are written back only when its stream ends.
            stats=replace(self._parser.stats, lines=self._lines, calls=calls, unparsed=unparsed),
            locations=tuple(sorted(set(tests.values()))),
            problem=problem,
            policies=tuple(sorted(self._runs[run].policies.items())),
        )

    def leftovers(self) -> tuple[RunAudit, bool]:
        """After the session: what the top run did that its own report could not cover, and
        whether that is all it did (its report never came, say after a crash)."""
        run = self.run_id
        with self._cond:
            if self._runs[run].served:
                late = self._late
                foreign = self._parser.stats.foreign - self._foreign_served
                problem = tampered(foreign, self._holed and not self._holed_served)
                return self._named(run, late, problem), False
            problem = self._failure or tampered(self._parser.stats.foreign, self._holed)
            return self._named(run, self._folder, problem), True


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


def connect(token: str, timeout: float = 10.0) -> socket.socket:
    """A run's connection to its supervisor."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(markers.address(token, MarkVerb.CONTROL))
    except OSError:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


def read_audit(sock: socket.socket) -> RunAudit:
    header = _read_exactly(sock, _HEADER.size)
    (size,) = _HEADER.unpack(header)
    answer = pickle.loads(_read_exactly(sock, size))
    if not isinstance(answer, RunAudit):
        raise ValueError("the supervisor's answer is not a RunAudit")
    return answer


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    parts, left = [], size
    while left:
        part = sock.recv(min(left, _CHUNK))
        if not part:
            raise ConnectionError("the supervisor closed the connection")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)
