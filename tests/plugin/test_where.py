"""Where in the code under ``pytest --netaudit``: the Python lines behind each destination, in
the violations block, the verbose table and the JSON report, also from xdist workers; and
`netaudit triage` / `netaudit baseline` on the report a session wrote.

Every "external" call is a UDP connect() to a documentation address (nothing is sent), and
the suites run in the private network namespace (tests/plugin/conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from netaudit import allowlist
from netaudit.model import SESSION
from netaudit.trace import Tracer
from tests.runner import netaudit, pytest_run

pytestmark = pytest.mark.strace

HELPERS = """
import socket

def udp(host, port=53):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect_ex((host, port))  # helper line
"""

CONFTEST = """
import pytest
from helpers import udp

@pytest.fixture(scope="session")
def shared():
    udp("198.51.100.1")  # session fixture line
"""

SUITE = """
import ctypes, ctypes.util, socket, struct, subprocess, sys, threading
from helpers import udp

def test_direct():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect_ex(("192.0.2.1", 53))  # direct line

def test_helper(shared):
    udp("192.0.2.2")  # test line

def test_thread():
    thread = threading.Thread(target=udp, args=("192.0.2.3",))
    thread.start()
    thread.join()

def test_child():
    code = ("import socket; "
            "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect_ex(('192.0.2.4', 53))")
    subprocess.run([sys.executable, "-c", code], check=True)

def test_c_code():
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        addr = struct.pack("=H", socket.AF_INET) + struct.pack(
            "!H4s8x", 53, socket.inet_aton("192.0.2.5"))
        libc.connect(s.fileno(), ctypes.c_char_p(addr), len(addr))
"""


def line_of(path: Path, marker: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, start=1) if marker in line)


def where_by_address(report: Path) -> dict[tuple[str, str], list[str]]:
    document: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    return {(d["test"], d["display"]): d["where"] for d in document["destinations"]}


@pytest.fixture
def suite(pytester: pytest.Pytester) -> Path:
    pytester.makepyfile(helpers=HELPERS, test_where=SUITE)
    pytester.makeconftest(CONFTEST)
    return pytester.path


def expected(path: Path) -> dict[tuple[str, str], list[str]]:
    helper = f"helpers.py:{line_of(path / 'helpers.py', '# helper line')} in udp"
    test = path / "test_where.py"
    return {
        ("test_where.py::test_direct", "192.0.2.1:53"): [
            f"test_where.py:{line_of(test, '# direct line')} in test_direct"
        ],
        ("test_where.py::test_helper", "192.0.2.2:53"): [
            f"test_where.py:{line_of(test, '# test line')} in test_helper > {helper}"
        ],
        # A wider fixture belongs to the session: there is no test frame to show.
        (SESSION, "198.51.100.1:53"): [helper],
        # Another thread: the test's frame is not on its stack.
        ("test_where.py::test_thread", "192.0.2.3:53"): [helper],
        # A child process and C code: what the trace knows, and no more.
        ("test_where.py::test_child", "192.0.2.4:53"): [],
        ("test_where.py::test_c_code", "192.0.2.5:53"): [],
    }


def test_each_destination_shows_the_python_lines_that_reached_it(
    suite: Path, tracer: Tracer
) -> None:
    report = suite / "report.json"
    result = pytest_run(
        "--netaudit", "--netaudit-verbose", f"--netaudit-report={report}", cwd=suite
    )
    assert result.ret == 1, result.outlines + result.errlines
    found = where_by_address(report)
    for key, sites in expected(suite).items():
        assert found[key] == sites, key
    direct = expected(suite)[("test_where.py::test_direct", "192.0.2.1:53")][0]
    result.stdout.fnmatch_lines(
        [
            "    AF_INET 192.0.2.1:53 (count=1, pids=[[]*[]])",
            "      by python*: connect -> network unreachable",
            f"      at {direct}",
        ],
        consecutive=True,
    )
    result.stdout.fnmatch_lines(
        ["AF_INET      192.0.2.1:53 * VIOLATION  -", f"{'':<12} at {direct}"], consecutive=True
    )


def test_xdist_workers_ship_their_lines_to_the_controller(suite: Path, tracer: Tracer) -> None:
    report = suite / "report.json"
    result = pytest_run("--netaudit", "-n", "2", f"--netaudit-report={report}", cwd=suite)
    assert result.ret == 1, result.outlines + result.errlines
    found = where_by_address(report)
    for key, sites in expected(suite).items():
        assert found[key] == sites, key


def test_triage_and_baseline_read_a_sessions_report(suite: Path, tracer: Tracer) -> None:
    report = suite / "report.json"
    pytest_run("--netaudit", f"--netaudit-report={report}", cwd=suite)
    triaged = netaudit("triage", str(report), cwd=suite)
    assert triaged.returncode == 1, triaged.stderr
    rules = allowlist.loads(triaged.stdout).rules
    assert len(rules) == 6  # every undeclared destination, each with one exact rule
    direct = expected(suite)[("test_where.py::test_direct", "192.0.2.1:53")][0]
    assert f"  #   at {direct}\n" in triaged.stdout
    assert "  #   tests: test_where.py::test_direct\n" in triaged.stdout

    out = suite / "netaudit.yaml"
    made = netaudit("baseline", "--from", str(report), "-o", str(out), cwd=suite)
    assert made.returncode == 0, made.stderr
    again = pytest_run("--netaudit", cwd=suite)
    assert again.ret == 0, "\n".join(again.outlines + again.errlines)  # the baseline allows it
    assert netaudit("triage", "--allowlist", str(out), str(report), cwd=suite).returncode == 0
