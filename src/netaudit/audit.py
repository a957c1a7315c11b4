"""The one place that folds events by destination and judges them.

The log is read once, as a stream. Folding keeps a compact tally per destination, at most
``spill.LIMIT`` of them in memory: a run that reaches more (a scan) spills them to a private
directory and reads them back grouped, in first-seen order (see ``spill``). Each distinct
destination is matched against the allowlist once, and judged destinations are kept on disk
when there are more than ``spill.SMALL``: time and memory do not grow with the number of
distinct destinations, only the disk they take.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional, Union, overload

from . import spill
from .errors import TraceError
from .model import (
    AF_INET,
    AF_INET6,
    DNS_QUERY,
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
from .rules import ANY_IP, RESOLVED, Allowlist, IPAddress, Rule, ip_of
from .spill import Grouping, Kept, Scratch, Spilled

if TYPE_CHECKING:  # policy.py reads markers with the YAML loader, which judging never needs
    from .attribute import Attributed
    from .policy import TestPolicy

#: (run, test, where, after_test): ``where`` is the endpoint, an unparsed line, or an endpoint
#: with what the call was beyond a call to it (a DNS query, a probe: model.PROBE).
_Key = tuple[str, str, Union[Endpoint, str, tuple[Endpoint, str]], bool]
#: The verdict of a destination that no allowlist has judged yet.
UNJUDGED = Verdict(None)

#: A fold key as spilled: run, test, after_test, family (None: an unparsed line), address,
#: port, scope, raw. Everything after after_test names the destination (``_route``).
_Stored = tuple[str, str, bool, Optional[str], str, Optional[int], str, str]
#: A tally as spilled: first-seen order, count, first time, then pids, programs, syscalls,
#: socket types, results and names. The commonest tally (every call alike) holds its one pid,
#: program, syscall, socket type ("" for none) and result as themselves, not as tuples: a scan
#: spills hundreds of thousands, and each object costs. Otherwise each is a sorted tuple
#: (results as (result, count) pairs), and names always are.
_Value = tuple[Any, ...]


class _More:
    """What the calls to a destination had in common until they did not: sets from then on."""

    __slots__ = ("last", "names", "pids", "programs", "results", "socks", "syscalls")

    def __init__(self, entry: list[Any]) -> None:
        count, _, _, process, syscall, result, sock, names, _ = entry
        self.last: Process = process
        self.pids = {process.pid}
        self.programs = {process.program}
        self.syscalls: set[Syscall] = {syscall}
        self.socks = {sock} if sock else set()
        self.results = {result: count - 1}  # the call that differed is added next
        self.names = set(names)


class Folder:
    """Folds attributed events per (run, test, destination, after_test) as they stream by.

    Folding is apart from judging so that a long-lived consumer (the supervisor of a test
    session) can fold one stream and let each run judge its part with its own allowlist.
    Memory is bounded: past ``limit`` tallies, they are spilled to ``scratch`` (a private
    directory of the Folder's own unless one is given) and grouped back when asked for.
    """

    def __init__(self, *, limit: int | None = None, scratch: Scratch | None = None) -> None:
        #: Per key: count, first-seen order, first time, then the first call's process,
        #: syscall, result, socket type and names, and a _More once a call differed.
        self._tallies: dict[_Key, list[Any]] = {}
        self._findings: dict[Finding, None] = {}
        #: Every (run, test) that has a tally, spilled or not.
        self._tests: dict[tuple[str, str], None] = {}
        self._limit = spill.LIMIT if limit is None else limit
        self._seen = 0
        self.scratch = scratch or Scratch()
        self._spilled: Grouping[_Stored, _Value] | None = None

    def feed(
        self, items: Iterable[Attributed], on_mark: Callable[[Mark], None] | None = None
    ) -> None:
        tallies, findings, limit, seen = self._tallies, self._findings, self._limit, self._seen
        tests = self._tests
        try:
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
                seen += 1
                if tally is None:
                    tallies[key] = [1, seen, call.time, process, call.syscall, call.result,
                                    call.sock, names, None]  # fmt: skip
                    tests[run, test] = None
                    if len(tallies) > limit:
                        self._spill()
                    continue
                tally[0] += 1
                more = tally[8]
                if more is None:
                    if (
                        process is tally[3]
                        and call.syscall is tally[4]
                        and call.result == tally[5]
                        and call.sock == tally[6]
                        and names == tally[7]
                    ):
                        continue  # the commonest case: a call like the first
                    more = tally[8] = _More(tally)
                # Written out, not a method: a million events of few destinations come here.
                if more.last is not process:  # a process's calls tend to come in runs
                    more.last = process
                    more.pids.add(process.pid)
                    more.programs.add(process.program)
                more.syscalls.add(call.syscall)
                if call.sock:
                    more.socks.add(call.sock)
                results = more.results
                results[call.result] = results.get(call.result, 0) + 1
                if names:
                    more.names.update(names)
        finally:
            self._seen = seen

    def _spill(self) -> None:
        if self._spilled is None:
            self._spilled = Grouping(_combine, self.scratch, _route, limit=self._limit)
        tallies = self._tallies
        self._spilled.spill(_stored(*tallies.popitem()) for _ in range(len(tallies)))

    def destinations(
        self,
        run: str | None = None,
        tests: Mapping[str, str] | None = None,
        test: str | None = None,
    ) -> Kept:
        """Unjudged, in first-seen order: every run's, or only ``run``'s (and of that, only
        test key ``test``'s, if given).

        ``tests`` renames test keys (a supervisor's keys to nodeids); destinations that then
        fall together are merged. More than ``spill.SMALL`` come back on disk (a Spilled, in
        this Folder's Scratch).
        """
        return spill.store(self.records(run, tests, test), self.scratch)

    def records(
        self,
        run: str | None = None,
        tests: Mapping[str, str] | None = None,
        test: str | None = None,
    ) -> Iterator[spill.Record]:
        """What ``destinations`` holds, as spill stores it, as a stream."""
        keep = None
        if run is not None:
            keep = (lambda key: key[0] == run) if test is None else (
                lambda key: key[0] == run and key[1] == test)  # fmt: skip
        one = run is not None and test is not None
        if one and (run, test) not in self._tests:
            return iter(())  # asked as each test ends: most tests folded nothing
        rename = None if tests is None else _renaming(tests)
        if self._spilled is None:
            tallies: Iterable[tuple[_Key, list[Any]]] = self._tallies.items()
            if one:  # only the test's own tallies stored, not every test's each time
                tallies = [(key, tally) for key, tally in tallies if key[1] == test]
            items: Iterable[tuple[_Stored, _Value]] = spill.group(
                (_stored(key, tally) for key, tally in tallies),
                _combine,
                _first_seen,
                keep,
                rename,
            )
        else:
            self._spill()
            items = self._spilled.grouped(_first_seen, keep, rename)
        return (_record(key, value) for key, value in items)

    def findings(self, run: str | None = None) -> tuple[Finding, ...]:
        return tuple(f for f in self._findings if run is None or f.run == run)

    def tests(self, run: str) -> tuple[str, ...]:
        """The test keys of ``run`` that something was folded for, in first-seen order."""
        return tuple(test for each, test in self._tests if each == run)

    def close(self) -> None:
        """Removes what was spilled, and the destinations handed out from it."""
        self.scratch.close()


def _stored(key: _Key, tally: list[Any]) -> tuple[_Stored, _Value]:
    run, test, where, after_test = key
    if isinstance(where, str):
        stored: _Stored = (run, test, after_test, None, "", None, "", where)
    else:
        endpoint, raw = where if isinstance(where, tuple) else (where, "")
        stored = (run, test, after_test, endpoint.family, endpoint.address, endpoint.port,
                  endpoint.scope_id, raw)  # fmt: skip
    count, seen, time, process, syscall, result, sock, names, more = tally
    value: _Value
    if more is None:
        named = tuple(sorted(set(names))) if names else ()
        value = (seen, count, time, process.pid, process.program, _NAMES[syscall], sock,
                 result, named)  # fmt: skip
    else:
        value = (seen, count, time, tuple(sorted(more.pids)), tuple(sorted(more.programs)),
                 tuple(sorted(_NAMES[s] for s in more.syscalls)), tuple(sorted(more.socks)),
                 tuple(sorted(more.results.items())), tuple(sorted(more.names)))  # fmt: skip
    return stored, value


#: Each syscall's name as a plain str (marshal takes no subclass of it).
_NAMES = {syscall: syscall.value for syscall in Syscall}


def _route(key: _Stored) -> tuple[Any, ...]:
    return key[3:]


def _first_seen(item: tuple[_Stored, _Value]) -> int:
    first: int = item[1][0]
    return first


def _renaming(tests: Mapping[str, str]) -> Callable[[_Stored], _Stored]:
    def rename(key: _Stored) -> _Stored:
        test = tests.get(key[1])
        return key if test is None else (key[0], test, *key[2:])

    return rename


def _combine(a: _Value, b: _Value) -> _Value:
    """Two tallies of one destination; the earlier one's first time stands (when known).

    Written out, not in helpers: a scan combines a few hundred thousand pairs, nearly all
    alike but for their counts.
    """
    if b[0] < a[0]:
        a, b = b, a
    seen, count, time, pids, programs, syscalls, socks, results, names = a
    other = b[3]
    if pids != other:  # a scan's destination is often reached from two processes
        if type(pids) is int and type(other) is int:
            pids = (pids, other) if pids < other else (other, pids)
        else:
            pids = tuple(sorted({*_several(pids), *_several(other)}))
    if programs != b[4]:
        programs = tuple(sorted({*_several(programs), *_several(b[4])}))
    if syscalls != b[5]:
        syscalls = tuple(sorted({*_several(syscalls), *_several(b[5])}))
    if socks != b[6]:
        socks = tuple(sorted({*_socks(socks), *_socks(b[6])}))
    if results != b[7] or type(results) is not str:
        counts = dict(_results(results, count))
        for result, n in _results(b[7], b[1]):
            counts[result] = counts.get(result, 0) + n
        results = tuple(sorted(counts.items()))
    if names != b[8]:
        names = tuple(sorted({*names, *b[8]}))
    first = time if time is not None else b[2]
    return (seen, count + b[1], first, pids, programs, syscalls, socks, results, names)


def _several(value: Any) -> tuple[Any, ...]:
    return value if type(value) is tuple else (value,)


def _socks(value: Any) -> tuple[str, ...]:
    if type(value) is tuple:
        return value
    return (value,) if value else ()


def _results(value: Any, count: int) -> tuple[tuple[str, int], ...]:
    return ((value, count),) if type(value) is str else value


def _record(key: _Stored, value: _Value) -> spill.Record:
    """A folded destination as spill stores it: unjudged, with no call sites yet."""
    _, test, after_test, family, address, port, scope, raw = key
    _, count, time, pids, programs, syscalls, socks, results, names = value
    return (test, family, address, port, scope, raw, None, "", count, _several(pids),
            _several(programs), _several(syscalls), _results(results, count), _socks(socks),
            after_test, time, names, (), False)  # fmt: skip


@overload
def judge(
    destinations: tuple[Destination, ...] | list[Destination],
    allowlist: Allowlist,
    policies: Mapping[str, TestPolicy] | None = None,
) -> tuple[Destination, ...]: ...


@overload
def judge(
    destinations: Iterable[Destination],
    allowlist: Allowlist,
    policies: Mapping[str, TestPolicy] | None = None,
) -> Kept: ...


def judge(
    destinations: Iterable[Destination],
    allowlist: Allowlist,
    policies: Mapping[str, TestPolicy] | None = None,
) -> Kept:
    """Allowed by the first matching rule, or a violation. ``policies`` are the tests' own
    markers, by nodeid.

    Verdicts are memoised per (endpoint, names, test); the test counts only where it can change
    the verdict (a test with a marker, or an allowlist with rules scoped to tests), so a plain
    allowlist still matches each endpoint once. A probe that only resolved (model.PROBE) sent
    nothing: it is not judged. A DNS query is judged as the egress to its resolver, without
    names: the names it asked for say nothing about where the query went.

    A tuple or list comes back a tuple; destinations kept on disk, or a stream of more than
    ``spill.SMALL``, come back on disk (in a Scratch of their own).
    """
    judging = _Judge(allowlist, policies)
    if isinstance(destinations, (tuple, list)):
        return tuple(map(judging.destination, destinations))
    if isinstance(destinations, Spilled):
        return spill.store(map(judging.record, destinations.records()), Scratch())
    return spill.collect(map(judging.destination, destinations))


#: How many verdicts (and scoped candidates) are remembered before the memo starts afresh.
MEMO = 1 << 12
_NO_NAMES: frozenset[str] = frozenset()
_RESOLVED = Verdict(RESOLVED, "builtin")


class _Judge:
    """One judgement: the memo of verdicts, and the rules each verdict is sought among."""

    def __init__(self, allowlist: Allowlist, policies: Mapping[str, TestPolicy] | None) -> None:
        self._allowlist = allowlist
        self._policies = policies or {}
        self._plain = _Matcher(allowlist)
        self._scoped = _Scoped(allowlist) if allowlist.scoped() else None
        self._per_test: dict[str, _Matcher] = {}
        self._verdicts: dict[tuple[Any, ...], Verdict] = {}

    def destination(self, d: Destination) -> Destination:
        endpoint = d.endpoint
        if d.raw == PROBE and endpoint is not None:
            return _judged(d, _RESOLVED)
        names = frozenset(d.names) if d.names and d.query is None else _NO_NAMES
        key = (endpoint, names, self._test(d.test))
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._remember(key, self._decide(endpoint, names, d.test))
        return _judged(d, verdict)

    def record(self, r: spill.Record) -> spill.Record:
        """The same judgement of a destination as spill stores it."""
        test, family, address, port, scope, raw = r[:6]
        if family is not None and raw == PROBE:
            verdict = _RESOLVED
        else:
            query = family is not None and raw.startswith(DNS_QUERY)
            names = frozenset(r[16]) if r[16] and not query else _NO_NAMES
            key = (family, address, port, scope, names, self._test(test))
            known = self._verdicts.get(key)
            if known is None:
                endpoint = None if family is None else Endpoint(family, address, port, scope)
                known = self._remember(key, self._decide(endpoint, names, test))
            verdict = known
        return (*r[:6], verdict.rule, verdict.by, *r[8:])

    def _test(self, test: str) -> str | None:
        """The test, where it can change the verdict."""
        return test if test in self._policies or self._scoped is not None else None

    def _remember(self, key: tuple[Any, ...], verdict: Verdict) -> Verdict:
        if len(self._verdicts) >= MEMO:
            self._verdicts.clear()
        self._verdicts[key] = verdict
        return verdict

    def _decide(self, endpoint: Endpoint | None, names: frozenset[str], test: str) -> Verdict:
        policy = self._policies.get(test)
        if policy is not None:
            rules = self._per_test.get(test)
            if rules is None:
                rules = self._per_test[test] = _Matcher(policy.applied_to(self._allowlist))
            rule = rules.match(endpoint, names, test or None)
        elif self._scoped is not None:
            rule = self._scoped.match(endpoint, names, test or None)
        else:
            rule = self._plain.match(endpoint, names)
        return _verdict(rule, policy)


def _judged(d: Destination, verdict: Verdict) -> Destination:
    """``d`` with ``verdict``: what dataclasses.replace makes, built directly (it costs 10 us
    a destination, which a report of 250,000 cannot afford; a test checks both agree)."""
    judged: Destination = object.__new__(Destination)
    judged.__dict__.update(d.__dict__)
    judged.__dict__["verdict"] = verdict
    return judged


class _Matcher:
    """An allowlist's rules, sought among those that can allow the endpoint's family only
    (see Rule.matches: an IP rule allows only IP endpoints, IPv4 and v4-mapped IPv6 for an
    IPv4 rule; another rule only its own family), in order. A plain IP rule (no host, no
    tests) is checked as integers (``_Plain``): a scan's every destination is new."""

    def __init__(self, allowlist: Allowlist) -> None:
        self.rules = allowlist.all_rules()
        self._by_family: dict[str, tuple[tuple[Rule, _Plain | None], ...]] = {}

    def candidates(self, family: str) -> tuple[tuple[Rule, _Plain | None], ...]:
        found = self._by_family.get(family)
        if found is None:
            families = _RULE_FAMILIES.get(family, {family})
            found = self._by_family[family] = tuple(
                (rule, _Plain.of(rule)) for rule in self.rules if rule.family in families
            )
        return found

    def match(
        self, endpoint: Endpoint | None, names: frozenset[str], test: str | None = None
    ) -> Rule | None:
        if endpoint is None:
            return None
        ip: IPAddress | None = None
        looked = False
        for rule, plain in self.candidates(endpoint.family):
            if plain is None:
                if rule.matches(endpoint, names, test):
                    return rule
                continue
            if not looked:
                ip, looked = ip_of(endpoint), True
            if ip is not None and plain.allows(ip, endpoint.port):
                return rule
        return None


#: The rule families that can allow an IP endpoint: IPv4 rules allow v4-mapped IPv6 too.
_RULE_FAMILIES = {
    AF_INET: frozenset({AF_INET, ANY_IP}),
    AF_INET6: frozenset({AF_INET, AF_INET6, ANY_IP}),
}


class _Plain(NamedTuple):
    """What an IP rule with no host and no tests allows, as integers: what Rule.matches
    decides for such a rule, in a third of the time (a test checks both agree)."""

    version: int
    #: (version, network address, netmask) of each network.
    networks: tuple[tuple[int, int, int], ...]
    ports: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, rule: Rule) -> _Plain | None:
        if rule.hosts or rule.tests or rule.family not in (AF_INET, AF_INET6):
            return None
        networks = tuple((n.version, int(n.network_address), int(n.netmask)) for n in rule.networks)
        return cls(4 if rule.family == AF_INET else 6, networks, rule.ports)

    def allows(self, ip: IPAddress, port: int | None) -> bool:
        version = ip.version
        if version != self.version:
            return False
        if self.networks:
            value = int(ip)
            if not any(v == version and value & mask == net for v, net, mask in self.networks):
                return False
        return not self.ports or (port is not None and any(a <= port <= b for a, b in self.ports))


class _Scoped:
    """An allowlist with rules scoped to tests: which rules match an endpoint is worked out once
    per endpoint, and then only their scopes are checked for each test."""

    def __init__(self, allowlist: Allowlist) -> None:
        self.matcher = _Matcher(allowlist)
        self.candidates: dict[tuple[Endpoint, frozenset[str]], tuple[Rule, ...]] = {}

    def match(
        self, endpoint: Endpoint | None, names: frozenset[str], test: str | None
    ) -> Rule | None:
        if endpoint is None:
            return None
        found = self.candidates.get((endpoint, names))
        if found is None:
            if len(self.candidates) >= MEMO:
                self.candidates.clear()
            found = self.candidates[endpoint, names] = tuple(
                rule
                for rule, _ in self.matcher.candidates(endpoint.family)
                if _unscoped(rule).matches(endpoint, names)
            )
        return next((r for r in found if not r.tests or (test and r.in_scope(test))), None)


def _unscoped(rule: Rule) -> Rule:
    return replace(rule, tests=()) if rule.tests else rule


def _verdict(rule: Rule | None, policy: TestPolicy | None) -> Verdict:
    if rule is None:
        return UNJUDGED
    if rule.builtin:
        return Verdict(rule.name, "builtin")
    return Verdict(rule.name, "marker" if policy and rule in policy.allow else "allowlist")


def audit(items: Iterable[Attributed], allowlist: Allowlist) -> AuditResult:
    """Folds and judges a whole stream of attributed events."""
    folder = Folder()
    try:
        folder.feed(items)
        judging = _Judge(allowlist, None)
        destinations = spill.store(map(judging.record, folder.records()), Scratch())
        return AuditResult(destinations, folder.findings())
    finally:
        folder.close()  # what was spilled; the judged destinations have a Scratch of their own


def audit_lines(lines: Iterable[str], allowlist: Allowlist) -> AuditResult:
    """The whole pipeline on strace output: parse, attribute, judge."""
    # Here, not at the top: a test session judges its run's folded part and reads no log
    # (importing the parser cost it 16 ms of start-up: docs/performance.md).
    from .attribute import Lineage
    from .parse import Parser

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
