"""What goes to standard output and what to standard error, with the real strace: standard
output carries one thing, the command's own output or what netaudit was asked for, so that
``netaudit run --format json -- CMD | jq`` and ``netaudit baseline -- CMD > netaudit.yaml``
work. Every "external" call is made in a private network namespace (nothing leaves)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from netaudit import allowlist
from netaudit.errors import EXIT_VIOLATIONS
from tests.netns import Netns
from tests.runner import netaudit

pytestmark = pytest.mark.strace

PY = sys.executable
#: Writes to both streams of its own, and makes one call no rule allows.
CHATTY = (
    "import socket, sys\n"
    "print('command says hello')\n"
    "print('command complains', file=sys.stderr)\n"
    "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect_ex(('192.0.2.44', 4444))\n"
)


def test_run_format_json_writes_only_the_report_to_stdout(netns: Netns, tmp_path: Path) -> None:
    done = netaudit("run", "--format", "json", "--", PY, "-c", CHATTY, cwd=tmp_path, netns=netns)
    assert done.returncode == EXIT_VIOLATIONS, done.stderr
    report = json.loads(done.stdout)
    assert [v["display"] for v in report["violations"]] == ["192.0.2.44:4444"]
    assert "command says hello\n" in done.stderr
    assert "command complains\n" in done.stderr
    assert "violations detected" not in done.stderr  # json instead of the text report


def test_run_report_dash_puts_json_on_stdout_and_the_text_report_on_stderr(
    netns: Netns, tmp_path: Path
) -> None:
    done = netaudit(
        "run", "--suggest-rules", "--report", "-", "--", PY, "-c", CHATTY,
        cwd=tmp_path, netns=netns,
    )  # fmt: skip
    assert done.returncode == EXIT_VIOLATIONS, done.stderr
    assert json.loads(done.stdout)["summary"]["violations"] == 1
    assert "netaudit: 1 violation detected" in done.stderr
    assert "rules that would allow the violations above" in done.stderr
    assert "command says hello\n" in done.stderr
    assert list(tmp_path.iterdir()) == []  # no file named "-"


def test_run_keeps_the_commands_stdout_when_the_report_is_text(
    netns: Netns, tmp_path: Path
) -> None:
    done = netaudit("run", "--", PY, "-c", CHATTY, cwd=tmp_path, netns=netns)
    assert done.stdout == "command says hello\n"
    assert "netaudit: 1 violation detected" in done.stderr


def test_annotations_under_github_actions_stay_out_of_the_json_on_stdout(
    netns: Netns, tmp_path: Path
) -> None:
    env = {**os.environ, "GITHUB_ACTIONS": "true"}
    env.pop("GITHUB_STEP_SUMMARY", None)
    done = netaudit(
        "run", "--format", "json", "--", PY, "-c", CHATTY, cwd=tmp_path, netns=netns, env=env
    )
    assert json.loads(done.stdout)["summary"]["violations"] == 1
    assert "::error title=netaudit%3A AF_INET 192.0.2.44%3A4444 is not allowed::" in done.stderr


def test_baseline_of_a_command_keeps_the_commands_output_out_of_the_allowlist(
    netns: Netns, tmp_path: Path
) -> None:
    done = netaudit("baseline", "--", PY, "-c", CHATTY, cwd=tmp_path, netns=netns)
    assert done.returncode == 0, done.stderr
    assert "command says hello" not in done.stdout.splitlines()
    assert "command says hello\n" in done.stderr
    rules = allowlist.loads(done.stdout).rules
    assert [rule.name for rule in rules] == ["REVIEW: AF_INET 192.0.2.44:4444"]


def test_baseline_to_a_file_leaves_the_commands_stdout_where_it_was(
    netns: Netns, tmp_path: Path
) -> None:
    done = netaudit("baseline", "-o", "a.yaml", "--", PY, "-c", CHATTY, cwd=tmp_path, netns=netns)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "command says hello\n"
    assert len(allowlist.load(tmp_path / "a.yaml").rules) == 1
