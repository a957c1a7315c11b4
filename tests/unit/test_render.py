"""The text and JSON reports, held to the shapes the plugin's documentation shows."""

from __future__ import annotations

import json

from netaudit.model import AuditResult, Destination, Endpoint, RunInfo, TraceStats, Verdict
from netaudit.render.json import SCHEMA_VERSION, to_json
from netaudit.render.text import report, verbose_table, violations_block

RULE = "=" * 60


def dest(
    test: str, ip: str, port: int, rule: str | None = None, pids: tuple[int, ...] = (12345,)
) -> Destination:
    return Destination(
        test=test,
        endpoint=Endpoint("AF_INET", ip, port),
        raw="",
        verdict=Verdict(rule),
        count=1,
        pids=pids,
        programs=("python3",),
        syscalls=("connect",),
        results=(("ENETUNREACH", 1),),
    )


SPEC_RESULT = AuditResult(
    destinations=(
        dest("tests/test_api.py::test_fetch_data", "93.184.216.34", 443),
        dest("tests/test_payment.py::test_charge", "3.33.146.76", 443, pids=(12346,)),
    )
)


def test_the_violations_block_has_the_documented_shape() -> None:
    lines = violations_block(SPEC_RESULT).splitlines()
    documented = [line for line in lines if not line.startswith("      ")]
    assert documented == [
        RULE,
        "  netaudit: 2 violations detected",
        RULE,
        "",
        "  [tests/test_api.py::test_fetch_data]",
        "    AF_INET 93.184.216.34:443 (count=1, pids=[12345])",
        "",
        "  [tests/test_payment.py::test_charge]",
        "    AF_INET 3.33.146.76:443 (count=1, pids=[12346])",
        RULE,
    ]


def test_each_violation_is_followed_by_the_program_the_call_and_its_result() -> None:
    lines = violations_block(SPEC_RESULT).splitlines()
    assert lines[6] == "      by python3: connect -> ENETUNREACH"
    assert lines[10] == "      by python3: connect -> ENETUNREACH"


def test_the_verbose_table_matches_the_documented_table_character_for_character() -> None:
    result = AuditResult(
        destinations=(
            dest("tests/test_api.py::test_fetch_data", "127.0.0.1", 5432, "loopback (IPv4)"),
            dest("tests/test_api.py::test_fetch_data", "93.184.216.34", 443),
        )
    )
    assert verbose_table(result.destinations).splitlines() == [
        RULE,
        "  netaudit: verbose network event report",
        RULE,
        "",
        "  [tests/test_api.py::test_fetch_data]",
        "FAMILY       ADDR:PORT                      STATUS     RULE",
        "------------ ------------------------------ ---------- ------------------------",
        "AF_INET      127.0.0.1:5432                OK         loopback (IPv4)",
        "AF_INET      93.184.216.34:443             VIOLATION  -",
        RULE,
    ]


def test_a_run_without_tests_lists_destinations_without_a_test_header() -> None:
    lines = violations_block(AuditResult(destinations=(dest("", "192.0.2.1", 80),))).splitlines()
    assert lines[1] == "  netaudit: 1 violation detected"
    assert lines[3] == ""
    assert lines[4] == "    AF_INET 192.0.2.1:80 (count=1, pids=[12345])"


def test_a_clean_run_says_so_in_one_line() -> None:
    clean = AuditResult(
        destinations=(dest("", "127.0.0.1", 80, "loopback (IPv4)"),), stats=TraceStats(9, 4, 0)
    )
    assert report(clean) == "netaudit: no violations (1 destination checked, 4 calls)"


def test_long_pid_lists_are_cut_with_a_count() -> None:
    many = dest("", "192.0.2.1", 80, pids=tuple(range(1, 16)))
    line = violations_block(AuditResult(destinations=(many,))).splitlines()[4]
    assert line.endswith("pids=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, +5 more])")


def test_the_json_report_carries_metadata_destinations_and_violations() -> None:
    run = RunInfo(
        started="2026-11-26T04:00:00+00:00",
        host="ci-1",
        netaudit_version="0.1.0",
        command=("pytest",),
        strace_version="6.1",
        syscalls=("connect",),
        exit_status=0,
    )
    result = AuditResult(
        destinations=(
            dest("t::a", "127.0.0.1", 5432, "loopback (IPv4)"),
            dest("t::a", "93.184.216.34", 443),
        )
    )
    doc = json.loads(to_json(result, run))
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["run"]["started"].endswith("+00:00")
    assert doc["run"]["command"] == ["pytest"]
    assert doc["summary"]["violations"] == 1 and doc["summary"]["clean"] is False
    assert [d["verdict"] for d in doc["destinations"]] == ["allowed", "violation"]
    assert doc["violations"][0]["address"] == "93.184.216.34"
    assert doc["violations"][0]["port"] == 443
    assert doc["violations"][0]["results"] == {"ENETUNREACH": 1}


def test_the_json_report_is_written_for_a_clean_run_too() -> None:
    run = RunInfo(started="x", host="h", netaudit_version="0")
    doc = json.loads(to_json(AuditResult(destinations=()), run))
    assert doc["summary"]["clean"] is True
    assert doc["destinations"] == [] and doc["violations"] == []
