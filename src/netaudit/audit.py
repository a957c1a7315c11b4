"""The one place that folds events by destination and judges them.

The log is read once, as a stream, and only per-destination tallies are kept in memory;
each distinct destination is matched against the allowlist once.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Callable, Union

from .attribute import Attributed, Lineage
from .errors import TraceError
from .model import (
    AuditResult,
    Destination,
    Endpoint,
    Finding,
    Mark,
    NetEvent,
    Process,
    Syscall,
    Verdict,
)
from .parse import Parser
from .rules import Allowlist

_Key = tuple[str, str, Union[Endpoint, str], bool]
#: The verdict of a destination that no allowlist has judged yet.
UNJUDGED = Verdict(None)


class _Tally:
    """A destination while the stream is still being read."""

    __slots__ = ("count", "first_time", "last", "pids", "programs", "results", "socks", "syscalls")

    def __init__(self, first_time: float | None) -> None:
        self.count = 0
        self.last: Process | None = None
        self.first_time = first_time
        self.pids: set[int] = set()
        self.programs: set[str] = set()
        self.syscalls: set[Syscall] = set()
        self.socks: set[str] = set()
        self.results: dict[str, int] = {}


class Folder:
    """Folds attributed events per (run, test, destination, after_test) as they stream by.

    Folding is apart from judging so that a long-lived consumer (the supervisor of a test
    session) can fold one stream and let each run judge its part with its own allowlist.
    """

    def __init__(self) -> None:
        self._tallies: dict[_Key, _Tally] = {}
        self._findings: dict[Finding, None] = {}

    def feed(
        self, items: Iterable[Attributed], on_mark: Callable[[Mark], None] | None = None
    ) -> None:
        tallies, findings = self._tallies, self._findings
        for item in items:
            if type(item) is not NetEvent:
                if isinstance(item, Finding):
                    findings.setdefault(item)
                elif on_mark is not None and isinstance(item, Mark):
                    on_mark(item)
                continue
            call, process, test, after_test, run = item
            dest = call.dest
            key: _Key = (run, test, call.raw if dest is None else dest, after_test)
            tally = tallies.get(key)
            if tally is None:
                tally = tallies[key] = _Tally(call.time)
            tally.count += 1
            if tally.last is not process:  # a process's calls tend to come in runs
                tally.last = process
                tally.pids.add(process.pid)
                tally.programs.add(process.program)
            tally.syscalls.add(call.syscall)
            if call.sock:
                tally.socks.add(call.sock)
            results = tally.results
            results[call.result] = results.get(call.result, 0) + 1

    def destinations(self, run: str | None = None) -> tuple[Destination, ...]:
        """Unjudged, in first-seen order: every run's, or only ``run``'s."""
        return tuple(
            _destination(key, tally)
            for key, tally in self._tallies.items()
            if run is None or key[0] == run
        )

    def findings(self, run: str | None = None) -> tuple[Finding, ...]:
        return tuple(f for f in self._findings if run is None or f.run == run)


def merge(a: Destination, b: Destination) -> Destination:
    """One destination from two folds of the same (test, destination), e.g. two xdist workers."""
    results: dict[str, int] = dict(a.results)
    for result, n in b.results:
        results[result] = results.get(result, 0) + n
    firsts = [t for t in (a.first_time, b.first_time) if t is not None]
    return replace(
        a,
        count=a.count + b.count,
        pids=tuple(sorted({*a.pids, *b.pids})),
        programs=tuple(sorted({*a.programs, *b.programs})),
        syscalls=tuple(sorted({*a.syscalls, *b.syscalls})),
        results=tuple(sorted(results.items())),
        socks=tuple(sorted({*a.socks, *b.socks})),
        first_time=min(firsts) if firsts else None,
        where=tuple(sorted({*a.where, *b.where})),
    )


def judge(destinations: Iterable[Destination], allowlist: Allowlist) -> tuple[Destination, ...]:
    """Allowed by the first matching rule, or a violation; each endpoint is matched once."""
    verdicts: dict[Endpoint | None, Verdict] = {}
    judged = []
    for d in destinations:
        verdict = verdicts.get(d.endpoint)
        if verdict is None:
            rule = allowlist.match(d.endpoint)
            verdict = verdicts[d.endpoint] = Verdict(None if rule is None else rule.name)
        judged.append(replace(d, verdict=verdict))
    return tuple(judged)


def audit(items: Iterable[Attributed], allowlist: Allowlist) -> AuditResult:
    """Folds and judges a whole stream of attributed events."""
    folder = Folder()
    folder.feed(items)
    return AuditResult(judge(folder.destinations(), allowlist), folder.findings())


def _destination(key: _Key, tally: _Tally) -> Destination:
    _, test, where, after_test = key
    return Destination(
        test=test,
        endpoint=None if isinstance(where, str) else where,
        raw=where if isinstance(where, str) else "",
        verdict=UNJUDGED,
        count=tally.count,
        pids=tuple(sorted(tally.pids)),
        programs=tuple(sorted(tally.programs)),
        syscalls=tuple(sorted(s.value for s in tally.syscalls)),
        results=tuple(sorted(tally.results.items())),
        socks=tuple(sorted(tally.socks)),
        after_test=after_test,
        first_time=tally.first_time,
    )


def audit_lines(lines: Iterable[str], allowlist: Allowlist) -> AuditResult:
    """The whole pipeline on strace output: parse, attribute, judge."""
    parser = Parser()
    with _collector_paused():
        result = audit(Lineage().attribute(parser.records(lines)), allowlist)
    return replace(result, stats=parser.stats)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The pipeline makes no reference cycles, but it does keep one tally per destination;
    with tens of thousands of them, the cycle collector's passes cost more than the parsing."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def audit_log(path: str | os.PathLike[str], allowlist: Allowlist) -> AuditResult:
    """Judges a strace log file, read once as a stream.

    Bytes that are not UTF-8 survive as escapes, never as errors; a log that cannot be read
    (missing, unreadable, an I/O error midway) is a TraceError: the audit is incomplete.
    """
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as log:
            return audit_lines(log, allowlist)
    except OSError as err:
        raise TraceError(f"cannot read the strace log {os.fspath(path)}: {err.strerror}") from err
