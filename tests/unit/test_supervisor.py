"""The supervisor's answers to a run: test keys named, folds merged, the answer pickled."""

from __future__ import annotations

import itertools
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from netaudit import supervisor as supervisor_module
from netaudit.audit import UNJUDGED, Folder
from netaudit.model import (
    SESSION,
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
    TraceStats,
)
from netaudit.protocol import Hello, RunAudit, TableEntry
from netaudit.supervisor import Supervisor
from netaudit.trace import Tracer

RUN = "0123456789abcdef"
OTHER = "fedcba9876543210"
PUBLIC = Endpoint("AF_INET", "93.184.216.34", 443)
LOOP = Endpoint("AF_INET6", "::1", 5432)


def folded(
    test: str,
    endpoint: Endpoint | None = PUBLIC,
    count: int = 1,
    pids: tuple[int, ...] = (10,),
    after_test: bool = False,
    raw: str = "",
) -> Destination:
    return Destination(
        test=test,
        endpoint=endpoint,
        raw=raw,
        verdict=UNJUDGED,
        count=count,
        pids=pids,
        programs=("python3",),
        syscalls=("connect",),
        results=(("ENETUNREACH", count),),
        after_test=after_test,
        first_time=1795673412.25,
    )


AUDIT = RunAudit(
    destinations=(
        folded("t.py::a", PUBLIC, 2, (10, 11)),
        folded(SESSION, LOOP),
        folded("t.py::b", None, raw="10 connect(3, {garbled"),
    ),
    findings=(Finding(HazardKind.IO_URING, 12, "uring", "t.py::a", RUN),),
    stats=TraceStats(lines=9, calls=4, unparsed=1, foreign=0),
    locations=(("t.py::a", "t.py:3"), ("t.py::b", "t.py:9")),
    problem="",
)


def test_a_run_audit_pickles_and_comes_back_equal() -> None:
    assert pickle.loads(pickle.dumps(AUDIT)) == AUDIT


def test_endpoints_from_a_pickle_made_by_another_process_still_find_their_equals() -> None:
    # The supervisor and the run are two processes, with string hashes seeded apart.
    script = (
        "import pickle, sys\n"
        "from netaudit.model import Endpoint\n"
        "sys.stdout.buffer.write(pickle.dumps(Endpoint('AF_INET', '93.184.216.34', 443)))\n"
    )
    made = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    ).stdout
    theirs = pickle.loads(made)
    assert theirs == PUBLIC
    assert theirs in {PUBLIC}
    assert hash(theirs) == hash(PUBLIC)


# Naming test keys.


@pytest.fixture
def sup() -> Supervisor:
    # A Supervisor starts nothing until run(): no strace is needed here.
    return Supervisor(Tracer("/usr/bin/strace", "6.1", True), RUN)


def table(
    sup: Supervisor, worker: str, test: int, nodeid: str, location: str, run: str = RUN
) -> None:
    sup._table(TableEntry(run, worker, test, nodeid, location))


def named(
    sup: Supervisor,
    destinations: Sequence[Destination],
    findings: Sequence[Finding] = (),
    run: str = RUN,
) -> RunAudit:
    """What _named makes of a folder that folded these destinations and findings."""
    folder = Folder()
    for d in destinations:
        pids = list(itertools.islice(itertools.cycle(d.pids), d.count))
        call = NetCall(Syscall.CONNECT, 0, d.first_time, 3, d.endpoint, d.results[0][0], raw=d.raw)
        folder.feed(
            NetEvent(call._replace(tid=pid), Process(pid, None, d.programs[0]), d.test,
                     d.after_test, run)
            for pid in pids
        )  # fmt: skip
    folder.feed(findings)
    with sup._cond:  # as audit_of holds it: _named waits on the condition
        return sup._named(run, folder, "")


def test_test_keys_become_the_nodeids_of_the_runs_table(sup: Supervisor) -> None:
    table(sup, "", 0, "t.py::a", "t.py:3")
    table(sup, "", 1, "t.py::b[x]", "t.py:9")
    finding = Finding(HazardKind.IO_URING, 12, "uring", ":1", RUN)
    audit = named(
        sup, [folded(":0"), folded(SESSION, LOOP), folded(":1", LOOP, after_test=True)], [finding]
    )
    assert [(d.test, d.endpoint, d.after_test) for d in audit.destinations] == [
        ("t.py::a", PUBLIC, False),
        (SESSION, LOOP, False),
        ("t.py::b[x]", LOOP, True),
    ]
    assert audit.findings == (Finding(HazardKind.IO_URING, 12, "uring", "t.py::b[x]", RUN),)
    assert dict(audit.locations) == {"t.py::a": "t.py:3", "t.py::b[x]": "t.py:9"}
    assert audit.problem == ""


def test_one_tests_answer_names_that_test_only(sup: Supervisor) -> None:
    table(sup, "", 0, "t.py::a", "t.py:3")
    table(sup, "", 1, "t.py::b", "t.py:9")
    sup._runs[RUN].policies["t.py::a"] = '{"allow": []}'
    folder = Folder()
    folder.feed(
        NetEvent(NetCall(Syscall.CONNECT, 7, 1.0, 3, PUBLIC, "0"), Process(7, None, "py"), key,
                 False, RUN)
        for key in (":0", ":1")
    )  # fmt: skip
    with sup._cond:
        audit = sup._named(RUN, folder, "", ":1")
        nothing = sup._named(RUN, folder, "", ":2")
    assert [d.test for d in audit.destinations] == ["t.py::b"]
    assert (audit.locations, audit.policies) == ((("t.py::b", "t.py:9"),), ())
    assert nothing.destinations == ()
    with sup._cond:
        whole = sup._named(RUN, folder, "")
    assert dict(whole.locations) == {"t.py::a": "t.py:3", "t.py::b": "t.py:9"}
    assert whole.policies == (("t.py::a", '{"allow": []}'),)


