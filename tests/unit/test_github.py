"""GitHub Actions output: workflow commands escaped by GitHub's rules, and the step summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from netaudit.cli import main
from netaudit.model import SESSION, AuditResult, Destination, Endpoint, Finding, HazardKind, Verdict
from netaudit.render import github


def dest(test: str, address: str, port: int, rule: str | None = None) -> Destination:
    return Destination(
        test=test,
        endpoint=Endpoint("AF_INET", address, port),
        raw="",
        verdict=Verdict(rule),
        count=2,
        pids=(41,),
        programs=("curl", "python3"),
        syscalls=("connect",),
        results=(("ENETUNREACH", 2),),
    )


TEST = "tests/test_api.py::test_fetch[a,b:c]"
RESULT = AuditResult(
    (
        dest(TEST, "203.0.113.10", 443),
        dest(TEST, "127.0.0.1", 5432, "loopback (IPv4)"),
        dest(SESSION, "192.0.2.1", 53),
    )
)
LOCATIONS = {TEST: "tests/test_api.py:42"}


def test_messages_escape_percent_and_line_breaks_and_properties_also_colon_and_comma() -> None:
    assert github.escape_data("100%\r\nok: a,b") == "100%25%0D%0Aok: a,b"
    assert github.escape_property("100%\r\nok: a,b") == "100%25%0D%0Aok%3A a%2Cb"


def test_each_violation_is_an_error_on_its_tests_file_and_line() -> None:
    lines = github.error_commands(RESULT, LOCATIONS).splitlines()
    assert lines == [
        "::error file=tests/test_api.py,line=42,title=netaudit%3A AF_INET 203.0.113.10%3A443 "
        "is not allowed::[tests/test_api.py::test_fetch[a,b:c]] AF_INET 203.0.113.10:443 "
        "(count=2, pids=[41])%0Aby curl, python3: connect -> network unreachable x2",
        "::error title=netaudit%3A AF_INET 192.0.2.1%3A53 is not allowed::[<session>] "
        "AF_INET 192.0.2.1:53 (count=2, pids=[41])%0Aby curl, python3: connect -> network "
        "unreachable x2",
    ]


def test_a_finding_is_an_error_too_and_a_clean_run_makes_none() -> None:
    finding = Finding(HazardKind.IO_URING, 7, "app")
    assert github.error_commands(AuditResult((), (finding,))) == (
        "::error title=netaudit%3A audit incomplete::audit incomplete: io_uring used by pid 7 "
        "(app)\n"
    )
    assert github.error_commands(AuditResult((dest(TEST, "127.0.0.1", 1, "x"),))) == ""


def test_the_summary_is_a_headline_and_a_table_of_violations() -> None:
    assert github.summary(RESULT, LOCATIONS) == (
        "### netaudit: 2 violations\n"
        "\n"
        "| Test | Destination | Calls | By |\n"
        "|---|---|---|---|\n"
        "| `tests/test_api.py::test_fetch[a,b:c]` (tests/test_api.py:42) "
        "| `AF_INET 203.0.113.10:443` | 2 | curl, python3 |\n"
        "| `<session>` | `AF_INET 192.0.2.1:53` | 2 | curl, python3 |\n"
    )


def test_the_summary_of_a_clean_run_is_one_line_and_table_cells_cannot_break_the_table() -> None:
    clean = AuditResult((dest(TEST, "127.0.0.1", 1, "x"),))
    assert github.summary(clean) == "### netaudit: no violations (1 destinations checked)\n"
    odd = AuditResult((dest("t.py::test_x[a|b`c]", "192.0.2.1", 1),))
    assert "| `t.py::test_x[a\\|b'c]` |" in github.summary(odd)


def test_the_summary_lists_at_most_max_rows() -> None:
    many = AuditResult(tuple(dest(f"t::test_{n}", "192.0.2.1", 1) for n in range(55)))
    text = github.summary(many)
    assert text.count("\n| `t::test_") == github.MAX_ROWS
    assert text.endswith("... and 5 more; see the job's log.\n")


LOG = (
    "4242  1795634279.426813 connect(3, {sa_family=AF_INET, sin_port=htons(443), "
    'sin_addr=inet_addr("203.0.113.10")}, 16) = -1 ENETUNREACH (Network is unreachable)\n'
)


@pytest.mark.parametrize("actions", ["true", "false", None])
def test_analyze_writes_annotations_and_the_summary_only_under_github_actions(
    actions: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    if actions is None:
        monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    else:
        monkeypatch.setenv("GITHUB_ACTIONS", actions)
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    (tmp_path / "trace.log").write_text(LOG)
    assert main(["analyze", "trace.log"]) == 1
    out = capsys.readouterr().out
    annotation = "::error title=netaudit%3A AF_INET 203.0.113.10%3A443 is not allowed::"
    if actions == "true":
        assert out.splitlines()[-1].startswith(annotation)
        assert summary.read_text() == "earlier step\n### netaudit: 1 violation\n" + (
            "\n| Test | Destination | Calls | By |\n|---|---|---|---|\n"
            "| (the command) | `AF_INET 203.0.113.10:443` | 1 | ? |\n"
        )
    else:
        assert "::error" not in out
        assert summary.read_text() == "earlier step\n"
