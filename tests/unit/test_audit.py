"""Judging: one verdict per destination, folded with its evidence."""

from __future__ import annotations

from netaudit.allowlist import DEFAULT, loads
from netaudit.audit import audit, audit_lines
from netaudit.model import (
    Endpoint,
    Finding,
    HazardKind,
    NetCall,
    NetEvent,
    Process,
    Syscall,
)

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
