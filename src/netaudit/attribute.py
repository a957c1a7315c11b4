"""Who made each call: the process (thread group) and program behind a thread id.

strace names threads, not processes, and a new task's first lines can come before its
parent's clone() returns (vfork always does this). So records of a thread id that no
clone has named yet are held back for a short window of the stream and replayed once the
lineage is known; only when the window passes without an answer does the thread stand as a
process of its own (as in logs that do not trace clone at all).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import NamedTuple, Union

from . import markers
from .model import (
    AF_INET,
    AF_INET6,
    PROBE,
    SESSION,
    Exec,
    Finding,
    Hazard,
    Mark,
    MarkVerb,
    NetCall,
    NetEvent,
    Process,
    Record,
    Resolved,
    Spawn,
    Started,
    Syscall,
)

#: How many records a thread's lines may wait for the clone() that names it.
HOLD_WINDOW = 2000

#: How many answered addresses each process keeps the names of (the most recent ones).
NAMES_PER_PROCESS = 1024
#: How many processes keep names (those that received answers most recently).
NAMED_PROCESSES = 4096
#: How far up the tree a call looks for the DNS answer that named its address.
NAME_ANCESTORS = 8

#: Program name for a process that was running before the trace started.
UNKNOWN_PROGRAM = "?"

Attributed = Union[NetEvent, Finding, Mark]


class Span(NamedTuple):
    """Where a process stands in one run: the test it belongs to (``test`` -1: the session)."""

    run: str
    worker: str
    test: int
    key: str


class Lineage:
    """Follows the process tree through a stream of records; one per log.

    In a test session, markers (see ``markers``) say which test each driving process is in.
    Every process carries a chain of spans, one per run it belongs to (a nested
    ``pytest --netaudit`` adds its own): a driver's span moves with its markers, and a new
    process takes a copy of its parent's chain at the clone, so a daemon a test started stays
    that test's, flagged ``after_test`` once the test is over. A process with no chain belongs
    to ``root``, the session of the outermost run (or to no test at all outside pytest).
    """

    def __init__(self, hold_window: int = HOLD_WINDOW, root: tuple[str, str] = ("", "")) -> None:
        self._hold_window = hold_window
        self._pid_of: dict[int, int] = {}
        self._process: dict[int, Process] = {}
        self._held: dict[int, tuple[int, list[Record]]] = {}
        self._seq = 0
        self._root_named = False
        self._root = root
        self._root_chain = (Span(root[0], "", -1, root[1]),)
        self._chains: dict[int, tuple[Span, ...]] = {}
        self._current: dict[tuple[str, str], int] = {}
        #: Where split calls began: (tid, line) -> (test, after_test, run) per span.
        self._started: dict[tuple[int, int], list[tuple[str, bool, str]]] = {}
        #: pid -> address -> the names its latest DNS answer gave, oldest answer first.
        self._answers: dict[int, dict[str, tuple[str, ...]]] = {}
        #: Tasks placed before any clone named them (see ``expect``): tid -> (parent, thread).
        self._expected: dict[int, tuple[int | None, bool]] = {}
        #: Tasks placed that way whose clone line has not come yet.
        self._placed: set[int] = set()

    def attribute(self, records: Iterable[Record]) -> Iterator[Attributed]:
        """Yields an event per network call and a finding per hazard, in stream order, and
        passes markers through."""
        pid_of, process, held, new = self._pid_of, self._process, self._held, tuple.__new__
        chains, (root_run, root_key), started = self._chains, self._root, self._started
        answers = self._answers
        for record in records:
            self._seq += 1
            if (
                type(record) is NetCall
                and record.tid in pid_of
                and not held
                and not started
                and not answers
            ):
                # The common case, inline; tuple.__new__ skips NamedTuple's slower __new__.
                pid = pid_of[record.tid]
                if pid in chains:
                    yield from self._events(record, process[pid], chains[pid])
                else:
                    yield new(NetEvent, (record, process[pid], root_key, False, root_run, ()))
                continue
            yield from self._take(record)
            if held:
                oldest = next(iter(held))
                if self._seq - held[oldest][0] > self._hold_window:
                    self._adopt_orphan(oldest)
                    yield from self._release(oldest)
        while held:
            oldest = next(iter(held))
            self._adopt_orphan(oldest)
            yield from self._release(oldest)

    def _take(self, record: Record) -> Iterator[Attributed]:
        tid = record.parent if isinstance(record, Spawn) else record.tid
        if tid not in self._pid_of:
            if tid in self._expected:
                yield from self._place(tid)
            elif not self._pid_of:
                self._adopt_orphan(tid)
            else:
                self._hold(tid, record)
                return
        pid = self._pid_of[tid]
        if type(record) is NetCall:
            began = self._started.pop((record.tid, record.line), None)
            record, names = self._named(record, pid)
            if began is None:
                yield from self._events(record, self._process[pid], self._chain(pid), names)
            else:
                process = self._process[pid]
                for test, after, run in began:
                    yield NetEvent(record, process, test, after, run, names)
        elif isinstance(record, Resolved):
            known = self._answers.pop(pid, {})  # re-inserted: the most recent goes last
            self._answers[pid] = known
            if len(self._answers) > NAMED_PROCESSES:
                del self._answers[next(iter(self._answers))]
            for address, names in record.addresses:
                known.pop(address, None)  # the latest answer is the one that counts
                known[address] = names
                if len(known) > NAMES_PER_PROCESS:
                    del known[next(iter(known))]
        elif isinstance(record, Started):
            self._started[(record.tid, record.line)] = self._where(self._chain(pid))
        elif isinstance(record, Spawn):
            yield from self._spawn(record)
        elif isinstance(record, Exec):
            self._exec(record)
        elif isinstance(record, Hazard):
            process = self._process[pid]
            for span in self._chain(pid):
                yield Finding(record.kind, process.pid, process.program, span.key, span.run)
        elif isinstance(record, Mark):
            self._mark(pid, record)
            yield record

    def _chain(self, pid: int) -> tuple[Span, ...]:
        return self._chains.get(pid, self._root_chain)

    def _events(
        self,
        call: NetCall,
        process: Process,
        chain: tuple[Span, ...],
        names: tuple[str, ...] = (),
    ) -> Iterator[NetEvent]:
        for test, after, run in self._where(chain):
            yield NetEvent(call, process, test, after, run, names)

    def _named(self, call: NetCall, pid: int) -> tuple[NetCall, tuple[str, ...]]:
        """The names the latest DNS answer to this process (or an ancestor) gave the call's
        address; a UDP connect to an address the process itself was just given is a probe."""
        dest = call.dest
        if not self._answers or dest is None or dest.family not in (AF_INET, AF_INET6):
            return call, ()
        current: int | None = pid
        for depth in range(NAME_ANCESTORS):
            if current is None:
                break
            names = self._answers.get(current, {}).get(dest.address)
            if names is not None:
                probe = (
                    depth == 0
                    and call.syscall is Syscall.CONNECT
                    and call.sock.startswith("UDP")
                    and not call.raw
                )
                return (call._replace(raw=PROBE) if probe else call), names
            process = self._process.get(current)
            current = process.parent if process is not None else None
        return call, ()

    def _where(self, chain: tuple[Span, ...]) -> list[tuple[str, bool, str]]:
        """(test, after_test, run) for each span of a chain, as of now."""
        current = self._current
        return [
            (key, test >= 0 and current.get((run, worker)) != test, run)
            for run, worker, test, key in chain
        ]

    def _mark(self, pid: int, mark: Mark) -> None:
        """Moves the driving process's span in the marker's run."""
        if mark.verb is MarkVerb.FINISH:  # the run is over: its process goes on without it
            rest = tuple(span for span in self._chain(pid) if span.run != mark.run)
            if rest:
                self._chains[pid] = rest
            else:
                self._chains.pop(pid, None)
            return
        if mark.verb is MarkVerb.CONTROL:
            return
        if mark.verb is MarkVerb.BEGIN:
            span = Span(mark.run, mark.worker, mark.test, markers.test_key(mark.worker, mark.test))
        else:
            span = Span(mark.run, mark.worker, -1, SESSION)
        # A log judged without a supervisor has an anonymous root: a run replaces it.
        chain = [span for span in self._chain(pid) if span.run]
        # An xdist worker inherits its controller's span of the same run, and replaces it.
        same = [i for i, old in enumerate(chain) if old.run == mark.run]
        if same:
            chain[same[0]] = span
        else:
            chain.append(span)
        self._chains[pid] = tuple(chain)
        self._current[(mark.run, mark.worker)] = span.test

    def _hold(self, tid: int, record: Record) -> None:
        if tid in self._held:
            self._held[tid][1].append(record)
        else:
            self._held[tid] = (self._seq, [record])

    def _release(self, tid: int) -> Iterator[Attributed]:
        _, records = self._held.pop(tid, (0, []))
        for record in records:
            yield from self._take(record)

    def _adopt_orphan(self, tid: int) -> None:
        """A task with no known parent stands as a process of its own, with one exception.

        strace writing to stderr prints no pid while it traces one process, so the first
        process's early lines come as tid 0; the first task no clone names is then that same
        process, under its real pid.
        """
        root = self._process.get(0)
        if root is not None and root.parent is None and tid != 0 and not self._root_named:
            self._root_named = True
            self._process[tid] = replace(root, pid=tid)
            del self._process[0]
            for task, pid in self._pid_of.items():
                if pid == 0:
                    self._pid_of[task] = tid
            self._pid_of[tid] = tid
            if 0 in self._chains:
                self._chains[tid] = self._chains.pop(0)
            return
        self._pid_of[tid] = tid
        self._process[tid] = Process(pid=tid, parent=None, program=UNKNOWN_PROGRAM)

    def _spawn(self, spawn: Spawn) -> Iterator[Attributed]:
        if spawn.child in self._placed:  # placed from /proc already: it may have moved since
            self._placed.discard(spawn.child)
            return
        yield from self._born(spawn)

    def _born(self, spawn: Spawn) -> Iterator[Attributed]:
        parent = self._process[self._pid_of[spawn.parent]]
        if spawn.thread:
            self._pid_of[spawn.child] = parent.pid
        else:
            self._pid_of[spawn.child] = spawn.child
            self._answers.pop(spawn.child, None)  # a reused pid: the old process's names go
            chain = self._chains.get(parent.pid)
            if chain is None:
                self._chains.pop(spawn.child, None)  # a reused pid starts afresh
            else:
                self._chains[spawn.child] = chain
            self._process[spawn.child] = Process(
                pid=spawn.child, parent=parent.pid, program=parent.program, path=parent.path
            )
        yield from self._release(spawn.child)

    def _exec(self, exec_: Exec) -> None:
        pid = self._pid_of[exec_.tid]
        old = self._process[pid]
        program = os.path.basename(exec_.path) or exec_.path or UNKNOWN_PROGRAM
        self._process[pid] = Process(pid=pid, parent=old.parent, program=program, path=exec_.path)

    # -- live use: the block-mode supervisor asks where a call stands before it answers it --

    def knows(self, tid: int) -> bool:
        return tid in self._pid_of

    def expect(self, tid: int, parent: int | None, thread: bool) -> None:
        """Places ``tid`` (as a thread, or a child process, of ``parent``; None: a process of
        its own) when its next record comes, instead of holding that record for a clone line
        that may never come first: a task waiting on the supervisor is read from /proc.

        The clone line, when it comes, changes nothing: the task may have moved on since.
        """
        self._expected[tid] = (parent, thread)

    def _place(self, tid: int) -> Iterator[Attributed]:
        parent, thread = self._expected.pop(tid)
        if parent is not None and parent not in self._pid_of:
            if parent in self._expected:
                yield from self._place(parent)
            else:
                parent = None
        self._placed.add(tid)
        if parent is None:
            self._adopt_orphan(tid)
            yield from self._release(tid)
        else:
            yield from self._born(Spawn(parent, tid, thread))

    def context(
        self, tid: int, call: NetCall
    ) -> tuple[list[tuple[str, bool, str]], tuple[str, ...], bool]:
        """Where ``call``, made by the known task ``tid``, stands now, as ``attribute`` will
        place it: (test, after_test, run) for each span, the names of its address, and whether
        it is a probe that only sorts DNS answers (model.PROBE)."""
        pid = self._pid_of[tid]
        if not self._answers:
            return self._where(self._chain(pid)), (), False
        named, names = self._named(call, pid)
        return self._where(self._chain(pid)), names, named.raw == PROBE

    def process_of(self, tid: int) -> int | None:
        return self._pid_of.get(tid)

    def key_in(self, tid: int, run: str) -> str | None:
        """The test key a known task's call belongs to in ``run`` now; None when its process
        is in no test of that run (it belongs to the outermost run's session then)."""
        for span in self._chains.get(self._pid_of[tid], self._root_chain):
            if span.run == run:
                return span.key
        return None


def attribute(records: Iterable[Record]) -> Iterator[Attributed]:
    """Attributes a whole stream with a fresh lineage."""
    return Lineage().attribute(records)
