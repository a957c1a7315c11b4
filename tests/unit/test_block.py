"""Block mode's pieces that need no kernel: a live decision is the report's verdict, a task no
clone has named yet is placed from /proc without losing what it did, the parser reads what
the supervisor writes, the settings and the start hook agree, and every output marks what
was blocked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import netaudit_start
from netaudit import markers
from netaudit.allowlist import load
from netaudit.attribute import Lineage
from netaudit.audit import UNJUDGED, judge
from netaudit.block import Blocker
from netaudit.errors import ConfigError
from netaudit.model import (
    AF_INET,
    SESSION,
    AuditResult,
    Destination,
    Endpoint,
    Exec,
    Finding,
    HazardKind,
    Mark,
    MarkVerb,
    NetCall,
    NetEvent,
    Record,
    RunInfo,
    Spawn,
    Syscall,
)
from netaudit.parse import Parser
from netaudit.policy import TestPolicy, from_wire, normalise
from netaudit.render import github, text
from netaudit.render import json as json_report
from netaudit.rules import Allowlist
from netaudit.seccomp import Listener
from netaudit.settings import ProjectConfig, Settings, load_project_config, resolve
from netaudit.triage import Report, undeclared

RUN = "0123456789abcdef"


def call(tid: int, ip: str = "192.0.2.1", port: int = 443) -> NetCall:
    return NetCall(Syscall.CONNECT, tid, None, 3, Endpoint(AF_INET, ip, port), "?")


def mark(tid: int, verb: MarkVerb, test: int = -1) -> Mark:
    return Mark(tid, RUN, "", verb, test)


# -- placing a task no clone line has named yet ------------------------------------------


def events(lineage: Lineage, records: list[Record]) -> list[tuple[int, str, str]]:
    """(pid, program, test) of each call."""
    return [
        (item.process.pid, item.process.program, item.test)
        for item in lineage.attribute(records)
        if isinstance(item, NetEvent)
    ]


def test_a_child_placed_from_proc_belongs_to_its_parents_test_at_once() -> None:
    lineage = Lineage(root=(RUN, SESSION))
    lineage.expect(11, 10, thread=False)
    records: list[Record] = [
        Exec(10, "/usr/bin/python3"),
        mark(10, MarkVerb.START),
        mark(10, MarkVerb.BEGIN, 4),
        Exec(11, "/usr/bin/curl"),  # the child's exec, before its parent's clone returned
        call(11),
    ]
    assert events(lineage, records) == [(11, "curl", markers.test_key("", 4))]


def test_the_clone_line_that_comes_later_changes_nothing_the_task_did_since() -> None:
    lineage = Lineage(root=(RUN, SESSION))
    lineage.expect(11, 10, thread=False)
    records: list[Record] = [
        Exec(10, "/usr/bin/python3"),
        mark(10, MarkVerb.START),
        mark(10, MarkVerb.BEGIN, 1),
        Exec(11, "/usr/bin/python3"),
        mark(11, MarkVerb.START),  # a nested driver moved its own span
        mark(11, MarkVerb.BEGIN, 2),
        Spawn(10, 11, thread=False),  # the parent's clone line, at last
        call(11),
    ]
    assert events(lineage, records) == [(11, "python3", markers.test_key("", 2))]


def test_a_thread_placed_from_proc_is_its_process_and_its_tasks_record_nothing_twice() -> None:
    lineage = Lineage(root=(RUN, SESSION))
    lineage.expect(12, 10, thread=True)
    records: list[Record] = [Exec(10, "/bin/x"), call(12, port=1), Spawn(10, 12, True)]
    records.append(call(12, port=2))
    assert [pid for pid, _, _ in events(lineage, records)] == [10, 10]


def test_a_task_whose_parent_is_unknown_stands_as_a_process_of_its_own() -> None:
    lineage = Lineage(root=(RUN, SESSION))
    lineage.expect(30, 29, thread=False)
    assert events(lineage, [Exec(10, "/bin/x"), call(30)]) == [(30, "?", SESSION)]


# -- a live decision is the report's verdict ---------------------------------------------

ALLOWLIST = """\
version: 1
allowlist:
  - {name: api, family: AF_INET, cidr: 192.0.2.0/28, port: 443}
  - {name: db for integration, family: AF_INET, addr: 192.0.2.100, tests: ["*::test_db*"]}
