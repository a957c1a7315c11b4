"""The one place that judges events and folds them by destination.

Each distinct destination is matched against the allowlist once; the log is read once,
as a stream, and only per-destination tallies are kept in memory.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Union

from .attribute import Attributed, Lineage
from .errors import TraceError
from .model import AuditResult, Destination, Endpoint, Finding, Process, Syscall, Verdict
from .parse import Parser
from .rules import Allowlist

_Key = tuple[str, Union[Endpoint, str], bool]


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


def audit(items: Iterable[Attributed], allowlist: Allowlist) -> AuditResult:
    """Judges attributed events: allowed by the first matching rule, or a violation."""
    verdicts: dict[Endpoint | None, Verdict] = {}
    tallies: dict[_Key, _Tally] = {}
    findings: dict[Finding, None] = {}
    for item in items:
        if isinstance(item, Finding):
            findings.setdefault(item)
            continue
        call, process, test, after_test = item
        dest = call.dest
        key: _Key = (test, call.raw if dest is None else dest, after_test)
        tally = tallies.get(key)
        if tally is None:
            tally = tallies[key] = _Tally(call.time)
            if dest not in verdicts:
                rule = allowlist.match(dest)
                verdicts[dest] = Verdict(None if rule is None else rule.name)
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
    destinations = tuple(
        _destination(key, tally, verdicts[None if isinstance(key[1], str) else key[1]])
        for key, tally in tallies.items()
    )
    return AuditResult(destinations=destinations, findings=tuple(findings))


def _destination(key: _Key, tally: _Tally, verdict: Verdict) -> Destination:
    test, where, after_test = key
    return Destination(
        test=test,
        endpoint=None if isinstance(where, str) else where,
        raw=where if isinstance(where, str) else "",
        verdict=verdict,
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
