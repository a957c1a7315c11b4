"""The one place that folds events by destination and judges them.

The log is read once, as a stream, and only per-destination tallies are kept in memory;
each distinct destination is matched against the allowlist once.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Union

from .attribute import Attributed, Lineage
from .errors import TraceError
from .model import (
    PROBE,
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
from .rules import RESOLVED, Allowlist, Rule

if TYPE_CHECKING:  # policy.py reads markers with the YAML loader, which judging never needs
    from .policy import TestPolicy

#: (run, test, where, after_test): ``where`` is the endpoint, an unparsed line, or an endpoint
#: with what the call was beyond a call to it (a DNS query, a probe: model.PROBE).
_Key = tuple[str, str, Union[Endpoint, str, tuple[Endpoint, str]], bool]
#: The verdict of a destination that no allowlist has judged yet.
UNJUDGED = Verdict(None)


class _Tally:
    """A destination while the stream is still being read."""

    __slots__ = (
        "count", "first_time", "last", "names", "pids", "programs", "results", "socks", "syscalls"
    )  # fmt: skip

    def __init__(self, first_time: float | None) -> None:
        self.count = 0
        self.last: Process | None = None
        self.first_time = first_time
        self.pids: set[int] = set()
        self.programs: set[str] = set()
        self.syscalls: set[Syscall] = set()
        self.socks: set[str] = set()
        self.results: dict[str, int] = {}
        self.names: set[str] = set()


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
            call, process, test, after_test, run, names = item
            dest = call.dest
            raw = call.raw
            where = raw if dest is None else (dest, raw) if raw else dest
            key: _Key = (run, test, where, after_test)
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
            if names:
                tally.names.update(names)

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
        names=tuple(sorted({*a.names, *b.names})),
        where=tuple(sorted({*a.where, *b.where})),
    )


def judge(
    destinations: Iterable[Destination],
    allowlist: Allowlist,
    policies: Mapping[str, TestPolicy] | None = None,
) -> tuple[Destination, ...]:
    """Allowed by the first matching rule, or a violation. ``policies`` are the tests' own
    markers, by nodeid.

    Verdicts are memoised per (endpoint, names, test); the test counts only where it can change
    the verdict (a test with a marker, or an allowlist with rules scoped to tests), so a plain
    allowlist still matches each endpoint once. A probe that only resolved (model.PROBE) sent
    nothing: it is not judged. A DNS query is judged as the egress to its resolver, without
    names: the names it asked for say nothing about where the query went.
    """
    verdicts: dict[tuple[Endpoint | None, frozenset[str], str | None], Verdict] = {}
    per_test: dict[str, Allowlist] = {}
    scoped = _Scoped(allowlist) if allowlist.scoped() else None
    judged = []
    for d in destinations:
        if d.raw == PROBE and d.endpoint is not None:
            judged.append(replace(d, verdict=Verdict(RESOLVED, "builtin")))
            continue
        names = frozenset(d.names) if d.query is None else frozenset()
        policy = policies.get(d.test) if policies else None
        test = d.test if policy is not None or scoped is not None else None
        key = (d.endpoint, names, test)
        verdict = verdicts.get(key)
        if verdict is None:
            if policy is not None:
                rules = per_test.get(d.test)
                if rules is None:
                    rules = per_test[d.test] = policy.applied_to(allowlist)
                rule = rules.match(d.endpoint, names, d.test or None)
            elif scoped is not None:
                rule = scoped.match(d.endpoint, names, d.test or None)
            else:
                rule = allowlist.match(d.endpoint, names)
            verdict = verdicts[key] = _verdict(rule, policy)
        judged.append(replace(d, verdict=verdict))
    return tuple(judged)


class _Scoped:
    """An allowlist with rules scoped to tests: which rules match an endpoint is worked out once
    per endpoint, and then only their scopes are checked for each test."""

    def __init__(self, allowlist: Allowlist) -> None:
        self.rules = allowlist.all_rules()
        self.plain = tuple(replace(rule, tests=()) if rule.tests else rule for rule in self.rules)
        self.candidates: dict[tuple[Endpoint, frozenset[str]], tuple[Rule, ...]] = {}

    def match(
        self, endpoint: Endpoint | None, names: frozenset[str], test: str | None
    ) -> Rule | None:
        if endpoint is None:
            return None
        found = self.candidates.get((endpoint, names))
        if found is None:
            found = self.candidates[endpoint, names] = tuple(
                rule
                for rule, plain in zip(self.rules, self.plain)
                if plain.matches(endpoint, names)
            )
        return next((r for r in found if not r.tests or (test and r.in_scope(test))), None)


def _verdict(rule: Rule | None, policy: TestPolicy | None) -> Verdict:
    if rule is None:
        return UNJUDGED
    if rule.builtin:
        return Verdict(rule.name, "builtin")
    return Verdict(rule.name, "marker" if policy and rule in policy.allow else "allowlist")


def audit(items: Iterable[Attributed], allowlist: Allowlist) -> AuditResult:
    """Folds and judges a whole stream of attributed events."""
    folder = Folder()
    folder.feed(items)
    return AuditResult(judge(folder.destinations(), allowlist), folder.findings())


def _destination(key: _Key, tally: _Tally) -> Destination:
    _, test, where, after_test = key
    endpoint: Endpoint | None
    if isinstance(where, str):
        endpoint, raw = None, where
    elif isinstance(where, tuple):
        endpoint, raw = where
    else:
        endpoint, raw = where, ""
    return Destination(
        test=test,
        endpoint=endpoint,
        raw=raw,
        verdict=UNJUDGED,
        count=tally.count,
        pids=tuple(sorted(tally.pids)),
        programs=tuple(sorted(tally.programs)),
        syscalls=tuple(sorted(s.value for s in tally.syscalls)),
        results=tuple(sorted(tally.results.items())),
        socks=tuple(sorted(tally.socks)),
        after_test=after_test,
        first_time=tally.first_time,
        names=tuple(sorted(tally.names)),
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