"""
TESTS = {
    markers.test_key("", 0): ("t.py::test_db_query", None),
    markers.test_key("", 1): ("t.py::test_pure", normalise([((), {"strict": True})], "t.py", 1)),
    markers.test_key("", 2): (
        "t.py::test_mine",
        normalise([((), {"allow": ["198.51.100.0/24"]})], "t.py", 1),
    ),
}


def policy(nodeid: str, wire: dict[str, object] | None) -> TestPolicy | None:
    return None if wire is None else from_wire(wire, nodeid, "t.py", 1)


@given(
    st.sampled_from([SESSION, *TESTS]),
    st.sampled_from(["192.0.2.1", "192.0.2.20", "192.0.2.100", "198.51.100.7", "127.0.0.1"]),
    st.sampled_from([443, 5432]),
)
def test_the_live_decision_is_the_reports_verdict(test: str, ip: str, port: int) -> None:
    allowlist = load_text(ALLOWLIST)
    read, write = os.pipe()
    blocker = Blocker(
        Listener(read), lineage_in(test), allowlist, deny=1, run=RUN,
        test_of=lambda key: (TESTS[key][0], policy(*TESTS[key])) if key in TESTS else (key, None),
    )  # fmt: skip
    try:
        live = blocker.allows(10, (call(10, ip, port),))
    finally:
        blocker.close()
        os.close(write)
    nodeid, wire = TESTS.get(test, (SESSION, None))
    policies = {nodeid: p} if (p := policy(nodeid, wire)) is not None else {}
    (judged,) = judge([destination(nodeid, ip, port)], allowlist, policies)
    assert live == judged.verdict.allowed


def load_text(yaml: str) -> Allowlist:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as file:
        file.write(yaml)
    try:
        return load(file.name)
    finally:
        os.unlink(file.name)


def lineage_in(test: str) -> Lineage:
    """A lineage whose driver (pid 10) is in ``test`` now."""
    lineage = Lineage(root=(RUN, SESSION))
    records: list[Record] = [Exec(10, "/usr/bin/python3"), mark(10, MarkVerb.START)]
    if test != SESSION:
        records.append(mark(10, MarkVerb.BEGIN, int(test.rpartition(":")[2])))
    list(lineage.attribute([*records, call(10)]))
    return lineage


def destination(
    test: str, ip: str, port: int, results: tuple[tuple[str, int], ...] = ()
) -> Destination:
    return Destination(
        test=test, endpoint=Endpoint(AF_INET, ip, port), raw="", verdict=UNJUDGED,
        count=sum(n for _, n in results) or 1, pids=(10,), programs=("python3",),
        syscalls=("connect",), results=results or (("?", 1),),
    )  # fmt: skip


# -- what the parser reads of the supervisor's lines ---------------------------------------


def test_a_blocked_calls_line_reads_as_blocked_with_its_errno() -> None:
    line = (
        "10 1795634279.426813 connect(3, {sa_family=AF_INET, sin_port=htons(443), sin_addr="
        'inet_addr("192.0.2.1")}, 16) = -1 ECONNREFUSED (Connection refused) (BLOCKED)\n'
    )
    (found,) = Parser().records([line])
    assert isinstance(found, NetCall) and found.result == "BLOCKED ECONNREFUSED"


def test_a_second_listener_refused_in_the_tree_is_a_finding() -> None:
    line = (
        "10 1795634279.5 seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, "
        "{len=4, filter=0x7ffd}) = -1 EBUSY (Device or resource busy)\n"
    )
    (hazard,) = Parser().records([line])
    assert getattr(hazard, "kind", None) is HazardKind.SECCOMP_REFUSED
    finding = Finding(HazardKind.SECCOMP_REFUSED, 10, "sandbox")
    assert "refused (block mode holds the tree's)" in str(finding)


# -- settings and the start hook ----------------------------------------------------------


def project(tmp_path: Path, table: str) -> ProjectConfig:
    path = tmp_path / "pyproject.toml"
    path.write_text(f"[project]\nname = 'x'\n\n[tool.netaudit]\n{table}")
    return load_project_config(path)


def test_block_mode_implies_failing_tests_and_denying_io_uring(tmp_path: Path) -> None:
    settings = resolve(tmp_path, config=project(tmp_path, "block = true\n"))
    assert (settings.block, settings.fail_tests, settings.io_uring, settings.block_errno) == (
        True, True, "deny", "EPERM"
    )  # fmt: skip
    flagged = resolve(tmp_path, block=True, block_errno="ENETUNREACH", config=ProjectConfig())
    assert (flagged.block, flagged.block_errno) == (True, "ENETUNREACH")


def test_block_mode_with_io_uring_report_is_a_contradiction_named_at_its_line(
    tmp_path: Path,
) -> None:
    config = project(tmp_path, 'block = true\nio_uring = "report"\n')
    with pytest.raises(ConfigError) as raised:
        resolve(tmp_path, config=config)
    assert raised.value.line == 6 and "io_uring 'report' contradicts it" in str(raised.value)


def test_an_unknown_block_errno_is_refused_at_its_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        resolve(tmp_path, config=project(tmp_path, 'block_errno = "EINTR"\n'))
    assert raised.value.line == 5
    assert "block_errno must be one of EPERM, ECONNREFUSED, EACCES, ENETUNREACH" in str(
        raised.value
    )


def test_the_supervisor_is_told_block_mode_on_the_wire() -> None:
    settings = resolve(Path("/"), block=True, block_errno="EACCES", config=ProjectConfig())
    back = Settings.from_wire(json.loads(json.dumps(settings.to_wire())))
    assert (back.block, back.block_errno) == (True, "EACCES")


def test_the_start_hook_plans_block_mode_with_the_allowlist_the_plugin_resolves(
    tmp_path: Path,
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.netaudit]\nallowlist = "rules/egress.yaml"\nblock_errno = "EACCES"\n'
    )
    plan = netaudit_start.decide(["--netaudit", "--netaudit-block"], {}, tmp_path)
    expected = str((tmp_path / "rules" / "egress.yaml").resolve())
    assert plan == netaudit_start.Plan(
        io_uring="deny", block=True, block_errno="EACCES", allowlist=expected
    )
    flag = ["--netaudit", "--netaudit-block", "--netaudit-allowlist=other.yaml"]
    plan = netaudit_start.decide(flag, {}, tmp_path)
    assert plan is not None and plan.allowlist == str((tmp_path / "other.yaml").resolve())


def test_the_start_hook_leaves_a_contradiction_to_the_plugin_to_say(tmp_path: Path) -> None:
    args = ["--netaudit", "--netaudit-block", "--netaudit-io-uring=report"]
    assert netaudit_start.decide(args, {}, tmp_path) is None
    args = ["--netaudit", "--netaudit-block-errno=EINTR"]
    assert netaudit_start.decide(args, {}, tmp_path) is None


def test_block_mode_from_pyproject_needs_no_flag(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.netaudit]\nenabled = true\nblock = true\n")
    plan = netaudit_start.decide([], {}, tmp_path)
    assert plan is not None and plan.block and plan.allowlist is None


# -- every output marks what was blocked --------------------------------------------------


BLOCKED = destination("t.py::test_x", "192.0.2.1", 443, (("BLOCKED EPERM", 2),))
PARTLY = destination("t.py::test_x", "192.0.2.2", 443, (("0", 1), ("BLOCKED EPERM", 1)))
RESULT = AuditResult(judge([BLOCKED, PARTLY], load_text("version: 1\nallowlist: []\n")))


def test_the_text_report_marks_blocked_violations() -> None:
    report = text.report(RESULT, verbose=True)
    assert "netaudit: 2 violations detected (2 blocked)" in report
    assert "AF_INET 192.0.2.1:443 (count=2, pids=[10]) BLOCKED\n" in report
    assert "AF_INET 192.0.2.2:443 (count=2, pids=[10]) BLOCKED 1 of 2\n" in report
    assert "by python3: connect -> BLOCKED EPERM x2" in report
    assert "192.0.2.1:443                 BLOCKED" in report


def test_the_json_report_counts_blocked_calls() -> None:
    run = RunInfo(started="2026-01-01T00:00:00+00:00", host="h", netaudit_version="1")
    document = json.loads(json_report.to_json(RESULT, run))
    assert document["summary"]["blocked_calls"] == 3
    assert [d["blocked"] for d in document["destinations"]] == [2, 1]


def test_github_marks_blocked_violations() -> None:
    commands = github.error_commands(RESULT, {"t.py::test_x": "t.py:3"})
    assert "title=netaudit%3A AF_INET 192.0.2.1%3A443 is not allowed (blocked)" in commands
    assert "| 2 (2 blocked) |" in github.summary(RESULT)


def test_triage_says_how_many_calls_were_blocked() -> None:
    (one, two) = undeclared([Report("r.json", RESULT.destinations)])
    assert (one.blocked, two.blocked) == (2, 1)
