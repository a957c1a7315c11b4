"""Judging: one verdict per destination, folded with its evidence."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netaudit import spill
from netaudit.allowlist import DEFAULT, loads
from netaudit.attribute import Attributed
from netaudit.audit import UNJUDGED, Folder, _Matcher, _Plain, audit, audit_lines, judge
from netaudit.model import (
    SESSION,
    AuditResult,
    Destination,
    Endpoint,
    Finding,
    HazardKind,
    Mark,
    MarkVerb,
    NetCall,
    NetEvent,
    Process,
    Syscall,
    Verdict,
)
from netaudit.rules import Rule, ip_of

PY = Process(10, None, "python3")
CURL = Process(11, 10, "curl")
PUBLIC = Endpoint("AF_INET", "93.184.216.34", 443)
LOOP = Endpoint("AF_INET", "127.0.0.1", 5432)


def event(
    dest: Endpoint | None, process: Process = PY, result: str = "0", raw: str = ""
) -> NetEvent:
    return NetEvent(NetCall(Syscall.CONNECT, process.pid, 1.5, 3, dest, result, raw=raw), process)


def test_calls_to_one_destination_fold_into_one_entry_with_their_evidence() -> None:
    result = audit(
        [event(PUBLIC), event(PUBLIC, CURL, "ENETUNREACH"), event(PUBLIC, CURL, "ENETUNREACH")],
        DEFAULT,
    )
    (d,) = result.destinations
    assert (d.count, d.pids, d.programs) == (3, (10, 11), ("curl", "python3"))
    assert d.results == (("0", 1), ("ENETUNREACH", 2))
    assert not d.verdict.allowed
    assert result.violations == (d,)
    assert not result.clean


def test_an_allowed_destination_names_the_first_rule_that_matched() -> None:
    allowlist = loads(
        "version: 1\nallowlist:\n  - name: pg\n    family: AF_INET\n    addr: 127.0.0.1\n"
        "    port: 5432\n"
    )
    result = audit([event(LOOP)], allowlist)
    assert [d.verdict.rule for d in result.destinations] == ["pg"]
    (builtin,) = audit([event(LOOP)], DEFAULT).destinations
    assert builtin.verdict.rule == "loopback (IPv4)"
    assert result.clean


def test_an_unparsed_line_is_a_violation_of_its_own() -> None:
    result = audit([event(None, raw="10 connect(3, {garbled"), event(LOOP)], DEFAULT)
    (unparsed,) = result.violations
    assert unparsed.family == "UNPARSED"
    assert unparsed.address == "10 connect(3, {garbled"


def test_the_same_destination_in_two_tests_is_two_entries() -> None:
    a = event(PUBLIC)._replace(test="t::a")
    b = event(PUBLIC)._replace(test="t::b")
    assert [d.test for d in audit([a, b, a], DEFAULT).destinations] == ["t::a", "t::b"]


def test_a_finding_makes_the_audit_incomplete_even_with_no_violation() -> None:
    finding = Finding(HazardKind.IO_URING, 10, "python3")
    result = audit([event(LOOP), finding, finding], DEFAULT)
    assert result.findings == (finding,)
    assert not result.violations
    assert not result.clean


def test_auditing_lines_counts_what_was_read() -> None:
    lines = [
        "10  1795634279.426813 connect(3, {sa_family=AF_INET, sin_port=htons(443), "
        'sin_addr=inet_addr("93.184.216.34")}, 16) = -1 ENETUNREACH (Network is unreachable)\n',
        "10  1795634279.5 +++ exited with 0 +++\n",
    ]
    result = audit_lines(lines, DEFAULT)
    assert (result.stats.lines, result.stats.calls, result.stats.unparsed) == (2, 1, 0)
    assert [d.endpoint for d in result.violations] == [PUBLIC]


# Folding by run, judging once per endpoint, merging folds.

RUN_A = "0123456789abcdef"
RUN_B = "fedcba9876543210"


def in_run(
    run: str, test: str, dest: Endpoint | None = PUBLIC, process: Process = PY, after: bool = False
) -> NetEvent:
    return event(dest, process)._replace(test=test, run=run, after_test=after)


def test_a_folder_keeps_runs_apart() -> None:
    folder = Folder()
    folder.feed(
        [
            in_run(RUN_A, ":0"),
            in_run(RUN_B, ":0", process=CURL),
            in_run(RUN_A, ":0"),
            in_run(RUN_B, SESSION),
        ]
    )
    (a,) = folder.destinations(RUN_A)
    assert (a.test, a.endpoint, a.count, a.pids) == (":0", PUBLIC, 2, (10,))
    assert [(d.test, d.count, d.pids) for d in folder.destinations(RUN_B)] == [
        (":0", 1, (11,)),
        (SESSION, 1, (10,)),
    ]
    assert len(folder.destinations()) == 3  # every run's, in first-seen order
    assert next(iter(folder.destinations())) == a
    assert folder.destinations("0000000000000000") == ()
    assert all(d.verdict == UNJUDGED for d in folder.destinations())


def test_a_folder_keeps_a_tests_leftover_calls_apart_from_its_own() -> None:
    folder = Folder()
    folder.feed([in_run(RUN_A, ":0"), in_run(RUN_A, ":0", after=True), in_run(RUN_A, ":0")])
    assert [(d.after_test, d.count) for d in folder.destinations(RUN_A)] == [(False, 2), (True, 1)]


def test_a_folder_hands_out_one_tests_destinations_and_none_of_a_test_that_folded_nothing() -> None:
    folder = Folder()
    folder.feed([in_run(RUN_A, ":0"), in_run(RUN_A, ":1", process=CURL), in_run(RUN_B, ":1")])
    assert [(d.test, d.pids) for d in folder.destinations(RUN_A, test=":1")] == [(":1", (11,))]
    assert folder.destinations(RUN_A, test=":2") == ()
    assert folder.destinations(RUN_B, test=":0") == ()


def test_a_folder_keeps_findings_per_run_once_each() -> None:
    a = Finding(HazardKind.IO_URING, 10, "python3", ":0", RUN_A)
    b = Finding(HazardKind.IO_URING, 10, "python3", SESSION, RUN_B)
    folder = Folder()
    folder.feed([a, b, a])
    assert folder.findings(RUN_A) == (a,)
    assert folder.findings(RUN_B) == (b,)
    assert folder.findings() == (a, b)


def test_a_folder_hands_marks_to_its_callback_and_folds_them_into_nothing() -> None:
    mark = Mark(10, RUN_A, "", MarkVerb.FINISH)
    seen: list[Mark] = []
    folder = Folder()
    folder.feed([mark, in_run(RUN_A, SESSION), mark], seen.append)
    assert seen == [mark, mark]
    assert [d.count for d in folder.destinations()] == [1]
    folder.feed([mark])  # without a callback a mark is simply skipped
    assert seen == [mark, mark]


def test_feeding_twice_adds_to_the_same_tallies() -> None:
    folder = Folder()
    folder.feed([in_run(RUN_A, ":0")])
    folder.feed([in_run(RUN_A, ":0", process=CURL)])
    (d,) = folder.destinations()
    assert (d.count, d.pids) == (2, (10, 11))


Match = Callable[..., Optional[Rule]]


class Spy:
    """Counts the endpoints the judge seeks a rule for."""

    def __init__(self) -> None:
        self.asked: Counter[Endpoint | None] = Counter()

    def wrap(self, match: Match) -> Match:
        def counting(
            matcher: object,
            endpoint: Endpoint | None,
            names: frozenset[str] = frozenset(),
            test: str | None = None,
        ) -> Rule | None:
            self.asked[endpoint] += 1
            return match(matcher, endpoint, names, test)

        return counting


def test_judge_matches_each_endpoint_once(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy()
    monkeypatch.setattr(_Matcher, "match", spy.wrap(_Matcher.match))
    folder = Folder()
    folder.feed(
        [
            in_run(RUN_A, ":0"),
            in_run(RUN_A, ":1"),
            in_run(RUN_B, ":0", LOOP),
            in_run(RUN_B, ":0", after=True),
            in_run(RUN_A, ":0", None)._replace(call=event(None, raw="a").call),
            in_run(RUN_A, ":1", None)._replace(call=event(None, raw="b").call),
            in_run(RUN_A, ":2", LOOP),
        ]
    )
    destinations = folder.destinations()
    judged = judge(destinations, DEFAULT)
    assert spy.asked == Counter({PUBLIC: 1, LOOP: 1, None: 1})
    # Every destination is judged, in order, each with its endpoint's verdict.
    assert [replace(d, verdict=UNJUDGED) for d in judged] == list(destinations)
    assert [d.verdict.rule for d in judged] == [
        None,
        None,
        "loopback (IPv4)",
        None,
        None,
        None,
        "loopback (IPv4)",
    ]


def folded(
    test: str,
    count: int,
    pids: tuple[int, ...],
    programs: tuple[str, ...],
    results: tuple[tuple[str, int], ...],
    first_time: float | None,
    syscalls: tuple[str, ...] = ("connect",),
    socks: tuple[str, ...] = (),
) -> Destination:
    return Destination(
        test, PUBLIC, "", UNJUDGED, count, pids, programs, syscalls, results, socks,
        first_time=first_time,
    )  # fmt: skip


PROCESSES = st.sampled_from([PY, CURL, Process(12, 10, "sh")])
ENDPOINTS = st.sampled_from([PUBLIC, LOOP, Endpoint("AF_UNIX", "/run/x.sock"), None])
EVENTS = st.builds(
    lambda dest, process, result, test, run, after: NetEvent(
        NetCall(Syscall.CONNECT, process.pid, 1.0, 3, dest, result, raw="" if dest else "junk"),
        process,
        test,
        after,
        run,
    ),
    ENDPOINTS,
    PROCESSES,
    st.sampled_from(["0", "ENETUNREACH"]),
    st.sampled_from(["", ":0", SESSION]),
    st.sampled_from([RUN_A, RUN_B]),
    st.booleans(),
)
ITEMS = st.one_of(
    EVENTS,
    st.builds(Finding, st.sampled_from(list(HazardKind)), st.just(10), st.just("python3")),
    st.builds(Mark, st.just(10), st.just(RUN_A), st.just(""), st.sampled_from(list(MarkVerb))),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(ITEMS, max_size=30))
def test_audit_is_a_fold_then_a_judgement(items: list[Attributed]) -> None:
    folder = Folder()
    folder.feed(items)
    expected = AuditResult(judge(folder.destinations(), DEFAULT), folder.findings())
    assert audit(items, DEFAULT) == expected
    events = [i for i in items if isinstance(i, NetEvent)]
    assert sum(d.count for d in expected.destinations) == len(events)
    for run in (RUN_A, RUN_B):
        assert sum(d.count for d in folder.destinations(run)) == sum(e.run == run for e in events)


def test_auditing_a_log_with_markers_counts_each_call_once() -> None:
    run = "0123456789abcdef"

    def marker(name: str) -> str:
        name = f"netaudit:{run}:{name}"
        return (
            f'10  1795673412.25 connect(5, {{sa_family=AF_UNIX, sun_path=@"{name}"}}, '
            f"{len(name) + 3}) = -1 ECONNREFUSED (Connection refused)\n"
        )

    lines = [
        marker("s"),
        marker("b:0"),
        "10  1795673412.26 connect(3, {sa_family=AF_INET, sin_port=htons(443), "
        'sin_addr=inet_addr("93.184.216.34")}, 16) = -1 ENETUNREACH (Network is unreachable)\n',
        marker("e"),
        marker("f"),
    ]
    result = audit_lines(lines, DEFAULT)
    assert result.stats.calls == 1
    assert sum(d.count for d in result.destinations) == 1
    assert len(result.violations) == 1


# Memory that does not grow with the number of destinations (spill.py).

NAMED_EVENTS = st.builds(
    lambda event, names, sock: event._replace(names=names, call=event.call._replace(sock=sock)),
    EVENTS,
    st.sampled_from([(), ("api.example.com",), ("a.example.com", "b.example.com")]),
    st.sampled_from(["", "UDP", "TCP"]),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(NAMED_EVENTS, max_size=40), st.integers(2, 6))
def test_a_folder_that_spills_folds_as_one_that_does_not(
    events: list[NetEvent], limit: int
) -> None:
    whole, bounded = Folder(), Folder(limit=limit)
    whole.feed(events)
    bounded.feed(events)
    assert len(bounded._tallies) <= limit
    for run in (None, RUN_A, RUN_B):
        assert list(bounded.destinations(run)) == list(whole.destinations(run))
        assert bounded.tests(run or RUN_A) == whole.tests(run or RUN_A)
    renamed = {":0": "t.py::a", SESSION: "t.py::a"}  # two keys become one: merged
    assert list(bounded.destinations(RUN_A, renamed)) == list(whole.destinations(RUN_A, renamed))
    for test in (":0", ":1", SESSION):
        one = list(bounded.destinations(RUN_A, test=test))
        assert one == list(whole.destinations(RUN_A, test=test))
    bounded.close()


def test_a_folder_holds_at_most_its_limit_of_tallies_and_hands_out_the_rest_from_disk() -> None:
    folder = Folder(limit=10)
    folder.feed(
        event(Endpoint("AF_INET", f"10.0.0.{i % 250}", 443 + i // 250))._replace(run=RUN_A)
        for i in range(1000)
    )
    assert len(folder._tallies) <= 10
    destinations = folder.destinations(RUN_A)
    assert len(destinations) == 1000
    assert [d.endpoint.port for d in destinations if d.endpoint][:3] == [443, 443, 443]
    folder.close()


def test_judging_destinations_kept_on_disk_gives_the_verdicts_of_those_in_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = [in_run(RUN_A, f":{i % 3}", Endpoint("AF_INET", f"127.0.0.{i}", 80)) for i in range(9)]
    events += [in_run(RUN_A, ":1", Endpoint("AF_INET", f"192.0.2.{i}", 53)) for i in range(9)]
    folder = Folder()
    folder.feed(events)
    in_memory = judge(folder.destinations(), DEFAULT)
    monkeypatch.setattr(spill, "SMALL", 4)
    on_disk = judge(folder.destinations(), DEFAULT)
    assert isinstance(on_disk, spill.Spilled)
    assert list(on_disk) == list(in_memory)
    assert len(on_disk.violations()) == 9
    streamed = judge(iter(in_memory), DEFAULT)
    assert isinstance(streamed, spill.Spilled)
    assert list(streamed) == list(in_memory)


def test_a_judged_copy_is_what_replace_makes() -> None:
    d = folded("t::a", 2, (10,), ("python3",), (("0", 2),), 5.0)
    (judged,) = judge([d], DEFAULT)
    assert judged == replace(d, verdict=UNJUDGED)
    assert judge([replace(d, endpoint=LOOP)], DEFAULT)[0] == replace(
        d, endpoint=LOOP, verdict=Verdict("loopback (IPv4)", "builtin")
    )


IP_RULES = st.builds(
    Rule,
    name=st.just("r"),
    family=st.sampled_from(["AF_INET", "AF_INET6"]),
    networks=st.lists(
        st.sampled_from(
            [ipaddress.ip_network(n) for n in
             ("127.0.0.0/8", "10.0.0.0/9", "0.0.0.0/32", "::1/128", "::/0", "2001:db8::/33")]
        ),
        max_size=2,
    ).map(tuple),
    ports=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), max_size=2).map(tuple),
)  # fmt: skip
IP_ENDPOINTS = st.builds(
    Endpoint,
    st.sampled_from(["AF_INET", "AF_INET6"]),
    st.sampled_from(
        ["127.0.0.1", "10.1.2.3", "10.200.0.1", "0.0.0.0", "::1", "::", "2001:db8::7",
         "::ffff:10.1.2.3", "::ffff:127.0.0.1", "not an address", "fe80::1%lo"]
    ),
    st.one_of(st.none(), st.integers(0, 9)),
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(IP_RULES, IP_ENDPOINTS)
def test_a_plain_ip_rule_checked_as_integers_allows_what_the_rule_allows(
    rule: Rule, endpoint: Endpoint
) -> None:
    plain = _Plain.of(rule)
    assert plain is not None
    ip = ip_of(endpoint)
    assert (ip is not None and plain.allows(ip, endpoint.port)) == rule.matches(endpoint)
