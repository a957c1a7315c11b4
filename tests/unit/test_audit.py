"""Judging: one verdict per destination, folded with its evidence."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netaudit.allowlist import DEFAULT, loads
from netaudit.attribute import Attributed
from netaudit.audit import UNJUDGED, Folder, audit, audit_lines, judge, merge
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
)
from netaudit.rules import Allowlist, Rule

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
    assert result.destinations[0].verdict.rule == "pg"
    assert audit([event(LOOP)], DEFAULT).destinations[0].verdict.rule == "loopback (IPv4)"
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
    assert result.violations[0].endpoint == PUBLIC


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
    assert folder.destinations()[0] == a
    assert folder.destinations("0000000000000000") == ()
    assert all(d.verdict == UNJUDGED for d in folder.destinations())


def test_a_folder_keeps_a_tests_leftover_calls_apart_from_its_own() -> None:
    folder = Folder()
    folder.feed([in_run(RUN_A, ":0"), in_run(RUN_A, ":0", after=True), in_run(RUN_A, ":0")])
    assert [(d.after_test, d.count) for d in folder.destinations(RUN_A)] == [(False, 2), (True, 1)]


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


Match = Callable[[Allowlist, Optional[Endpoint], frozenset[str], Optional[str]], Optional[Rule]]


class Spy:
    """Counts the endpoints an allowlist is asked about."""

    def __init__(self) -> None:
        self.asked: Counter[Endpoint | None] = Counter()

    def wrap(self, match: Match) -> Match:
        def counting(
            allowlist: Allowlist,
            endpoint: Endpoint | None,
            names: frozenset[str] = frozenset(),
            test: str | None = None,
        ) -> Rule | None:
            self.asked[endpoint] += 1
            return match(allowlist, endpoint, names, test)

        return counting


def test_judge_matches_each_endpoint_once(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy()
    monkeypatch.setattr(Allowlist, "match", spy.wrap(Allowlist.match))
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


def test_merge_adds_counts_and_results_and_unions_the_rest() -> None:
    a = folded("t::a", 2, (10, 12), ("python3",), (("0", 1), ("ENETUNREACH", 1)), 5.0)
    b = folded(
        "t::a",
        3,
        (11, 12),
        ("curl", "python3"),
        (("ECONNREFUSED", 1), ("ENETUNREACH", 2)),
        4.0,
        ("sendto",),
        ("UDP",),
    )
    merged = merge(a, b)
    assert merged.count == 5
    assert merged.results == (("0", 1), ("ECONNREFUSED", 1), ("ENETUNREACH", 3))
    assert merged.pids == (10, 11, 12)
    assert merged.programs == ("curl", "python3")
    assert merged.syscalls == ("connect", "sendto")
    assert merged.socks == ("UDP",)
    assert merged.first_time == 4.0
    assert (merged.test, merged.endpoint, merged.verdict) == ("t::a", PUBLIC, UNJUDGED)
    assert merge(b, a) == merged


def test_merge_keeps_the_first_time_that_is_known() -> None:
    known = folded("t", 1, (10,), ("p",), (("0", 1),), 7.5)
    unknown = folded("t", 1, (10,), ("p",), (("0", 1),), None)
    assert merge(unknown, known).first_time == 7.5
    assert merge(known, unknown).first_time == 7.5
    assert merge(unknown, unknown).first_time is None


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
