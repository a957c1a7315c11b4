"""Process lineage: which process and program each traced thread belongs to."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from netaudit import markers
from netaudit.attribute import Lineage, attribute
from netaudit.audit import audit_lines
from netaudit.model import (
    SESSION,
    Endpoint,
    Exec,
    Finding,
    Hazard,
    HazardKind,
    Mark,
    MarkVerb,
    NetCall,
    NetEvent,
    Record,
    Spawn,
    Syscall,
)
from netaudit.parse import parse
from netaudit.rules import DEFAULT

DEST = Endpoint("AF_INET", "192.0.2.1", 80)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "strace"


def call(tid: int, port: int = 80) -> NetCall:
    return NetCall(Syscall.CONNECT, tid, None, 3, Endpoint("AF_INET", "192.0.2.1", port), "0")


def who(records: list[Record], window: int = 2000) -> list[tuple[int, int, str, int | None]]:
    """(tid, pid, program, port) of each event, in the order they come out."""
    out = []
    for item in Lineage(hold_window=window).attribute(records):
        assert isinstance(item, NetEvent)
        port = item.call.dest.port if item.call.dest else None
        out.append((item.call.tid, item.process.pid, item.process.program, port))
    return out


def test_the_first_task_seen_is_the_root_process() -> None:
    assert who([Exec(10, "/usr/bin/python3"), call(10)]) == [(10, 10, "python3", 80)]


def test_a_thread_belongs_to_the_process_that_cloned_it() -> None:
    records: list[Record] = [Exec(10, "/usr/bin/python3"), Spawn(10, 11, thread=True), call(11)]
    assert who(records) == [(11, 10, "python3", 80)]


def test_a_forked_child_runs_its_parents_program_until_it_execs() -> None:
    records: list[Record] = [
        Exec(10, "/usr/bin/python3"),
        Spawn(10, 12, thread=False),
        call(12, 1),
        Exec(12, "/usr/bin/curl"),
        call(12, 2),
    ]
    assert who(records) == [(12, 12, "python3", 1), (12, 12, "curl", 2)]


def test_a_childs_lines_before_its_parents_clone_returns_wait_for_the_lineage() -> None:
    # vfork: the child execs and connects before the parent's vfork() returns its pid.
    records: list[Record] = [
        Exec(10, "/usr/bin/python3"),
        Spawn(10, 11, thread=True),
        Spawn(11, 13, thread=False),  # a thread of 10 forks 13; 13's thread 14 appears early
        call(14, 5),
        Exec(12, "/bin/sh"),
        call(12, 6),
        Spawn(10, 12, thread=False),
        Spawn(13, 14, thread=True),
    ]
    assert sorted(who(records)) == [(12, 12, "sh", 6), (14, 13, "python3", 5)]


def test_a_thread_no_clone_names_stands_alone_after_the_window() -> None:
    records: list[Record] = [Exec(10, "/usr/bin/python3"), call(99, 1)]
    records += [call(10, 2)] * 5
    out = who(records, window=3)
    assert (99, 99, "?", 1) in out
    assert out.index((99, 99, "?", 1)) < len(out) - 1  # released before the end of the stream


def test_held_lines_are_never_lost_at_the_end_of_the_stream() -> None:
    records: list[Record] = [Exec(10, "/usr/bin/python3"), call(50, 1), call(51, 2)]
    assert who(records) == [(50, 50, "?", 1), (51, 51, "?", 2)]


def test_a_hazard_becomes_a_finding_naming_the_process_and_program() -> None:
    records: list[Record] = [
        Exec(10, "/usr/bin/python3"),
        Spawn(10, 11, thread=False),
        Exec(11, "/opt/uring-client"),
        Hazard(HazardKind.IO_URING, 11),
    ]
    findings = [item for item in attribute(records) if isinstance(item, Finding)]
    assert findings == [Finding(HazardKind.IO_URING, 11, "uring-client")]
    assert str(findings[0]) == "audit incomplete: io_uring used by pid 11 (uring-client)"


def test_a_log_from_stderr_names_the_same_programs_as_one_written_with_o() -> None:
    # strace on stderr prints no pid while it traces one process: its early lines are tid 0.
    def programs(name: str) -> dict[str, tuple[str, ...]]:
        path = FIXTURES / f"{name}.log"
        with open(path, encoding="utf-8", errors="surrogateescape") as log:
            result = audit_lines(log, DEFAULT)
        return {d.address: d.programs for d in result.destinations}

    assert programs("workload_stderr") == programs("workload")


TIDS = st.sampled_from([0, 1, 2, 3, 10, 11, 12, 99])
RECORDS = st.one_of(
    st.builds(Spawn, TIDS, TIDS, st.booleans()),
    st.builds(Exec, TIDS, st.sampled_from(["/bin/sh", "/usr/bin/curl", ""])),
    st.builds(Hazard, st.sampled_from(list(HazardKind)), TIDS),
    st.builds(call, TIDS, st.integers(0, 3)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(RECORDS, max_size=40), st.integers(1, 5))
def test_any_order_of_records_gives_one_event_per_call_and_never_raises(
    records: list[Record], window: int
) -> None:
    out = list(Lineage(hold_window=window).attribute(records))
    calls = [r for r in records if isinstance(r, NetCall)]
    events = [item.call for item in out if isinstance(item, NetEvent)]
    assert Counter(events) == Counter(calls)
    hazards = sum(isinstance(r, Hazard) for r in records)
    assert sum(isinstance(item, Finding) for item in out) == hazards
    named = {r.tid for r in records if not isinstance(r, Spawn)}
    named |= {tid for r in records if isinstance(r, Spawn) for tid in (r.parent, r.child)}
    assert all(item.process.pid in named for item in out if isinstance(item, NetEvent))


# Test sessions: in-band markers say which test each driving process is in.

RUN = "0123456789abcdef"
INNER = "fedcba9876543210"
ROOT = (RUN, SESSION)


def mark(tid: int, verb: MarkVerb, test: int = -1, run: str = RUN, worker: str = "") -> Mark:
    return Mark(tid, run, worker, verb, test)


def start(tid: int, run: str = RUN, worker: str = "") -> Mark:
    return mark(tid, MarkVerb.START, run=run, worker=worker)


def begin(tid: int, test: int, run: str = RUN, worker: str = "") -> Mark:
    return mark(tid, MarkVerb.BEGIN, test, run, worker)


def end(tid: int, run: str = RUN, worker: str = "") -> Mark:
    return mark(tid, MarkVerb.END, run=run, worker=worker)


def finish(tid: int, run: str = RUN, worker: str = "") -> Mark:
    return mark(tid, MarkVerb.FINISH, run=run, worker=worker)


Where = tuple[int, str, str, bool]


def where(records: list[Record], root: tuple[str, str] = ROOT) -> list[Where]:
    """(port, run, test, after_test) of each event, in the order they come out."""
    out = []
    for item in Lineage(root=root).attribute(records):
        if isinstance(item, NetEvent):
            assert item.call.dest is not None and item.call.dest.port is not None
            out.append((item.call.dest.port, item.run, item.test, item.after_test))
    return out


def at(port: int, test: str, after: bool = False, run: str = RUN) -> Where:
    return (port, run, test, after)


T0, T1 = markers.test_key("", 0), markers.test_key("", 1)
PYTEST: list[Record] = [Exec(10, "/usr/bin/python3"), start(10)]


def test_a_drivers_calls_belong_to_the_test_it_is_in_and_between_tests_to_the_session() -> None:
    records = [
        *PYTEST,
        call(10, 1),
        begin(10, 0),
        call(10, 2),
        end(10),
        call(10, 3),
        begin(10, 1),
        call(10, 4),
        call(10, 5),
        end(10),
        call(10, 6),
    ]
    assert where(records) == [
        at(1, SESSION),
        at(2, T0),
        at(3, SESSION),
        at(4, T1),
        at(5, T1),
        at(6, SESSION),
    ]


def test_a_test_that_resumes_after_a_wider_fixture_gets_its_calls_back() -> None:
    records = [*PYTEST, begin(10, 4), end(10), call(10, 1), begin(10, 4), call(10, 2)]
    assert where(records) == [at(1, SESSION), at(2, ":4")]


def test_a_thread_of_the_driver_follows_the_drivers_current_test() -> None:
    records = [
        *PYTEST,
        Spawn(10, 11, thread=True),  # started in the session: it still follows the driver
        begin(10, 0),
        call(11, 1),
        end(10),
        call(11, 2),
        begin(10, 1),
        call(11, 3),
    ]
    assert where(records) == [at(1, T0), at(2, SESSION), at(3, T1)]


def test_a_child_forked_in_a_test_stays_that_tests_and_is_after_test_once_it_ends() -> None:
    records = [
        *PYTEST,
        begin(10, 0),
        Spawn(10, 20, thread=False),
        Exec(20, "/usr/bin/curl"),
        call(20, 1),
        end(10),
        call(20, 2),
        begin(10, 1),
        call(20, 3),
        call(10, 4),
        end(10),
        begin(10, 0),  # test 0 resumes (after a wider fixture): its child is no leftover now
        call(20, 5),
    ]
    assert where(records) == [
        at(1, T0),
        at(2, T0, after=True),
        at(3, T0, after=True),
        at(4, T1),
        at(5, T0),
    ]


def test_a_grandchild_inherits_the_test_of_its_parent() -> None:
    records = [
        *PYTEST,
        begin(10, 0),
        Spawn(10, 20, thread=False),
        Spawn(20, 30, thread=False),  # forked during test 0
        Spawn(30, 31, thread=True),
        call(31, 1),
        end(10),
        begin(10, 1),
        Spawn(20, 40, thread=False),  # forked by test 0's child while test 1 runs
        call(40, 2),
        call(30, 3),
    ]
    assert where(records) == [at(1, T0), at(2, T0, after=True), at(3, T0, after=True)]


def test_a_child_forked_in_the_session_stays_the_sessions_while_tests_run() -> None:
    # A server a session-scoped fixture started: its calls are no test's.
    records = [*PYTEST, Spawn(10, 20, thread=False), begin(10, 0), call(20, 1), call(10, 2)]
    assert where(records) == [at(1, SESSION), at(2, T0)]


def test_a_process_without_a_chain_belongs_to_the_root() -> None:
    records: list[Record] = [
        Exec(10, "/usr/bin/python3"),
        Spawn(10, 20, thread=False),  # forked before anyone drove a run
        start(10),
        begin(10, 0),
        call(20, 1),
        call(10, 2),
    ]
    assert where(records) == [at(1, SESSION), at(2, T0)]
    assert where([*records[:2], call(20, 1)], root=("", "")) == [at(1, "", run="")]
    assert where([Exec(10, "/bin/sh"), call(10, 3)], root=("abc", "<x>")) == [
        at(3, "<x>", run="abc")
    ]


def test_finish_takes_the_run_off_its_driver_whose_later_calls_go_to_the_root() -> None:
    records = [*PYTEST, call(10, 1), begin(10, 0), call(10, 2), finish(10), call(10, 3)]
    # A root key unlike the session's shows where the last call went.
    assert where(records, root=(RUN, "<root>")) == [
        at(1, SESSION),
        at(2, T0),
        at(3, "<root>"),
    ]
    # FINISH without an END: the call after it is not the test's.
    assert where(records) == [at(1, SESSION), at(2, T0), at(3, SESSION)]


def test_finish_of_one_run_leaves_the_others_span() -> None:
    records = [*PYTEST, start(10, INNER), finish(10, INNER), call(10, 1)]
    assert where(records, root=(RUN, "<root>")) == [at(1, SESSION)]


def test_finish_leaves_the_children_of_a_test_with_that_test() -> None:
    records = [*PYTEST, begin(10, 0), Spawn(10, 20, thread=False), end(10), finish(10)]
    assert where([*records, call(20, 1), call(10, 2)], root=(RUN, "<root>")) == [
        at(1, T0, after=True),
        at(2, "<root>"),
    ]


def test_a_nested_run_gives_one_event_per_run() -> None:
    records = [
        *PYTEST,
        begin(10, 3),
        Spawn(10, 20, thread=False),  # a test runs pytest --netaudit
        Exec(20, "/usr/bin/python3"),
        call(20, 1),
        start(20, INNER),
        call(20, 2),
        begin(20, 0, INNER),
        call(20, 3),
        end(20, INNER),
        finish(20, INNER),
        call(20, 4),
        call(10, 5),
    ]
    assert where(records) == [
        at(1, ":3"),
        at(2, ":3"),
        at(2, SESSION, run=INNER),
        at(3, ":3"),
        at(3, T0, run=INNER),
        at(4, ":3"),
        at(5, ":3"),
    ]


def test_a_nested_runs_child_is_after_test_in_each_run_on_its_own() -> None:
    records = [
        *PYTEST,
        begin(10, 3),
        Spawn(10, 20, thread=False),
        start(20, INNER),
        begin(20, 0, INNER),
        Spawn(20, 30, thread=False),
        end(20, INNER),
        call(30, 1),  # the inner test is over, the outer one is not
        end(10),
        call(30, 2),
    ]
    assert where(records) == [
        at(1, ":3"),
        at(1, T0, after=True, run=INNER),
        at(2, ":3", after=True),
        at(2, T0, after=True, run=INNER),
    ]


def test_an_xdist_worker_replaces_its_controllers_span_of_the_same_run() -> None:
    gw0 = markers.test_key("gw0", 3)
    records = [
        *PYTEST,
        Spawn(10, 20, thread=False),  # the controller starts a worker
        Exec(20, "/usr/bin/python3"),
        start(20, worker="gw0"),
        call(20, 1),
        begin(20, 3, worker="gw0"),
        call(20, 2),
        Spawn(20, 30, thread=False),
        end(20, worker="gw0"),
        call(30, 3),
        call(10, 4),
    ]
    assert where(records) == [
        at(1, SESSION),
        at(2, gw0),
        at(3, gw0, after=True),
        at(4, SESSION),
    ]


def test_two_workers_with_the_same_test_index_are_apart() -> None:
    records = [
        *PYTEST,
        Spawn(10, 20, thread=False),
        Spawn(10, 21, thread=False),
        start(20, worker="gw0"),
        start(21, worker="gw1"),
        begin(20, 0, worker="gw0"),
        begin(21, 0, worker="gw1"),
        Spawn(20, 30, thread=False),
        end(21, worker="gw1"),  # gw1's test 0 ends; gw0's test 0 goes on
        call(30, 1),
        call(21, 2),
    ]
    assert where(records) == [at(1, "gw0:0"), at(2, SESSION)]


def test_a_control_connection_moves_no_span() -> None:
    control = mark(10, MarkVerb.CONTROL, run="ab" * 16)
    records = [*PYTEST, begin(10, 0), control, call(10, 1)]
    assert where(records) == [at(1, T0)]


def test_markers_pass_through_in_stream_order() -> None:
    records = [*PYTEST, begin(10, 0), call(10, 1), end(10)]
    out = list(Lineage(root=ROOT).attribute(records))
    assert [type(item).__name__ for item in out] == ["Mark", "Mark", "NetEvent", "Mark"]
    assert [item for item in out if isinstance(item, Mark)] == [records[1], records[2], records[4]]


def test_timestamps_play_no_part_in_attribution_only_stream_order_does() -> None:
    # Across midnight, backwards, or missing: the same stream gives the same attribution.
    def timed(records: list[Record], times: list[float | None]) -> list[Record]:
        out: list[Record] = []
        for record, time in zip(records, times):
            if isinstance(record, NetCall):
                out.append(record._replace(time=time))
            else:
                out.append(dataclasses.replace(record, time=time))
        return out

    records = [
        *PYTEST,
        begin(10, 0),
        Spawn(10, 20, thread=False),
        call(20, 1),
        end(10),
        call(20, 2),
        begin(10, 1),
        call(10, 3),
    ]
    untimed = where(records)
    assert untimed == [at(1, T0), at(2, T0, after=True), at(3, T1)]
    midnight = [86399.0 + i * 0.4 for i in range(len(records))]  # 23:59:59 onwards
    midnight = [t - 86400 if t >= 86400 else t for t in midnight]  # as a time of day would be
    backwards = [2e9 - i for i in range(len(records))]
    for times in (midnight, backwards, [None] * len(records)):
        assert where(timed(records, list(times))) == untimed


def test_a_finding_carries_the_test_and_run_of_each_span() -> None:
    def findings(records: list[Record]) -> list[Finding]:
        return [i for i in Lineage(root=ROOT).attribute(records) if isinstance(i, Finding)]

    uring = HazardKind.IO_URING
    records: list[Record] = [
        *PYTEST,
        Hazard(uring, 10),
        begin(10, 0),
        Spawn(10, 20, thread=False),
        Exec(20, "/opt/uring-client"),
        Hazard(uring, 20),
        start(20, INNER),
        Hazard(HazardKind.CLONE_UNTRACED, 20),
    ]
    assert findings(records) == [
        Finding(uring, 10, "python3", SESSION, RUN),
        Finding(uring, 20, "uring-client", T0, RUN),
        Finding(HazardKind.CLONE_UNTRACED, 20, "uring-client", T0, RUN),
        Finding(HazardKind.CLONE_UNTRACED, 20, "uring-client", SESSION, INNER),
    ]


MARKS = st.builds(
    Mark,
    TIDS,
    st.just(RUN),
    st.sampled_from(["", "gw0", "gw1"]),
    st.sampled_from([MarkVerb.START, MarkVerb.END, MarkVerb.FINISH, MarkVerb.CONTROL]),
) | st.builds(
    Mark,
    TIDS,
    st.just(RUN),
    st.sampled_from(["", "gw0"]),
    st.just(MarkVerb.BEGIN),
    st.integers(0, 3),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(RECORDS, MARKS), max_size=40), st.integers(1, 5))
def test_with_a_single_run_each_call_is_one_event_of_that_run(
    records: list[Record], window: int
) -> None:
    out = list(Lineage(hold_window=window, root=ROOT).attribute(records))
    events = [item for item in out if isinstance(item, NetEvent)]
    assert Counter(e.call for e in events) == Counter(r for r in records if isinstance(r, NetCall))
    assert {e.run for e in events} <= {RUN}
    keys = {SESSION} | {markers.test_key(w, i) for w in ("", "gw0") for i in range(4)}
    assert {e.test for e in events} <= keys
    assert not any(e.after_test for e in events if e.test == SESSION)
    marks = Counter(item for item in out if isinstance(item, Mark))
    assert marks == Counter(r for r in records if isinstance(r, Mark))  # each passes through


def test_a_split_connect_belongs_to_the_test_in_which_it_started() -> None:
    # A test's background thread blocks in connect (a blackholed address) while the driver
    # moves on to the next test; strace splits the connect around the driver's markers.
    clone = (FIXTURES / "markers_threads.log").read_text().splitlines()[2]
    assert clone.startswith("9626 ") and clone.endswith("= 9627")  # 9626 starts thread 9627

    def marker(name: str, time: str) -> str:
        name = f"netaudit:{RUN}:{name}"
        return (
            f'9626  {time} connect(5, {{sa_family=AF_UNIX, sun_path=@"{name}"}}, {len(name) + 3})'
            " = -1 ECONNREFUSED (Connection refused)"
        )

    lines = [
        marker("s", "1795673769.000001"),
        marker("b:0", "1795673769.000002"),
        clone,
        "9627  1795673769.200000 connect(3, {sa_family=AF_INET, sin_port=htons(80), "
        'sin_addr=inet_addr("192.0.2.1")}, 16 <unfinished ...>',
        marker("e", "1795673769.300000"),
        marker("b:1", "1795673769.400000"),
        "9627  1795673790.500000 <... connect resumed>) = -1 ETIMEDOUT (Connection timed out)",
    ]
    events = [
        item
        for item in Lineage(root=ROOT).attribute(parse(line + "\n" for line in lines))
        if isinstance(item, NetEvent)
    ]
    assert [(e.call.line, e.call.result) for e in events] == [(4, "ETIMEDOUT")]
    assert [(e.test, e.after_test) for e in events] == [(T0, False)]


def test_the_root_keeps_its_test_when_its_real_pid_shows_up() -> None:
    # strace on stderr prints no pid while it traces one process (see the stderr fixtures).
    records: list[Record] = [
        Exec(0, "/usr/bin/python3"),
        start(0),
        begin(0, 0),
        call(0, 1),
        Spawn(0, 20, thread=False),  # from here on strace prints pids: the root is 10
        call(10, 2),
    ]
    out = list(Lineage(hold_window=2, root=ROOT).attribute(records))
    events = [(i.call.tid, i.process.pid, i.test) for i in out if isinstance(i, NetEvent)]
    assert events == [(0, 0, T0), (10, 10, T0)]
