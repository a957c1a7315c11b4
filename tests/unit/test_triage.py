"""`netaudit triage` and `netaudit baseline`: reports read back, merged, judged again, and
written as an allowlist that our own loader reads and that allows exactly what it lists.

Reports are written by render.json itself, so they have the very form runs write.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from netaudit import allowlist as allowlist_module
from netaudit import jsonstream, spill
from netaudit.audit import judge
from netaudit.cli import main
from netaudit.errors import EXIT_USAGE
from netaudit.model import AuditResult, Destination, Endpoint, RunInfo, Verdict
from netaudit.render.json import to_json
from netaudit.rules import Allowlist
from netaudit.triage import (
    REVIEW_PREFIX,
    ReportError,
    baseline_header,
    load_report,
    to_yaml,
    undeclared,
)
from netaudit.triage import to_json as triage_json

RUN = RunInfo(started="2026-01-01T00:00:00+00:00", host="ci", netaudit_version="0")
PUBLIC = Endpoint("AF_INET", "93.184.216.34", 443)
DOCS = Endpoint("AF_INET", "192.0.2.10", 53)
DOCS6 = Endpoint("AF_INET6", "2001:db8::5", 443)
SOCKET = Endpoint("AF_UNIX", "/run/app[1].sock")
DB = Endpoint("AF_INET", "10.0.0.5", 5432)


def dest(
    endpoint: Endpoint | None,
    test: str = "tests/test_a.py::test_one",
    rule: str | None = None,
    count: int = 1,
    programs: tuple[str, ...] = ("python3",),
    where: tuple[str, ...] = (),
    raw: str = "",
) -> Destination:
    return Destination(
        test=test,
        endpoint=endpoint,
        raw=raw,
        verdict=Verdict(rule),
        count=count,
        pids=(100,),
        programs=programs,
        syscalls=("connect",),
        results=(("ENETUNREACH", count),),
        where=where,
    )


def write(path: Path, *destinations: Destination) -> Path:
    path.write_text(to_json(AuditResult(destinations), RUN), encoding="utf-8")
    return path


def test_a_report_reads_back_as_the_destinations_it_was_written_from(tmp_path: Path) -> None:
    written = (
        dest(PUBLIC, where=("tests/test_a.py:3 in test_one",)),
        dest(DB, rule="db"),
        dest(SOCKET, rule="Unix sockets"),
        dest(Endpoint("AF_INET6", "fe80::1", 80, "2"), test=""),
        dest(None, raw="connect(3, 0xdead, 16) = -1 EFAULT"),
    )
    report = load_report(write(tmp_path / "r.json", *written))
    assert report.destinations == written


def test_reports_are_merged_with_their_evidence(tmp_path: Path) -> None:
    one = write(
        tmp_path / "one.json",
        dest(PUBLIC, count=2, where=("tests/test_a.py:3 in test_one",)),
        dest(DOCS, test="tests/test_b.py::test_two", programs=("dig",)),
        dest(DB, rule="db"),
    )
    two = write(
        tmp_path / "two.json",
        dest(PUBLIC, test="tests/test_c.py::test_three", programs=("curl",), count=3),
    )
    found = undeclared([load_report(one), load_report(two)])
    assert [(e.endpoint, e.calls, e.runs) for e in found] == [(PUBLIC, 5, 2), (DOCS, 1, 1)]
    public = found[0]
    assert public.tests == ("tests/test_a.py::test_one", "tests/test_c.py::test_three")
    assert public.programs == ("curl", "python3")
    assert public.where == ("tests/test_a.py:3 in test_one",)
    assert public.routable is True
    assert found[1].routable is False  # a documentation address is not globally routable


def test_the_yaml_loads_and_allows_exactly_what_it_lists(tmp_path: Path) -> None:
    listed = (PUBLIC, DOCS, DOCS6, SOCKET, Endpoint("AF_UNIX", "@abstract*name"))
    report = load_report(write(tmp_path / "r.json", *(dest(e) for e in listed)))
    found = undeclared([report])
    document = to_yaml(found, 1, ["header"])
    loaded = allowlist_module.loads(document)
    assert len(loaded.rules) == len(listed)
    for endpoint in listed:
        assert loaded.match(endpoint) is not None, endpoint
    for near in (
        Endpoint("AF_INET", "93.184.216.34", 444),
        Endpoint("AF_INET", "93.184.216.35", 443),
        Endpoint("AF_UNIX", "/run/app1.sock"),
        Endpoint("AF_UNIX", "@abstractXname"),
    ):
        rule = loaded.match(near)
        assert rule is None or rule.builtin, near


def test_the_evidence_is_in_comments_above_each_rule(tmp_path: Path) -> None:
    report = load_report(
        write(
            tmp_path / "r.json",
            dest(PUBLIC, test="tests/test_a.py::test_one[a\nb]", where=("t.py:3 in f",)),
        )
    )
    lines = to_yaml(undeclared([report]), 1, []).splitlines()
    start = lines.index("allowlist:") + 1
    assert lines[start : start + 5] == [
        "  # AF_INET 93.184.216.34:443: 1 call in 1 of 1 runs; globally routable",
        "  #   tests: tests/test_a.py::test_one[a\\x0ab]",
        "  #   programs: python3",
        "  #   at t.py:3 in f",
        "  - name: AF_INET 93.184.216.34:443",
    ]


def test_what_no_rule_can_allow_is_listed_in_comments(tmp_path: Path) -> None:
    report = load_report(
        write(
            tmp_path / "r.json",
            dest(Endpoint("AF_UNIX", "")),
            dest(None, raw="connect(3, 0xdead, 16) = -1 EFAULT"),
        )
    )
    document = to_yaml(undeclared([report]), 1, [])
    assert allowlist_module.loads(document).rules == ()
    assert "# Undeclared, and no rule can allow exactly these:" in document
    assert "#   UNPARSED connect(3, 0xdead, 16) = -1 EFAULT: 1 call in 1 of 1 runs" in document
    assert "#     strace's line could not be parsed, so no rule can allow it" in document


def test_an_allowlist_leaves_out_what_it_allows_and_judges_again(tmp_path: Path) -> None:
    report = load_report(
        write(tmp_path / "r.json", dest(PUBLIC), dest(DOCS), dest(DB, rule="old db rule"))
    )
    policy = allowlist_module.loads(
        "version: 1\nallowlist:\n  - name: ext\n    family: AF_INET\n    addr: 93.184.216.34\n"
    )
    found = undeclared([report], policy)
    # The report's own rule for the database is not in this allowlist: undeclared again.
    assert [e.endpoint for e in found] == [DB, DOCS]  # the suggested rules' order
    assert [e.endpoint for e in undeclared([report])] == [PUBLIC, DOCS]


def test_the_json_output_has_the_evidence_and_the_rule(tmp_path: Path) -> None:
    report = load_report(write(tmp_path / "r.json", dest(DOCS6, where=("t.py:1 in f",))))
    document = json.loads(triage_json(undeclared([report]), [report.path]))
    assert document["schema"] == "netaudit.triage"
    assert document["schema_version"] == 1
    (item,) = document["undeclared"]
    assert item["display"] == "[2001:db8::5]:443"
    assert (item["calls"], item["runs"], item["globally_routable"]) == (1, 1, False)
    assert item["where"] == ["t.py:1 in f"]
    assert item["rule"] == {"family": "AF_INET6", "addr": "2001:db8::5", "port": 443}


def test_a_baseline_marks_every_rule_for_review(tmp_path: Path) -> None:
    report = load_report(write(tmp_path / "r.json", dest(PUBLIC), dest(DOCS), dest(SOCKET)))
    found = undeclared([report], Allowlist(rules=(), builtins=False))
    document = to_yaml(found, 1, baseline_header("r.json"), review=True)
    loaded = allowlist_module.loads(document)
    assert len(loaded.rules) == 3
    assert all(rule.name.startswith(REVIEW_PREFIX) for rule in loaded.rules)
    assert document.count("\n  # review:") == 3
    assert all(d.verdict.allowed for d in judge(report.destinations, loaded))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the report"),
        (b"\xff\xfe", "not UTF-8 text"),
        (b'{\n "schema": \n', ":3: not JSON"),
        (b"[]", "not a netaudit report"),
        (b'{"schema": "netaudit.report", "schema_version": 2}', "schema version 2 is not"),
        (b'{"schema": "netaudit.report", "schema_version": 1, "destinations": 3}', "damaged"),
        (
            b'{"schema": "netaudit.report", "schema_version": 1, "destinations": [{"family": 1}]}',
            "destinations[0] is damaged",
        ),
    ],
)
def test_an_unreadable_report_is_an_error_naming_the_file(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "report.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ReportError) as raised:
        load_report(path)
    assert str(raised.value).startswith(str(path))
    assert message in str(raised.value)


# -- the command line ----------------------------------------------------------------------


def test_triage_exits_0_when_nothing_is_undeclared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean = write(tmp_path / "clean.json", dest(DB, rule="db"))
    assert main(["triage", str(clean)]) == 0
    assert "allowlist: []" in capsys.readouterr().out


def test_triage_exits_1_and_prints_rules_for_what_is_undeclared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = write(tmp_path / "one.json", dest(PUBLIC))
    two = write(tmp_path / "two.json", dest(PUBLIC), dest(DOCS))
    assert main(["triage", str(one), str(two)]) == 1
    out = capsys.readouterr().out
    assert "# AF_INET 93.184.216.34:443: 2 calls in 2 of 2 runs; globally routable" in out
    assert len(allowlist_module.loads(out).rules) == 2
    assert main(["triage", "--format", "json", str(one)]) == 1
    assert json.loads(capsys.readouterr().out)["undeclared"][0]["calls"] == 1


def test_triage_with_an_allowlist_that_allows_all_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = write(tmp_path / "r.json", dest(PUBLIC))
    policy = tmp_path / "netaudit.yaml"
    policy.write_text("version: 1\nallowlist:\n  - name: ext\n    family: AF_INET\n")
    assert main(["triage", "--allowlist", str(policy), str(report)]) == 0


def test_triage_exits_4_for_an_unreadable_report_and_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path / "good.json", dest(PUBLIC))
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "netaudit.report", "schema_version": 99}')
    assert main(["triage", str(good), str(bad)]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"netaudit: error: {bad}: report schema version 99" in captured.err


def test_baseline_writes_a_file_and_will_not_overwrite_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    report = write(tmp_path / "r.json", dest(PUBLIC), dest(DB, rule="db"))
    out = tmp_path / "netaudit.yaml"
    assert main(["baseline", "--from", str(report), "-o", str(out)]) == 0
    loaded = allowlist_module.load(out)
    assert [r.name for r in loaded.rules] == [
        f"{REVIEW_PREFIX}AF_INET 10.0.0.5:5432",
        f"{REVIEW_PREFIX}AF_INET 93.184.216.34:443",
    ]
    assert main(["baseline", "--from", str(report), "-o", str(out)]) == EXIT_USAGE
    assert "add --force" in capsys.readouterr().err
    assert main(["baseline", "--from", str(report), "-o", str(out), "--force"]) == 0
    capsys.readouterr()
    assert main(["check", str(out)]) == 0  # valid, but not reviewed yet: check says so
    first = allowlist_module.load(out).rules[0]
    assert (
        f"netaudit: warning: 2 rule(s) of a baseline not reviewed yet (the first at "
        f"{first.source}:{first.line})" in capsys.readouterr().err
    )
    out.write_text(out.read_text().replace(REVIEW_PREFIX, ""))
    assert main(["check", str(out)]) == 0
    assert "not reviewed" not in capsys.readouterr().err


def test_baseline_needs_reports_or_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["baseline"])
    assert exited.value.code == EXIT_USAGE
    with pytest.raises(SystemExit):
        main(["baseline", "--from", "r.json", "--", "true"])
    assert "baseline needs reports or a command" in capsys.readouterr().err


def test_known_names_make_host_rules_one_per_name_and_queries_are_evidence(tmp_path: Path) -> None:
    second = Endpoint("AF_INET", "192.0.2.11", 443)
    resolver = Endpoint("AF_INET", "127.0.0.53", 53)
    query = replace(dest(resolver), raw="dns A api.example.test")
    report = write(
        tmp_path / "r.json",
        replace(dest(DOCS6), names=("api.example.test",)),
        replace(dest(second), names=("api.example.test", "edge-7.cdn.example.test")),
        query,
    )
    found = undeclared([load_report(report)])
    assert sorted(e.names for e in found if e.endpoint != resolver) == [
        ("api.example.test",),
        ("api.example.test", "edge-7.cdn.example.test"),
    ]
    document = to_yaml(found, 1, ["header"])
    assert document.count("host: api.example.test") == 1
    assert "resolved from: api.example.test, edge-7.cdn.example.test" in document
    assert "DNS queries: A api.example.test" in document
    loaded = allowlist_module.loads(document, "triage.yaml")
    assert [rule.hosts for rule in loaded.rules if rule.hosts] == [("api.example.test",)]
    named = replace(dest(second), names=("api.example.test",))
    assert judge([named], loaded)[0].verdict.allowed
    assert not judge([dest(second)], loaded)[0].verdict.allowed  # no name seen: no match
    items = json.loads(triage_json(found, [str(report)]))["undeclared"]
    assert {item["rule"].get("host") for item in items} == {"api.example.test", None}
    assert [item["queries"] for item in items if item["queries"]] == [["A api.example.test"]]


# Reports of any size: read as a stream, merged in bounded memory, written as they go.


def big_report(path: Path, n: int) -> tuple[Destination, ...]:
    destinations = tuple(
        dest(
            Endpoint("AF_INET", f"10.0.{i // 200}.{i % 200}", 443 + i % 3),
            test=f"tests/test_a.py::test_{i % 7}",
            rule="db" if i % 5 == 0 else None,
            where=(f"tests/test_a.py:{i % 11} in test_x",),
        )
        for i in range(n)
    )
    write(path, *destinations)
    return destinations


def test_a_report_read_in_small_chunks_reads_as_it_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = big_report(tmp_path / "r.json", 60)
    monkeypatch.setattr(jsonstream, "_CHUNK", 7)
    assert load_report(tmp_path / "r.json").destinations == written
    (tmp_path / "odd.json").write_text(
        json.dumps(json.loads((tmp_path / "r.json").read_text()), indent=3, sort_keys=True)
    )
    assert load_report(tmp_path / "odd.json").destinations == written  # any layout, any order


def test_a_damaged_report_names_the_line_past_the_first_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big_report(tmp_path / "r.json", 40)
    lines = (tmp_path / "r.json").read_text().splitlines()
    lines[30] = lines[30][:-5]
    (tmp_path / "r.json").write_text("\n".join(lines))
    monkeypatch.setattr(jsonstream, "_CHUNK", 64)
    with pytest.raises(ReportError, match=r"r\.json:31: not JSON"):
        load_report(tmp_path / "r.json")


def test_a_big_report_is_kept_on_disk_and_triaged_as_a_small_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = big_report(tmp_path / "r.json", 300)
    in_memory = undeclared([load_report(tmp_path / "r.json")])
    monkeypatch.setattr(spill, "SMALL", 10)
    monkeypatch.setattr(spill, "LIMIT", 16)
    report = load_report(tmp_path / "r.json")
    assert isinstance(report.destinations, spill.Spilled)
    assert list(report.destinations) == list(written)
    found = undeclared([report, report])
    assert len(found) == len(in_memory) == 240
    assert list(found) == [replace(e, runs=2, calls=2 * e.calls) for e in in_memory]
    assert found[3] == list(found)[3]
    assert to_yaml(found, 2, []) == to_yaml(list(found), 2, [])


def test_the_triage_json_is_written_as_json_dumps_would_write_it(tmp_path: Path) -> None:
    report = load_report(write(tmp_path / "r.json", dest(PUBLIC), dest(None, raw="junk")))
    found = undeclared([report])
    document = json.loads(triage_json(found, ["r.json"]))
    assert triage_json(found, ["r.json"]) == json.dumps(document, indent=1) + "\n"
    assert (
        triage_json([], [])
        == json.dumps(
            {"schema": "netaudit.triage", "schema_version": 1, "reports": [], "undeclared": []},
            indent=1,
        )
        + "\n"
    )
