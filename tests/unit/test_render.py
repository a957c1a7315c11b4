"""The text and JSON reports, held to the shapes the plugin's documentation shows."""

from __future__ import annotations

import dataclasses
import json

import pytest

from netaudit import spill
from netaudit.model import (
    SESSION,
    AuditResult,
    Destination,
    Endpoint,
    Finding,
    HazardKind,
    RunInfo,
    TraceStats,
    Verdict,
)
from netaudit.render import text
from netaudit.render.json import SCHEMA_VERSION, to_json
from netaudit.render.text import (
    MAX_LISTED,
    MAX_PER_TEST,
    MAX_TESTS,
    by_destination,
    report,
    verbose_table,
    violations_block,
)

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


def test_each_violation_is_followed_by_the_program_the_call_and_its_result_in_words() -> None:
    lines = violations_block(SPEC_RESULT).splitlines()
    assert lines[6] == "      by python3: connect -> network unreachable"
    assert lines[10] == "      by python3: connect -> network unreachable"


@pytest.mark.parametrize(
    ("syscalls", "results", "said"),
    [
        (("connect",), (("0", 2),), "connect -> connected x2"),
        (
            ("connect",),
            (("ECONNREFUSED", 1), ("EINPROGRESS", 1)),
            "connect -> refused, in progress",
        ),
        (("sendto",), (("12", 1), ("40", 2)), "sendto -> sent x3"),
        (("connect", "sendto"), (("0", 1), ("48", 1)), "connect/sendto -> succeeded x2"),
        (("connect",), (("EHOSTUNREACH", 1), ("?", 1)), "connect -> host unreachable, unfinished"),
        (("connect",), (("EWEIRD", 1),), "connect -> EWEIRD"),  # as strace names it
    ],
)
def test_results_are_said_in_words(
    syscalls: tuple[str, ...], results: tuple[tuple[str, int], ...], said: str
) -> None:
    d = dataclasses.replace(dest("t::a", "192.0.2.1", 80), syscalls=syscalls, results=results)
    assert text.evidence_line(d) == f"by python3: {said}"


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
    one = dataclasses.replace(clean, stats=TraceStats(9, 1, 0))
    assert report(one) == "netaudit: no violations (1 destination checked, 1 call)"


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


# Locations ("file:line") and the by-destination summary.

FETCH = "tests/test_api.py::test_fetch_data"
WHERE = {FETCH: "tests/test_api.py:12"}
OK = "loopback (IPv4)"


def test_a_test_header_is_exactly_the_documented_one() -> None:
    assert text.test_header(FETCH) == f"  [{FETCH}]"


def test_the_location_follows_the_header_on_a_line_of_its_own() -> None:
    block = violations_block(SPEC_RESULT, WHERE).splitlines()
    assert block[4:6] == [f"  [{FETCH}]", "    defined at tests/test_api.py:12"]
    assert block[9] == "  [tests/test_payment.py::test_charge]"  # no location known
    table = verbose_table(SPEC_RESULT.destinations, WHERE).splitlines()
    assert table[4:6] == [f"  [{FETCH}]", "    defined at tests/test_api.py:12"]
    assert "    defined at tests/test_api.py:12" in report(SPEC_RESULT, True, WHERE)
    assert "tests/test_api.py:12" not in report(SPEC_RESULT, True)


def test_the_location_stays_in_the_at_lines_when_they_name_the_test() -> None:
    site = "tests/test_api.py:14 in test_fetch_data > src/app/client.py:88 in get"
    inner_only = "src/app/client.py:88 in get"
    own = dataclasses.replace(next(iter(SPEC_RESULT.destinations)), where=(site,))
    assert "defined at" not in violations_block(AuditResult((own,)), WHERE)
    thread = dataclasses.replace(own, where=(inner_only,))
    assert "    defined at tests/test_api.py:12" in violations_block(AuditResult((thread,)), WHERE)


def test_session_is_explained_once_under_its_first_header() -> None:
    result = AuditResult((dest(SESSION, "192.0.2.1", 80), dest("t::a", "192.0.2.2", 80)))
    block = violations_block(result).splitlines()
    assert block[4:6] == ["  [<session>]", text.SESSION_NOTE]
    assert text.SESSION_NOTE not in violations_block(result, explain_session=False)
    for verbose in (False, True):
        assert report(result, verbose).count(text.SESSION_NOTE) == 1


def test_a_long_unix_path_keeps_the_verbose_table_in_its_columns() -> None:
    path = "/run/user/1000/app/with/a/deep/folder/api.sock"
    unix = Destination(
        test="t::a",
        endpoint=Endpoint("AF_UNIX", path),
        raw="",
        verdict=Verdict("Unix sockets", "builtin"),
        count=1,
        pids=(1,),
        programs=("python3",),
        syscalls=("connect",),
        results=(("0", 1),),
    )
    table = verbose_table((unix, dest("t::a", "192.0.2.1", 80))).splitlines()
    head = table.index("FAMILY       ADDR:PORT                      STATUS     RULE")
    assert table[head + 2 : head + 5] == [
        f"AF_UNIX      {path}",
        f"{'':<42} OK         Unix sockets",
        "AF_INET      192.0.2.1:80                  VIOLATION  -",
    ]
    status = table[head].index("STATUS") - 1  # rows sit one column left of the header
    assert table[head + 3].index("OK") == table[head + 4].index("VIOLATION") == status


