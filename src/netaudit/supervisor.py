"""The supervisor of a traced test session: it reads the trace while the session runs and
tells each run inside it what that run did.

The supervisor runs strace around a command (a pytest session) and, in threads of its own,
follows the log as strace writes it (parse -> attribute -> fold) and serves a control socket
(protocol.py). Each test run inside the traced tree (the session itself, its xdist workers,
and any ``pytest --netaudit`` a test starts) connects there, says which run it drives, sends
the table of its tests as they start, and at its end asks for its part of the trace. Because
the run puts a FINISH marker in the trace before it asks, and a traced process only goes on
once strace has written its line, the answer covers everything the run did up to that point.

In block mode (``block``) the command runs under a seccomp filter whose listener the reader
thread holds: each egress call waits for it to be judged, answered and written into the stream
between two reads of the log (block.py).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from . import ENV_RUN, ENV_SUPERVISOR, markers
from .errors import BlockUnavailable, TraceError
from .markers import SESSION, MarkVerb
from .trace import TracedRun, Tracer, has_hole, tampered

if TYPE_CHECKING:
    from .attribute import Attributed, Lineage
    from .audit import Folder
    from .block import Blocker
    from .model import Mark
    from .parse import Parser
    from .policy import TestPolicy
    from .protocol import Ask, Hello, Message, RunAudit, TableEntry, Welcome
    from .seccomp import Listener, Notification


_POLL = 0.005
_CHUNK = 1 << 20
_NAME_WAIT = 2.0
#: How long an interrupted session gets to end of itself (Ctrl-C: pytest's summary, and the
#: audit judged and reported, which for a big suite takes seconds on a busy machine) before
#: its tree is ended by pid; a second Ctrl-C ends it at once.
_INTERRUPT_GRACE = 15.0
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


class BlockPlan(NamedTuple):
    """Block mode, as the command is started: how a refused call fails (an errno's name), and
    the allowlist calls are judged by (a path; None: the built-in rules). The run's own
    settings must say the same (the run checks its Welcome)."""

    errno: str = "EPERM"
    allowlist: str | None = None


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
        keep_trace: str | os.PathLike[str] | None = None,
        block: BlockPlan | None = None,
    ) -> None:
        self.tracer = tracer
        self.run_id = run
        self.token = markers.new_run_id() + markers.new_run_id()
        #: Block mode: the plan, and this end of the socket the shim hands the listener on.
        self.block = block
        self._handover: socket.socket | None = None
        shim_end = None
        if block is not None:
            from . import seccomp

            why = seccomp.unsupported()
            if why:
                raise BlockUnavailable(why)
            import errno as errnos

            self._handover, theirs = socket.socketpair()
            shim_end = (theirs.detach(), seccomp.egress_program(getattr(errnos, block.errno)))
        self.traced = traced or TracedRun(
            tracer,
            strace_cpu=_one_cpu(),
            strace_nice=STRACE_NICE,
            kill_grace=_INTERRUPT_GRACE,
            names=names,
            io_uring=io_uring,
            keep=keep_trace,
            block=shim_end,
        )
        #: Notices for the user (a kernel without WAIT_KILLABLE_RECV), said after the run.
        self.warnings: list[str] = []
        self._blocker: Blocker | None = None
        self._block_failure = ""
        self._shim_pid = -1
        self._live: dict[str, tuple[str, TestPolicy | None]] = {}
        self._cond = threading.Condition()
        self._runs: dict[str, _Run] = {run: _Run()}
        self._pipe: _Pipeline | None = None
        self._done = threading.Event()
        self._consumed = False
        #: How many times the reader has caught up with strace; how many lines it has read.
        self._caught_up = 0
        self._lines = 0
        #: Whether the reader waits for more, having read the log to its end (see _current).
        self._parked = False
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
                    self._poke()
                    for thread in self._threads[1:]:
                        thread.join()
                    with self._cond:
                        self._cut()  # while the log is still there
                    if self._block_failure:
                        raise BlockUnavailable(self._block_failure)
            finally:
                with contextlib.suppress(OSError):  # wakes the accept() close() would not
                    server.shutdown(socket.SHUT_RDWR)
                server.close()
                for thread in self._threads[:1]:
                    thread.join()
                if self._handover is not None:
                    self._handover.close()

    def _start(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- reading the log ----------------------------------------------------------------

    def _consume(self) -> None:
        try:
            from . import protocol  # noqa: F401 - for the first run's hello, answered at once
            from .attribute import Lineage

            # A command that is not a test session (netaudit run) has no run: no tests.
            lineage = Lineage(root=(self.run_id, SESSION if self.run_id else ""))
            if self._handover is not None:
                # This thread now stands where strace's stop did: as favoured as strace.
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), STRACE_NICE)
                listener = self._take_listener()
                if listener is None:
                    return  # the command never ran: the run says why
                self._blocker = self._blocking(listener, lineage)
            with self._cond:
                pipe = self._pipe = _Pipeline.make()
                items = lineage.attribute(pipe.parser.records(self._follow()))
                if self._blocker is not None:
                    items = _without_shim_filter(items, self._shim_pid)
                pipe.folder.feed(_until_late(items, self), self._on_mark)
                pipe.late.feed(items)
        except Exception as exc:  # any failure here makes the audit incomplete
            self._failure = f"reading the trace failed: {exc!r}"
        finally:
            if self._blocker is not None:
                self._blocker.close()
            with self._cond:
                self._consumed = True
                self._cond.notify_all()

    # -- block mode -----------------------------------------------------------------------

    def _take_listener(self) -> Listener | None:
        """The filter's listener, from the shim that installed it (it waits for our "k"
        before it runs the command: without it, it never does)."""
        from . import seccomp

        assert self._handover is not None
        said = b""
        while not said.endswith(b"\n"):
            part = self._handover.recv(256)
            if not part:
                return None  # strace never ran the shim: the run reports why
            said += part
        if said.startswith(b"!"):
            self._block_failure = (
                f"the block-mode filter could not be installed: {said[1:].decode().strip()}"
            )
            return None
        pid, fd, flags = (int(word) for word in said.split())
        try:
            listener = seccomp.Listener.take(pid, fd)
            sizes = seccomp.notif_sizes()
        except OSError as err:
            self._block_failure = f"cannot take the filter's listener from its process: {err}"
            return None
        if sizes != seccomp.NOTIF_SIZES:
            listener.close()
            self._block_failure = f"the kernel's seccomp notification sizes are {sizes}"
            return None
        if not flags & seccomp.FLAG_WAIT_KILLABLE_RECV:
            need = ".".join(str(n) for n in seccomp.KILLABLE_KERNEL)
            self.warnings.append(
                f"this kernel lacks SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux {need}): a "
                "program that takes many signals may retry a call block mode is judging"
            )
        listener.wake_synchronously()
        self._shim_pid = pid
        self._handover.sendall(b"k")
        return listener

    def _blocking(self, listener: Listener, lineage: Lineage) -> Blocker:
        import errno as errnos
        from pathlib import Path

        from .block import Blocker
        from .errors import ConfigError
        from .rules import DEFAULT
        from .settings import AllowlistChoice

        assert self.block is not None
        path = self.block.allowlist
        try:
            allowlist = DEFAULT if path is None else AllowlistChoice(Path(path), "").load()
        except ConfigError:  # the run refuses it itself, as a usage error: until then, strict
            allowlist = DEFAULT
        return Blocker(
            listener,
            lineage,
            allowlist,
            deny=getattr(errnos, self.block.errno),
            run=self.run_id,
            test_of=self._live_test,
            names=self.traced.names,
        )

    def _live_test(self, key: str) -> tuple[str, TestPolicy | None]:
        """The nodeid and marker policy of a test key of the top run, for a call being judged
        (the reader thread, with the condition held). A run writes a test's table line
        before the test begins, on its own connection: it may still be read."""
        if key in ("", SESSION):
            return key, None
        found = self._live.get(key)
        if found is not None:
            return found
        run = self._runs[self.run_id]
        where = _split(key)
        self._cond.wait_for(lambda: where in run.tests or run.talking <= 0, timeout=_NAME_WAIT)
        entry = run.tests.get(where)
        if entry is None:
            return f"<unnamed test {key}>", None  # judged without its rules: stricter
        nodeid, location = entry
        policy = None
        wire = run.policies.get(nodeid)
        if wire is not None:
            from .errors import AllowlistError
            from .policy import policies

            with contextlib.suppress(AllowlistError):  # checked where the test ran
                policy = policies([(nodeid, wire)], {nodeid: location})[nodeid]
        self._live[key] = (nodeid, policy)
        return self._live[key]

    def _next_call(self) -> Notification | None:
        """Waits (with the condition let go) for a call to judge, more of the log, or a run's
        question."""
        assert self._blocker is not None
        self._cond.release()
        try:
            return self._blocker.wait(_POLL)
        finally:
            self._cond.acquire()

    def _poke(self) -> None:
        if self._blocker is not None:
            self._blocker.poke()

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
        blocker = self._blocker
        with open(path, "rb") as log:
            rest = b""
            call: Notification | None = None
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
                if blocker is not None:
                    if call is not None:  # the log is read to its end: now the call's turn
                        for synthetic in blocker.handle(call):
                            self._lines += 1
                            yield synthetic
                        call = None
                        self._failure = self._failure or blocker.failure
                        continue
                    done = blocker.drain()
                    if done:
                        self._lines += len(done)
                        yield from done
                        continue
                if self._done.is_set():
                    break
                self._caught_up += 1
                self._cond.notify_all()
                self._parked = True
                try:
                    if blocker is None:
                        self._cond.wait(_POLL)
                    else:
                        call = self._next_call()
                finally:
                    self._parked = False
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
            block=self.block is not None,
            block_errno=self.block.errno if self.block is not None else "",
            allowlist=self.block.allowlist if self.block is not None else None,
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
            self._poke()
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
            return self._named(run, pipe.folder, problem)

    def audit_of_test(self, ask: Ask) -> RunAudit:
        """What one test did so far: the log read to its end as it was when the test asked
        (its own calls are in it: a traced call goes on only once strace has written it)."""
        key = markers.test_key(markers.safe_worker(ask.worker), ask.test)
        with self._cond:
            if not self._current():
                asked = self._caught_up
                self._cond.notify_all()
                self._poke()
                self._cond.wait_for(lambda: self._consumed or self._caught_up > asked)
            pipe = self._piped()
            problem = self._failure or tampered(pipe.parser.stats.foreign)
            return self._named(ask.run, pipe.folder, problem, key)

    def _current(self) -> bool:
        """Whether the reader stands where a question would have it go: waiting for more, with
        all strace has written read and folded, and every answered call's line recorded.

        Called with the condition held, so the reader cannot move meanwhile. A test asks once
        its own calls are over, and strace writes a call's line before the task goes on: the
        log's size then covers them. This spares each test's question two thread wake-ups.
        """
        if not self._parked:
            return False
        if self._blocker is not None and not self._blocker.recorded:
            return False
        try:
            return os.stat(self.traced.log_path).st_size == self._read
        except OSError:
            return False

    def _named(self, run: str, folder: Folder, problem: str, test: str | None = None) -> RunAudit:
        """The run's part of ``folder`` (only test key ``test``'s, if given), with test keys
        replaced by nodeids; destinations that then fall together are merged.

        A run sends its table before it asks, on the same connection; an xdist worker's
        lines come on the worker's own, which may still be read when the controller asks: a
        key still unknown is waited for while a connection of the run is still open (a
        worker is gone by then; ``_NAME_WAIT`` bounds a worker that a test stopped).

        Many destinations stay on disk, in the folder's private directory: the answer holds
        their path (see spill.Spilled), which the run reads before the session ends.
        """
        entry = self._runs[run]
        tests = entry.tests
        findings = [f for f in folder.findings(run) if test is None or f.test == test]
        wanted = {*folder.tests(run), *(f.test for f in findings)} if test is None else {test}
        keys = {key for key in wanted if key not in (SESSION, "")}
        self._cond.wait_for(
            lambda: entry.talking <= 1 or all(_split(key) in tests for key in keys),
            timeout=_NAME_WAIT,
        )
        from dataclasses import replace

        from . import spill
        from .protocol import RunAudit

        names = {key: tests.get(_split(key), (f"<unnamed test {key}>", ""))[0] for key in keys}
        destinations = folder.destinations(run, names, test)
        calls, unparsed = spill.calls(destinations)
        if test is None:
            locations = tuple(sorted(set(tests.values())))
            policies = tuple(sorted(entry.policies.items()))
        else:  # one test's answer names that test only: not the whole table, each test again
            located = [tests[_split(key)] for key in keys if _split(key) in tests]
            named = {nodeid for nodeid, _ in located}
            locations = tuple(located)
            policies = tuple((n, entry.policies[n]) for n in sorted(named) if n in entry.policies)
        return RunAudit(
            destinations=destinations,
            findings=tuple(replace(f, test=names.get(f.test, f.test)) for f in findings),
            # The parser's own counts are written back only when its stream ends.
            stats=replace(
                self._piped().parser.stats, lines=self._lines, calls=calls, unparsed=unparsed
            ),
            locations=locations,
            problem=problem,
            policies=policies,
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
                return self._named(run, late, problem), False
            problem = self._failure or tampered(foreign, self._holed)
            return self._named(run, pipe.folder, problem), True

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


def _without_shim_filter(items: Iterator[Attributed], shim: int) -> Iterator[Attributed]:
    """The stream without the block-mode filter's own installation (the shim's seccomp call,
    before it runs the command): under that filter no other listener can be installed."""
    from .model import Finding, HazardKind

    for item in items:
        if type(item) is Finding and item.kind is HazardKind.SECCOMP_NOTIFY and item.pid == shim:
            continue
        yield item


def _until_late(items: Iterator[Attributed], supervisor: Supervisor) -> Iterator[Attributed]:
    """The stream until the top run has asked for its report; the rest is 'late'."""
    for item in items:
        yield item
        if supervisor.top_finished:
            return
