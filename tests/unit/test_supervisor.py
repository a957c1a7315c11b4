"""The supervisor's answers to a run: test keys named, folds merged, the answer pickled."""

from __future__ import annotations

import itertools
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

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
from netaudit.supervisor import RunAudit, Supervisor, read_audit
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


def answer(payload: bytes) -> socket.socket:
    """A socket whose peer has sent ``payload`` and closed."""
    ours, theirs = socket.socketpair()
    with theirs:
        theirs.sendall(payload)
    return ours


def test_read_audit_reads_a_length_prefixed_pickle() -> None:
    data = pickle.dumps(AUDIT)
    with answer(len(data).to_bytes(8, "big") + data) as sock:
        assert read_audit(sock) == AUDIT


def test_read_audit_refuses_anything_but_a_run_audit() -> None:
    data = pickle.dumps({"destinations": ()})
    with answer(len(data).to_bytes(8, "big") + data) as sock, pytest.raises(ValueError):
        read_audit(sock)


def test_read_audit_fails_when_the_supervisor_hangs_up_midway() -> None:
    data = pickle.dumps(AUDIT)
    with answer(len(data).to_bytes(8, "big") + data[:-1]) as sock, pytest.raises(ConnectionError):
        read_audit(sock)


# Naming test keys.


@pytest.fixture
def sup() -> Supervisor:
    # A Supervisor starts nothing until run(): no strace is needed here.
    return Supervisor(Tracer("/usr/bin/strace", "6.1", True), RUN)


def table(
    sup: Supervisor, worker: str, test: int, nodeid: str, location: str, run: str = RUN
) -> None:
    sup._table(
        {
            "op": "test",
            "run": run,
            "worker": worker,
            "test": test,
            "nodeid": nodeid,
            "location": location,
        }
    )


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


def test_an_unknown_key_is_named_as_unnamed_after_a_short_wait(
    sup: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "_NAME_WAIT", 0.05)
    table(sup, "gw0", 0, "t.py::a", "t.py:3")
    began = time.monotonic()
    audit = named(sup, [folded("gw0:0"), folded("gw0:7")])
    waited = time.monotonic() - began
    assert [d.test for d in audit.destinations] == ["t.py::a", "<unnamed test gw0:7>"]
    assert 0.05 <= waited < 1.0


def test_known_keys_are_named_without_waiting(
    sup: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "_NAME_WAIT", 5.0)
    table(sup, "", 0, "t.py::a", "t.py:3")
    began = time.monotonic()
    assert [d.test for d in named(sup, [folded(":0"), folded(SESSION)]).destinations] == [
        "t.py::a",
        SESSION,
    ]
    assert time.monotonic() - began < 1.0


def test_a_table_line_still_in_flight_is_waited_for(
    sup: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "_NAME_WAIT", 5.0)

    def late() -> None:
        time.sleep(0.1)
        table(sup, "", 4, "t.py::late", "t.py:40")

    thread = threading.Thread(target=late)
    began = time.monotonic()
    thread.start()
    try:
        audit = named(sup, [folded(":4")])
    finally:
        thread.join()
    assert [d.test for d in audit.destinations] == ["t.py::late"]
    assert time.monotonic() - began < 4.0


def test_a_table_of_another_run_names_nothing_here(
    sup: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "_NAME_WAIT", 0.01)
    table(sup, "", 0, "t.py::a", "t.py:3", run=OTHER)
    assert [d.test for d in named(sup, [folded(":0")]).destinations] == ["<unnamed test :0>"]
    assert [d.test for d in named(sup, [folded(":0")], run=OTHER).destinations] == ["t.py::a"]


@pytest.mark.parametrize(
    "message",
    [
        {"op": "test", "run": RUN, "worker": "", "test": "0", "nodeid": "t.py::a"},
        {"op": "test", "run": RUN, "worker": "", "test": 0},
        {"op": "test", "run": RUN, "worker": 0, "test": 0, "nodeid": "t.py::a"},
        {"op": "test", "worker": "", "test": 0, "nodeid": "t.py::a"},
        {"op": "test", "run": RUN, "test": 0, "nodeid": "t.py::a", "location": 3},
    ],
)
def test_a_malformed_table_line_is_ignored(
    sup: Supervisor, monkeypatch: pytest.MonkeyPatch, message: dict[str, object]
) -> None:
    monkeypatch.setattr(supervisor_module, "_NAME_WAIT", 0.01)
    sup._table(message)
    assert [d.test for d in named(sup, [folded(":0")]).destinations] == ["<unnamed test :0>"]
    table(sup, "", 0, "t.py::a", "t.py:3")  # the same key, well formed, is taken
    assert [d.test for d in named(sup, [folded(":0")]).destinations] == ["t.py::a"]


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
