"""The command line without strace: options, exit codes, output streams, messages."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from netaudit import status
from netaudit.cli import build_parser, main
from netaudit.errors import EXIT_INCOMPLETE, EXIT_USAGE, ExitCode
from tests.unit.test_allowlist import BAD

EXTERNAL = (
    "4242  1795634279.426813 connect(3, {sa_family=AF_INET, sin_port=htons(443), "
    'sin_addr=inet_addr("93.184.216.34")}, 16) = -1 ENETUNREACH (Network is unreachable)\n'
)
LOOPBACK = (
    "4242  1795634279.5 connect(4, {sa_family=AF_INET, sin_port=htons(5432), "
    'sin_addr=inet_addr("127.0.0.1")}, 16) = 0\n'
)
PG_RULE = "version: 1\nallowlist:\n  - name: ext\n    family: AF_INET\n    addr: 93.184.216.34\n"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def log(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "trace.log"
    path.write_text("".join(lines))
    return str(path)


def test_analyze_exits_zero_for_a_clean_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["analyze", log(tmp_path, LOOPBACK)]) == 0
    assert capsys.readouterr().out.startswith("netaudit: no violations")


def test_analyze_exits_one_for_violations_and_reports_them_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["analyze", log(tmp_path, EXTERNAL, LOOPBACK)]) == 1
    out = capsys.readouterr().out
    assert "    AF_INET 93.184.216.34:443 (count=1, pids=[4242])" in out


def test_analyze_exits_four_for_an_unreadable_log(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "missing.log"]) == EXIT_USAGE
    assert "cannot read the strace log missing.log" in capsys.readouterr().err


def test_analyze_exits_four_for_an_invalid_allowlist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "netaudit.yaml").write_text("version: 2\n")
    assert main(["analyze", log(tmp_path, LOOPBACK)]) == EXIT_USAGE
    assert f"{tmp_path / 'netaudit.yaml'}:1:" in capsys.readouterr().err


def test_netaudit_yaml_in_the_current_directory_is_used(tmp_path: Path) -> None:
    (tmp_path / "netaudit.yaml").write_text(PG_RULE)
    assert main(["analyze", log(tmp_path, EXTERNAL)]) == 0


def test_the_verbose_table_names_the_rule_for_each_destination(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["analyze", "--verbose", log(tmp_path, EXTERNAL, LOOPBACK)])
    out = capsys.readouterr().out
    assert "AF_INET      127.0.0.1:5432                OK         loopback (IPv4)" in out
    assert "AF_INET      93.184.216.34:443             VIOLATION  -" in out


def test_json_format_prints_the_report_and_report_writes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["analyze", "--format", "json", "--report", "r.json", log(tmp_path, EXTERNAL)]) == 1
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "r.json").read_text())
    assert printed["summary"]["violations"] == written["summary"]["violations"] == 1
    assert printed["run"]["log"] == str(tmp_path / "trace.log")


def test_pyproject_settings_apply_to_analyze(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.netaudit]\nverbose = true\nreport = "out.json"\n'
    )
    main(["analyze", log(tmp_path, LOOPBACK)])
    assert "verbose network event report" in capsys.readouterr().out
    assert (tmp_path / "out.json").exists()


def test_suggested_rules_are_printed_after_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["analyze", "--suggest-rules", log(tmp_path, EXTERNAL)])
    out = capsys.readouterr().out
    suggested = out.split("netaudit: rules that would allow the violations above:\n", 1)[1]
    (tmp_path / "s.yaml").write_text(suggested)
    assert main(["analyze", "--allowlist", "s.yaml", log(tmp_path, EXTERNAL)]) == 0


def test_check_lists_the_rules_with_their_lines_and_the_builtins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.yaml").write_text(PG_RULE)
    assert main(["check", "a.yaml"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"{tmp_path / 'a.yaml'} (command line): valid"
    assert "  line 3    ext" in out
    assert "  built-in  loopback (IPv4)" in out


def test_check_warns_of_a_tests_scope_that_names_no_file_or_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tests" / "sub").mkdir(parents=True)
    (tmp_path / "tests" / "test_p.py").write_text("")
    (tmp_path / "a.yaml").write_text(
        "version: 1\nallowlist:\n  - name: db\n    family: AF_INET\n    tests:\n"
        "      - tests/sub/\n      - tests/test_p.py::test_p[53]\n      - tests/*::x\n"
        "      - <session>\n      - tests/sbu/\n"
    )
    assert main(["check", "a.yaml"]) == 0  # valid all the same
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"netaudit: warning: {tmp_path / 'a.yaml'}:3: tests: 'tests/sbu/' names no file or "
        f"folder under {tmp_path} (nodeids are relative to pytest's rootdir): it would match "
        "no test"
    ]


def test_check_exits_four_with_the_file_and_line_for_an_invalid_allowlist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.yaml").write_text(
        "version: 1\nallowlist:\n  - family: AF_INET\n    port: 70000\n"
    )
    assert main(["check", "a.yaml"]) == EXIT_USAGE
    assert capsys.readouterr().err.startswith(f"netaudit: error: {tmp_path / 'a.yaml'}:4: ")


def test_run_reports_a_config_error_with_its_reserved_code(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.netaudit]\nenable = true\n")
    assert main(["run", "--", "true"]) == EXIT_USAGE


def test_run_without_a_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--"])
    assert exit_.value.code == EXIT_USAGE


def test_python_dash_m_runs_the_same_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "netaudit", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert done.stdout.startswith("netaudit ")


@pytest.mark.parametrize(("text", "message"), BAD)
@pytest.mark.parametrize("command", ["check", "analyze", "run"])
def test_each_bad_allowlist_fails_every_command_with_its_message_and_exit_code(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    message: str,
    command: str,
) -> None:
    (tmp_path / "allow.yaml").write_text(text)
    args = {
        "check": ["check", "allow.yaml"],
        "analyze": ["analyze", "--allowlist", "allow.yaml", log(tmp_path, LOOPBACK)],
        "run": ["run", "--allowlist", "allow.yaml", "--", "touch", "ran"],
    }[command]
    assert main(args) == EXIT_USAGE
    where = str(tmp_path / "allow.yaml")
    assert capsys.readouterr().err == f"netaudit: error: {where}{message[len('allow.yaml') :]}\n"
    assert not (tmp_path / "ran").exists()


def test_analyze_reads_standard_input_for_dash_whatever_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"\xff\xfe not UTF-8\n" + EXTERNAL.encode()))
    monkeypatch.setattr("sys.stdin", stdin)
    assert main(["analyze", "--format", "json", "-"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["run"]["log"] == "<stdin>"
    assert report["violations"][0]["address"] == "93.184.216.34"


def test_a_report_whose_folder_cannot_be_made_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "no").write_text("a file where the report's folder would be\n")
    assert main(["run", "--report", "no/such/r.json", "--", "touch", "ran"]) == EXIT_USAGE
    assert "is a file, so the report's folder cannot be made there" in capsys.readouterr().err
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00binary\n", "has no line in a form strace writes"),
        (b"just some text\nand more\n", "has no line in a form strace writes"),
    ],
)
def test_analyze_refuses_a_file_that_is_not_a_strace_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, said: str
) -> None:
    (tmp_path / "x.log").write_bytes(content)
    assert main(["analyze", "x.log"]) == EXIT_USAGE
    assert f"x.log {said}: nothing was judged" in capsys.readouterr().err


def _every_parser(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _every_parser(sub)


def test_every_option_and_argument_of_every_command_has_help_text() -> None:
    parsers = list(_every_parser(build_parser()))
    commands = ("run", "analyze", "check", "schema", "triage", "baseline")
    assert {parser.prog for parser in parsers} == {"netaudit", *(f"netaudit {c}" for c in commands)}
    missing = [
        f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
        for parser in parsers
        for action in parser._actions
        if not action.help or action.help == argparse.SUPPRESS
    ]
    assert missing == []


def test_the_exit_statuses_are_pytests_own_numbers_for_the_same_outcomes() -> None:
    pairs = [
        (ExitCode.OK, pytest.ExitCode.OK, status.OK),
        (ExitCode.VIOLATIONS, pytest.ExitCode.TESTS_FAILED, status.TESTS_FAILED),
        (ExitCode.INCOMPLETE, pytest.ExitCode.INTERNAL_ERROR, status.INTERNAL_ERROR),
        (ExitCode.USAGE, pytest.ExitCode.USAGE_ERROR, status.USAGE_ERROR),
    ]
    for ours, pytests, plugins in pairs:
        assert int(ours) == int(pytests) == plugins, ours.name


@pytest.mark.parametrize(
    "argv", [["nosuch"], ["analyze"], ["run", "--format", "xml", "--", "true"], ["--bogus"]]
)
def test_a_usage_error_exits_four_with_the_usage(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == EXIT_USAGE
    assert capsys.readouterr().err.startswith("usage: netaudit")


def test_analyze_exits_three_for_an_incomplete_audit_even_with_violations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uring = "4242  1795634279.1 io_uring_setup(4, {flags=0, sq_thread_cpu=0}) = 3\n"
    assert main(["analyze", log(tmp_path, EXTERNAL, uring)]) == EXIT_INCOMPLETE
    out = capsys.readouterr().out
    assert "netaudit: audit incomplete: io_uring used by pid 4242" in out
    assert "AF_INET 93.184.216.34:443" in out


def test_analyze_report_dash_prints_json_on_stdout_and_the_text_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["analyze", "--report", "-", "--suggest-rules", log(tmp_path, EXTERNAL)]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["summary"]["violations"] == 1
    assert "netaudit: 1 violation detected" in captured.err
    assert "rules that would allow the violations above" in captured.err
    assert not (tmp_path / "-").exists()


def test_json_format_keeps_suggested_rules_out_of_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["analyze", "--format", "json", "--suggest-rules", log(tmp_path, EXTERNAL)]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["summary"]["violations"] == 1
    assert "addr: 93.184.216.34" in captured.err


def test_report_dash_wins_over_the_report_file_of_pyproject(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.netaudit]\nreport = "out.json"\n')
    assert main(["analyze", "--report", "-", log(tmp_path, LOOPBACK)]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["clean"] is True
    assert not (tmp_path / "out.json").exists()


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"netaudit {metadata.version('netaudit')}\n"
