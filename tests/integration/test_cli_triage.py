"""`netaudit baseline -- CMD` and `netaudit triage` on reports of `netaudit run`: the real
strace on real processes, in a private network namespace (nothing leaves the machine)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from netaudit import allowlist
from netaudit.errors import EXIT_VIOLATIONS
from netaudit.model import Endpoint
from netaudit.triage import REVIEW_PREFIX
from tests.netns import Netns
from tests.runner import netaudit

pytestmark = pytest.mark.strace

REACH = """
import socket, sys
for port in sys.argv[1:]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect_ex(("192.0.2.77", int(port)))
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.connect_ex(("127.0.0.1", 9))
"""


def test_a_baseline_of_a_command_allows_that_command(tmp_path: Path, netns: Netns) -> None:
    out = tmp_path / "netaudit.yaml"
    made = netaudit(
        "baseline", "-o", str(out), "--", sys.executable, "-c", REACH, "53", "443",
        cwd=tmp_path, netns=netns,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "wrote" in made.stderr and "2 rules to review" in made.stderr
    loaded = allowlist.load(out)
    assert [rule.name for rule in loaded.rules] == [
        f"{REVIEW_PREFIX}AF_INET 192.0.2.77:53",
        f"{REVIEW_PREFIX}AF_INET 192.0.2.77:443",
    ]
    assert loaded.match(Endpoint("AF_INET", "192.0.2.77", 80)) is None
    again = netaudit("run", "--", sys.executable, "-c", REACH, "53", "443", cwd=tmp_path,
                     netns=netns)  # fmt: skip
    assert again.returncode == 0, again.stderr


def test_a_baseline_keeps_a_failed_commands_status(tmp_path: Path, netns: Netns) -> None:
    made = netaudit(
        "baseline", "--", sys.executable, "-c", REACH + "\nsys.exit(7)", "53",
        cwd=tmp_path, netns=netns,
    )  # fmt: skip
    assert made.returncode == 7
    assert "netaudit: the command exited with 7\n" in made.stderr
    assert len(allowlist.loads(made.stdout).rules) == 1


def test_triage_merges_the_reports_of_several_runs(tmp_path: Path, netns: Netns) -> None:
    reports = []
    for n, ports in enumerate((["53"], ["53", "443"])):
        report = tmp_path / f"run{n}.json"
        ran = netaudit(
            "run", "--report", str(report), "--", sys.executable, "-c", REACH, *ports,
            cwd=tmp_path, netns=netns,
        )  # fmt: skip
        assert ran.returncode == EXIT_VIOLATIONS, ran.stderr
        reports.append(str(report))
    triaged = netaudit("triage", "--format", "json", *reports, cwd=tmp_path)
    assert triaged.returncode == 1, triaged.stderr
    found = {
        u["display"]: (u["calls"], u["runs"]) for u in json.loads(triaged.stdout)["undeclared"]
    }
    assert found == {"192.0.2.77:53": (2, 2), "192.0.2.77:443": (1, 2 - 1)}
