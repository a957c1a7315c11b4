"""The process table, read from /proc: which processes a traced run started, and ending them.

A run must end exactly the processes it started, never others: so they are found by pid (the
tracer's group, the processes it traces, and their descendants), never by name, and a signal
goes to a pid that may already be gone without that being an error.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from typing import NamedTuple

__all__ = ["Stat", "kill", "stat", "tracer_pid", "tree"]


class Stat(NamedTuple):
    """What /proc/PID/stat tells of a process; ``start`` (in clock ticks) tells a reused pid."""

    state: str
    ppid: int
    pgrp: int
    start: int


def stat(pid: int) -> Stat | None:
    """None for a process that is gone (or cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return Stat(fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[19]))


def tracer_pid(pid: int) -> int:
    """The pid that ptraces ``pid``; 0 for none, or when it cannot be told."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            return next((int(ln.split()[1]) for ln in f if ln.startswith(b"TracerPid:")), 0)
    except (OSError, ValueError, IndexError):
        return 0


def tree(root: int, seeds: Iterable[int] = ()) -> list[int]:
    """Live processes traced by ``root`` or in its group, the given ones, and their descendants.

    Zombies are left out: they are only waiting for init to reap them.
    """
    stats = {int(name): stat(int(name)) for name in os.listdir("/proc") if name.isdigit()}
    members = {pid for pid in seeds if stats.get(pid) is not None}
    children: dict[int, list[int]] = {}
    for pid, st in stats.items():
        if st is not None and st.state not in "ZX":
            children.setdefault(st.ppid, []).append(pid)
            if st.pgrp == root or tracer_pid(pid) == root:
                members.add(pid)
    todo = [root, *members]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in members:
                members.add(child)
                todo.append(child)
    return sorted(members - {root, os.getpid()})


def kill(pid: int, sig: int, *, group: bool = False) -> None:
    """Signals a process (or, with ``group``, its process group); one already gone is no error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        (os.killpg if group else os.kill)(pid, sig)