def test_the_system_resolver_is_labelled() -> None:
    resolver = dataclasses.replace(dest("t::a", "10.255.255.53", 53), resolver=True)
    assert text.violation_line(resolver).startswith("AF_INET 10.255.255.53:53 (system resolver) (")


def test_by_destination_lists_destinations_more_than_one_test_reached() -> None:
    result = (
        dest("t::a", "93.184.216.34", 443),
        dest("t::a", "127.0.0.1", 5432, OK),
        dest("t::b", "93.184.216.34", 443),
        dest("t::b", "3.33.146.76", 443),
    )
    assert by_destination(result).splitlines() == [
        "  netaudit: destinations and the tests that reached them",
        "    AF_INET 93.184.216.34:443 VIOLATION: 2 tests: t::a, t::b",
    ]
    assert by_destination(result, every=True).splitlines()[1:] == [
        "    AF_INET 93.184.216.34:443 VIOLATION: 2 tests: t::a, t::b",
        "    AF_INET 127.0.0.1:5432 OK: 1 test: t::a",
        "    AF_INET 3.33.146.76:443 VIOLATION: 1 test: t::b",
    ]


def test_by_destination_adds_nothing_when_each_violation_has_one_test() -> None:
    assert by_destination(SPEC_RESULT.destinations) == ""
    assert report(SPEC_RESULT).count("93.184.216.34:443") == 1  # each violation shown once


def test_by_destination_says_nothing_without_violations_unless_asked_for_every_one() -> None:
    clean = (dest("t::a", "127.0.0.1", 5432, OK),)
    assert by_destination(clean) == ""
    assert by_destination(()) == ""
    assert by_destination(clean, every=True) != ""


def test_by_destination_names_a_test_once_however_often_it_reached_the_destination() -> None:
    again = dest("t::a", "93.184.216.34", 443)
    after = dataclasses.replace(again, after_test=True, pids=(99,))
    line = by_destination((again, after, again), every=True).splitlines()[1]
    assert line == "    AF_INET 93.184.216.34:443 VIOLATION: 1 test: t::a"
    assert by_destination((again, after, again)) == ""  # one test: nothing to add


def test_by_destination_names_at_most_max_tests_and_counts_the_rest() -> None:
    many = tuple(dest(f"t::{i}", "93.184.216.34", 443) for i in range(MAX_TESTS + 3))
    shown = ", ".join(f"t::{i}" for i in range(MAX_TESTS))
    assert by_destination(many).splitlines()[1] == (
        f"    AF_INET 93.184.216.34:443 VIOLATION: {MAX_TESTS + 3} tests: {shown}, +3 more"
    )
    exactly = many[:MAX_TESTS]
    assert "more" not in by_destination(exactly)


def test_by_destination_skips_calls_outside_any_test() -> None:
    outside = (dest("", "93.184.216.34", 443),)
    assert by_destination(outside) == ""
    assert by_destination(outside, every=True) == ""
    mixed = (*outside, dest("t::a", "93.184.216.34", 443))
    assert by_destination(mixed, every=True).splitlines()[1].endswith(": 1 test: t::a")


def test_the_json_report_gives_each_destination_its_location() -> None:
    run = RunInfo(started="x", host="h", netaudit_version="0")
    odd = 'tests/we"ird\\\u00e9\n.py'
    result = AuditResult(
        destinations=(
            dest(FETCH, "93.184.216.34", 443),
            dest("t::b", "127.0.0.1", 5432, OK),
            dest(odd + "::t", "3.33.146.76", 443),
        )
    )
    locations = {**WHERE, odd + "::t": odd + ":3"}
    doc = json.loads(to_json(result, run, locations))
    assert [d["location"] for d in doc["destinations"]] == [
        "tests/test_api.py:12",
        None,
        odd + ":3",
    ]
    assert [d["location"] for d in doc["violations"]] == ["tests/test_api.py:12", odd + ":3"]
    # Still one destination per line, each a JSON object of its own.
    rows = [line.rstrip(",") for line in to_json(result, run, locations).splitlines()]
    objects = [json.loads(row) for row in rows if row.startswith("  {")]
    in_destinations = [*WHERE.values(), None, odd + ":3"]
    in_violations = [*WHERE.values(), odd + ":3"]
    assert [o["location"] for o in objects] == [*in_destinations, *in_violations]
    without = json.loads(to_json(result, run))
    assert [d["location"] for d in without["destinations"]] == [None, None, None]


# A report that stays readable at any size.


def violations(test: str, n: int, first: int = 0) -> list[Destination]:
    return [dest(test, f"10.0.{i // 250}.{i % 250 + 1}", 443) for i in range(first, first + n)]


