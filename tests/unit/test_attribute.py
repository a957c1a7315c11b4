"""Process lineage: which process and program each traced thread belongs to."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from netaudit.attribute import Lineage, attribute
from netaudit.audit import audit_lines
from netaudit.model import (
    Endpoint,
    Exec,
    Finding,
    Hazard,
    HazardKind,
    NetCall,
    NetEvent,
    Record,
    Spawn,
    Syscall,
)
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