def test_workers_are_told_apart_by_their_safe_names(sup: Supervisor) -> None:
    table(sup, "gw0", 0, "t.py::a", "t.py:3")
    table(sup, "gw1", 0, "t.py::b", "t.py:9")
    table(sup, "odd worker", 0, "t.py::c", "t.py:12")  # keyed as its markers name it
    audit = named(sup, [folded("gw1:0"), folded("gw0:0", LOOP), folded("odd_worker:0")])
    assert [d.test for d in audit.destinations] == ["t.py::b", "t.py::a", "t.py::c"]


def test_two_workers_destinations_of_one_nodeid_are_merged(sup: Supervisor) -> None:
    # The same test run by two workers (a rerun): one entry per destination, added up.
    table(sup, "gw0", 0, "t.py::a", "t.py:3")
    table(sup, "gw1", 2, "t.py::a", "t.py:3")
    audit = named(
        sup,
        [
            folded("gw0:0", count=2, pids=(10,)),
            folded("gw0:0", LOOP),
            folded("gw1:2", count=3, pids=(11,)),
            folded("gw1:2", count=1, pids=(12,), after_test=True),
        ],
    )
    assert [(d.test, d.endpoint, d.count, d.pids, d.after_test) for d in audit.destinations] == [
        ("t.py::a", PUBLIC, 5, (10, 11), False),
        ("t.py::a", LOOP, 1, (10,), False),
        ("t.py::a", PUBLIC, 1, (12,), True),
    ]
    assert next(iter(audit.destinations)).results == (("ENETUNREACH", 5),)
    assert audit.locations == (("t.py::a", "t.py:3"),)


class _Watched(threading.Condition):
    """A condition that says when someone waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait_for(self, predicate: Any, timeout: float | None = None) -> Any:
        self.waiting.set()
        return super().wait_for(predicate, timeout)


def in_thread(work: Any) -> Any:
    """Runs ``work`` in a thread; a generous bound only turns a hang into a failure."""
    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.append(work()))
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "hung"
    return done[0]


def test_an_unknown_key_is_named_as_unnamed_once_no_other_connection_of_the_run_is_open(
    sup: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "_NAME_WAIT", 3600)
    table(sup, "gw0", 0, "t.py::a", "t.py:3")
    audit = in_thread(lambda: named(sup, [folded("gw0:0"), folded("gw0:7")]))
    assert [d.test for d in audit.destinations] == ["t.py::a", "<unnamed test gw0:7>"]


def test_a_table_line_still_in_flight_on_a_workers_connection_is_waited_for(
    sup: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "_NAME_WAIT", 3600)
    watched = sup._cond = _Watched()
    asking = sup._greet(Hello(RUN))
    sup._greet(Hello(RUN, worker="gw0"))  # still connected: its lines may still come
    assert asking.talking == 2
    result: list[RunAudit] = []
    thread = threading.Thread(target=lambda: result.append(named(sup, [folded("gw0:4")])))
    thread.start()
    assert watched.waiting.wait(60)
    table(sup, "gw0", 4, "t.py::late", "t.py:40")
    thread.join(60)
    assert [d.test for d in result[0].destinations] == ["t.py::late"]


def test_a_worker_that_hung_up_is_not_waited_for(
    sup: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "_NAME_WAIT", 3600)
    asking = sup._greet(Hello(RUN))
    sup._hung_up(sup._greet(Hello(RUN, worker="gw0")))
    assert asking.talking == 1
    audit = in_thread(lambda: named(sup, [folded("gw0:4")]))
    assert [d.test for d in audit.destinations] == ["<unnamed test gw0:4>"]


def test_a_table_of_another_run_names_nothing_here(sup: Supervisor) -> None:
    table(sup, "", 0, "t.py::a", "t.py:3", run=OTHER)
    assert [d.test for d in named(sup, [folded(":0")]).destinations] == ["<unnamed test :0>"]
    assert [d.test for d in named(sup, [folded(":0")], run=OTHER).destinations] == ["t.py::a"]


def test_only_the_sessions_hello_speaks_for_the_run(sup: Supervisor) -> None:
    sup._greet(Hello(RUN, worker="gw0", audit=False))
    assert sup.hello is None
    sup._greet(Hello(RUN, audit=False, reason="--collect-only"))
    sup._greet(Hello(RUN))  # a later one (a test that forged it) changes nothing
    assert sup.hello == Hello(RUN, audit=False, reason="--collect-only")


def on_mark(sup: Supervisor, mark: Mark) -> None:
    with sup._cond:  # as the thread that reads the log calls it
        sup._on_mark(mark)


def test_only_the_top_level_finish_of_a_run_finishes_it(sup: Supervisor) -> None:
    on_mark(sup, Mark(10, RUN, "gw0", MarkVerb.FINISH))  # a worker does not report
    on_mark(sup, Mark(10, RUN, "", MarkVerb.END))
    assert not sup.top_finished
    on_mark(sup, Mark(10, OTHER, "", MarkVerb.FINISH))
    assert not sup.top_finished
    on_mark(sup, Mark(10, RUN, "", MarkVerb.FINISH))
    assert sup.top_finished


def test_a_run_whose_trace_ended_before_its_finish_is_told_its_audit_is_incomplete(
    sup: Supervisor,
) -> None:
    sup._consumed = True  # strace is gone and the log is read: nothing more will come
    assert sup.audit_of(OTHER).problem == "the trace ended before the run finished"
    on_mark(sup, Mark(10, RUN, "", MarkVerb.FINISH))
    assert sup.audit_of(RUN).problem == ""
