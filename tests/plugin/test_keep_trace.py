"""The raw trace kept for a replay: ``keep_trace`` / ``--netaudit-keep-trace``."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from tests.runner import netaudit, pytest_run

pytestmark = pytest.mark.strace

SUITE = """
import socket

def test_documentation_addresses():
    for port in (53, 80):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect_ex(("192.0.2.10", port))  # UDP: sends nothing; in the namespace, fails
        s.close()

def test_loopback():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect_ex(("127.0.0.1", 9))
    s.close()
"""


def verdicts(report: dict[str, Any]) -> Counter[tuple[Any, ...]]:
    """Destinations with their verdicts and evidence. The replay names tests by their keys
    (the table of nodeids is not in the trace), so tests are left out."""
    keys = ("family", "address", "port", "verdict", "rule", "count", "programs", "results")
    return Counter(tuple(json.dumps(d[key]) for key in keys) for d in report["destinations"])


def test_a_kept_trace_replays_to_the_verdicts_of_the_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_egress=SUITE)
    pytester.makepyprojecttoml('[tool.netaudit]\nkeep_trace = "traces/session.log"\n')
    (pytester.path / "traces").mkdir()
    result = pytest_run("--netaudit", "--netaudit-report=session.json", cwd=pytester.path)
    assert result.ret == 1, result.outlines + result.errlines
    kept = pytester.path / "traces" / "session.log"
    replay = netaudit("analyze", "--report", "replay.json", str(kept), cwd=pytester.path)
    assert replay.returncode == 1, replay.stderr
    session = json.loads((pytester.path / "session.json").read_text())
    replayed = json.loads((pytester.path / "replay.json").read_text())
    assert verdicts(replayed) == verdicts(session)
    assert {d["rule"] for d in session["destinations"]} >= {None, "loopback (IPv4)"}


def test_the_flag_names_the_file_and_one_that_cannot_be_written_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_egress=SUITE)
    (pytester.path / "blocked").write_text("a file where a folder would be")
    result = pytest_run("--netaudit", "--netaudit-keep-trace=blocked/t.log", cwd=pytester.path)
    assert result.ret == 4, result.outlines + result.errlines
    assert "so the keep trace's folder cannot be made there" in "\n".join(result.errlines)
    result = pytest_run("--netaudit", "--netaudit-keep-trace=t.log", cwd=pytester.path)
    assert result.ret == 1, result.outlines + result.errlines
    assert (pytester.path / "t.log").read_text().count("192.0.2.10") == 2
