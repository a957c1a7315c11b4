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
from typing import Union

from .model import Exec, Finding, Hazard, NetCall, NetEvent, Process, Record, Spawn

#: How many records a thread's lines may wait for the clone() that names it.
HOLD_WINDOW = 2000

#: Program name for a process that was running before the trace started.
UNKNOWN_PROGRAM = "?"

Attributed = Union[NetEvent, Finding]


class Lineage:
    """Follows the process tree through a stream of records; one per log."""

    def __init__(self, hold_window: int = HOLD_WINDOW) -> None:
        self._hold_window = hold_window
        self._pid_of: dict[int, int] = {}
        self._process: dict[int, Process] = {}
        self._held: dict[int, tuple[int, list[Record]]] = {}
        self._seq = 0
        self._root_named = False

    def attribute(self, records: Iterable[Record]) -> Iterator[Attributed]:
        """Yields an event per network call and a finding per hazard, in stream order."""
        pid_of, process, held, new = self._pid_of, self._process, self._held, tuple.__new__
        for record in records:
            self._seq += 1
            if type(record) is NetCall and record.tid in pid_of and not held:
                # The common case, inline; tuple.__new__ skips NamedTuple's slower __new__.
                yield new(NetEvent, (record, process[pid_of[record.tid]], "", False))
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
            if not self._pid_of:
                self._adopt_orphan(tid)
            else:
                self._hold(tid, record)
                return
        if type(record) is NetCall:
            yield NetEvent(record, self._process[self._pid_of[tid]])
        elif isinstance(record, Spawn):
            yield from self._spawn(record)
        elif isinstance(record, Exec):
            self._exec(record)
        elif isinstance(record, Hazard):
            process = self._process[self._pid_of[tid]]
            yield Finding(record.kind, process.pid, process.program)

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
            return
        self._pid_of[tid] = tid
        self._process[tid] = Process(pid=tid, parent=None, program=UNKNOWN_PROGRAM)

    def _spawn(self, spawn: Spawn) -> Iterator[Attributed]:
        parent = self._process[self._pid_of[spawn.parent]]
        if spawn.thread:
            self._pid_of[spawn.child] = parent.pid
        else:
            self._pid_of[spawn.child] = spawn.child
            self._process[spawn.child] = Process(
                pid=spawn.child, parent=parent.pid, program=parent.program, path=parent.path
            )
        yield from self._release(spawn.child)

    def _exec(self, exec_: Exec) -> None:
        pid = self._pid_of[exec_.tid]
        old = self._process[pid]
        program = os.path.basename(exec_.path) or exec_.path or UNKNOWN_PROGRAM
        self._process[pid] = Process(pid=pid, parent=old.parent, program=program, path=exec_.path)


def attribute(records: Iterable[Record]) -> Iterator[Attributed]:
    """Attributes a whole stream with a fresh lineage."""
    return Lineage().attribute(records)