def kept_on_disk(destinations: list[Destination]) -> AuditResult:
    kept = spill.store(map(spill.record, destinations), spill.Scratch(), small=0)
    assert isinstance(kept, spill.Spilled)
    return AuditResult(destinations=kept)


def test_the_violations_block_lists_at_most_max_per_test_of_a_test_and_counts_the_rest() -> None:
    result = AuditResult(destinations=tuple(violations("t::a", MAX_PER_TEST + 7)))
    lines = violations_block(result, more="the full list is in r.json").splitlines()
    assert lines[1] == f"  netaudit: {MAX_PER_TEST + 7} violations detected"
    assert sum(line.startswith("    AF_INET ") for line in lines) == MAX_PER_TEST
    assert lines[-2] == "    and 7 more; the full list is in r.json"
    assert lines[-1] == RULE


def test_the_violations_block_lists_at_most_max_listed_in_all() -> None:
    tests = [f"t::{i}" for i in range(MAX_LISTED // MAX_PER_TEST + 2)]
    result = AuditResult(
        destinations=tuple(
            d for i, t in enumerate(tests) for d in violations(t, MAX_PER_TEST, i * 100)
        )
    )
    block = violations_block(result)
    lines = block.splitlines()
    assert sum(line.startswith("    AF_INET ") for line in lines) == MAX_LISTED
    assert lines[-2] == f"  and {2 * MAX_PER_TEST} more in 2 more tests; {text.IN_JSON}"
    assert f"[{tests[-1]}]" not in block


def test_a_report_kept_on_disk_reads_as_the_same_report() -> None:
    few = violations("t::a", 3) + violations("t::b", 2, 50)
    many = [d for i in range(8) for d in violations(f"t::{i}", 30, i * 40)]
    many.insert(5, dest("t::a", "127.0.0.1", 5432, OK))
    for destinations in (few, many):
        on_disk, in_memory = kept_on_disk(destinations), AuditResult(tuple(destinations))
        assert report(on_disk, verbose=True) == report(in_memory, verbose=True)
        run = RunInfo(started="x", host="h", netaudit_version="0")
        assert to_json(on_disk, run) == to_json(in_memory, run)


def test_the_verbose_table_and_the_summary_by_destination_are_cut_too() -> None:
    many = tuple(dest(f"t::{i}", f"10.1.0.{i}", 443) for i in range(MAX_LISTED + 5))
    table = verbose_table(many, more="M").splitlines()
    assert sum(line.startswith("AF_INET ") for line in table) == MAX_LISTED
    assert table[-2] == "  and 5 more in 5 more tests; M"
    summary = by_destination(many, every=True, more="M").splitlines()
    assert len(summary) == 1 + MAX_LISTED + 1
    assert summary[-1] == "    and 5 more destinations; M"


def test_a_cut_list_says_where_the_rest_is_or_how_to_get_it() -> None:
    assert text.full_list("egress.json", "--report") == (
        "the full list is in the JSON report (egress.json)"
    )
    assert text.full_list(None, "--netaudit-report") == (
        "the full list is in the JSON report: write one with --netaudit-report PATH"
    )


def test_findings_are_grouped_one_line_per_kind_with_tests_programs_and_remedy() -> None:
    found = [
        Finding(HazardKind.IO_URING, pid, "python3", test)
        for pid, test in [(10, "t::a"), (11, "t::a"), (12, "t::b"), (13, SESSION)]
    ] + [Finding(HazardKind.RAW_PACKET, 20, "tcpdump", "t::c")]
    lines = text.findings_lines(found)
    assert lines == [
        "netaudit: audit incomplete: io_uring used by 4 processes (python3) in 2 tests "
        "(t::a, t::b) and outside any test (<session>): calls submitted through a ring are "
        'invisible to strace; with io_uring = "deny" (the default) io_uring_setup fails and '
        "programs fall back to plain sockets, which are judged",
        "netaudit: audit incomplete: a raw packet socket (AF_PACKET) bound to an interface by "
        "pid 20 (tcpdump) in 1 test (t::c): its frames carry no address to judge; run that "
        "program outside the audited command",
    ]
    assert text.findings_lines([Finding(HazardKind.IO_URING, 7, "app")])[0].startswith(
        "netaudit: audit incomplete: io_uring used by pid 7 (app): "
    )


def test_a_parameter_holding_double_colons_does_not_hide_the_tests_own_frame() -> None:
    test = "tests/t.py::test_x[a :: b]"
    d = dataclasses.replace(dest(test, "192.0.2.1", 80), where=("tests/t.py:5 in test_x",))
    block = violations_block(AuditResult((d,)), {test: "tests/t.py:3"})
    assert "defined at" not in block


@pytest.mark.parametrize("kind", list(HazardKind))
def test_every_kind_of_finding_says_what_it_is_and_what_to_do(kind: HazardKind) -> None:
    (line,) = text.findings_lines([Finding(kind, 7, "app", "t.py::t")])
    assert line.startswith("netaudit: audit incomplete: ")
    assert "by pid 7 (app) in 1 test (t.py::t): " in line
