"""``pytest --netaudit-block`` end to end: each call is decided for the test running in the
caller's process tree at that moment (its marker, ``tests:``-scoped rules, the session's
rules for what no test runs), the test that made a violation fails even when it swallowed the
exception, and the reports, JUnit and GitHub's outputs say what was blocked. And the live
verdicts alone (``--netaudit-fail-tests``), without blocking.

Every suite runs in a private network namespace: a call block mode lets through to an
"external" address fails with ENETUNREACH; one it refuses fails with EPERM. The "external"
calls are UDP connects besides, which send nothing.
"""

from __future__ import annotations

import errno
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.runner import pytest_run

pytestmark = pytest.mark.strace

SUITE = f"""
import errno, os, socket, subprocess, sys, time

import pytest

EPERM, UNREACHABLE = {errno.EPERM}, {errno.ENETUNREACH}


def reach(host, port=53):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return s.connect_ex((host, port))


@pytest.fixture(scope="module")
def shared():
    assert reach("192.0.2.50") == EPERM  # the session's: neither test's rules apply


@pytest.mark.netaudit(allow=["192.0.2.10:53"])
def test_marker_allows(shared):
    assert reach("192.0.2.10") == UNREACHABLE  # let through: it reached the stack
    assert reach("192.0.2.11") == EPERM


def test_scoped_rule_applies():
    assert reach("192.0.2.99") == UNREACHABLE


def test_scoped_rule_elsewhere():
    assert reach("192.0.2.99") == EPERM


@pytest.mark.netaudit(strict=True)
def test_strict():
    assert reach("127.0.0.1", 9) == EPERM  # not even loopback


def test_swallowed():
    try:
        socket.create_connection(("203.0.113.5", 443))
    except OSError:
        pass


def test_loopback_only():
    assert reach("127.0.0.1", 9) == 0
"""

ALLOWLIST = """\
version: 1
allowlist:
  - {name: scoped, family: AF_INET, addr: 192.0.2.99, tests: ["*::test_scoped_rule_applies"]}
"""
#: Each test's outcome: netaudit's failure (its own assertions held), or a pass.
OUTCOMES = {
    "test_marker_allows": "netaudit: 1 destination not allowed",
    "test_scoped_rule_applies": None,
    "test_scoped_rule_elsewhere": "netaudit: 1 destination not allowed",
    "test_strict": "netaudit: 1 destination not allowed",
    "test_swallowed": "netaudit: 1 destination not allowed",
    "test_loopback_only": None,
}


def write_suite(root: Path, suite: str = SUITE) -> None:
    (root / "test_block_suite.py").write_text(suite, encoding="utf-8")
    (root / "netaudit.yaml").write_text(ALLOWLIST, encoding="utf-8")


def output(result: pytest.RunResult) -> str:
    return "\n".join(result.outlines + result.errlines)


def outcomes(junit: Path) -> dict[str, str | None]:
    """Each test case's failure message (None: it passed), from the JUnit file."""
    found = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        failure = case.find("failure")
        message = None if failure is None else failure.get("message", "")
        found[case.get("name", "")] = None if message is None else message.splitlines()[0]
    return found


def properties(junit: Path) -> dict[str, list[str]]:
    return {
        case.get("name", ""): [p.get("value", "") for p in case.iter("property")]
        for case in ET.parse(junit).getroot().iter("testcase")
    }


@pytest.mark.parametrize("workers", [None, "2"])
def test_each_call_is_decided_for_the_test_that_makes_it(
    pytester: pytest.Pytester, workers: str | None
) -> None:
    write_suite(pytester.path)
    xdist = ["-n", workers] if workers else []
    result = pytest_run(
        "--netaudit", "--netaudit-block", "--junitxml=junit.xml", "--netaudit-report=r.json",
        *xdist, cwd=pytester.path,
    )  # fmt: skip
    assert result.ret == 1, output(result)
    assert outcomes(pytester.path / "junit.xml") == OUTCOMES, output(result)
    report: dict[str, Any] = json.loads((pytester.path / "r.json").read_text())
    blocked = {(d["test"].split("::")[-1], d["display"]) for d in report["violations"]}
    assert blocked == {
        ("<session>", "192.0.2.50:53"),
        ("test_marker_allows", "192.0.2.11:53"),
        ("test_scoped_rule_elsewhere", "192.0.2.99:53"),
        ("test_strict", "127.0.0.1:9"),
        ("test_swallowed", "203.0.113.5:443"),
    }
    assert all(d["blocked"] == d["count"] for d in report["violations"])
    assert report["summary"]["blocked_calls"] == 5
    result.stdout.fnmatch_lines(["*netaudit: 5 violations detected (5 blocked)*"])
    (swallowed,) = properties(pytester.path / "junit.xml")["test_swallowed"]
    assert swallowed.startswith("AF_INET 203.0.113.5:443 (count=1, pids=[")
    assert swallowed.endswith("]) BLOCKED; by python: connect -> BLOCKED EPERM")


DAEMON = """
import os, signal, socket, subprocess, sys, time

import pytest

CALLER = '''
import socket, sys, time
out = open(sys.argv[1], "a", buffering=1)
while True:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        out.write(f"{s.connect_ex(('192.0.2.10', 53))}\\\\n")
    time.sleep(0.01)
'''
LOG = os.path.join(os.path.dirname(__file__), "daemon.log")


@pytest.mark.netaudit(allow=["192.0.2.10:53"])
def test_a_starts_a_daemon():
    daemon = subprocess.Popen([sys.executable, "-c", CALLER, LOG])
    open(LOG + ".pid", "w").write(str(daemon.pid))


def test_b_while_it_calls():
    size = os.path.getsize(LOG) if os.path.exists(LOG) else 0
    while not os.path.exists(LOG) or os.path.getsize(LOG) <= size + 8:
        time.sleep(0.01)  # calls the daemon made while this test runs
    os.kill(int(open(LOG + ".pid").read()), signal.SIGKILL)
"""


def test_a_daemon_keeps_the_rules_of_the_test_that_started_it(pytester: pytest.Pytester) -> None:
    (pytester.path / "test_daemon.py").write_text(DAEMON, encoding="utf-8")
    result = pytest_run("--netaudit", "--netaudit-block", cwd=pytester.path)
    assert result.ret == 0, output(result)
    seen = set((pytester.path / "daemon.log").read_text().split())
    assert seen == {str(errno.ENETUNREACH)}, seen  # let through: test A's rules, not B's


def test_a_call_made_before_the_session_says_hello_is_decided_too(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        "import socket\n"
        "with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:\n"
        "    print('conftest', s.connect_ex(('198.51.100.3', 53)))\n"
    )
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytest_run("--netaudit", "--netaudit-block", "-s", cwd=pytester.path)
    assert result.ret == 1, output(result)
    result.stdout.fnmatch_lines([f"conftest {errno.EPERM}", "*  [[]<session>[]]*"])


def test_the_plugins_own_start_blocks_as_the_start_hook_does(pytester: pytest.Pytester) -> None:
    write_suite(pytester.path)
    result = pytest_run(
        "--netaudit", "--netaudit-block", "--junitxml=junit.xml", cwd=pytester.path,
        env={**os.environ, "NETAUDIT_EARLY_START": "0"},
    )  # fmt: skip
    assert result.ret == 1, output(result)
    assert outcomes(pytester.path / "junit.xml") == OUTCOMES, output(result)


def test_block_mode_set_in_pyproject_says_so_in_the_header(pytester: pytest.Pytester) -> None:
    write_suite(pytester.path)
    (pytester.path / "pyproject.toml").write_text(
        '[tool.netaudit]\nenabled = true\nblock = true\nblock_errno = "EACCES"\n'
    )
    suite = SUITE.replace(
        f"EPERM, UNREACHABLE = {errno.EPERM}", f"EPERM, UNREACHABLE = {errno.EACCES}"
    )
    write_suite(pytester.path, suite)
    result = pytest_run("--junitxml=junit.xml", cwd=pytester.path)
    assert result.ret == 1, output(result)
    result.stdout.fnmatch_lines(
        ["netaudit: block mode: calls the allowlist does not allow fail with EACCES"]
    )
    assert outcomes(pytester.path / "junit.xml") == OUTCOMES, output(result)


def test_github_marks_what_was_blocked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_gh="import socket\n\ndef test_out():\n"
        "    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect_ex(('192.0.2.7', 53))\n"
    )
    summary = pytester.path / "summary.md"
    env = {**os.environ, "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    result = pytest_run("--netaudit", "--netaudit-block", cwd=pytester.path, env=env)
    assert result.ret == 1, output(result)
    result.stdout.fnmatch_lines(
        ["::error file=test_gh.py,line=3,title=netaudit%3A AF_INET 192.0.2.7%3A53 is not "
         "allowed (blocked)::*"]
    )  # fmt: skip
    assert "| 1 (1 blocked) |" in summary.read_text()


NESTED = """
import subprocess, sys

def test_runs_pytest():
    inner = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--netaudit",
         "--netaudit-block", "inner"], capture_output=True, text=True)
    print(inner.stdout + inner.stderr)
    assert inner.returncode == 4
    assert "cannot block (block mode is set when the outermost session starts)" in (
        inner.stdout + inner.stderr)
"""


def test_a_session_inside_a_session_that_does_not_block_cannot_block(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_outer=NESTED)
    (pytester.path / "inner").mkdir()
    (pytester.path / "inner" / "test_inner.py").write_text("def test_i():\n    pass\n")
    result = pytest_run("--netaudit", "test_outer.py", cwd=pytester.path)
    assert result.ret == 0, output(result)


# -- live verdicts without blocking ---------------------------------------------------------

VERDICTS = """
import socket


def reach(host):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return s.connect_ex((host, 53))


def test_reaches_out():
    assert reach("192.0.2.1") != 1  # not blocked: it reached the stack


def test_not_run_after_x():
    pass
"""


def test_fail_tests_fails_the_test_that_made_a_violation_so_that_x_stops_there(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_verdicts=VERDICTS)
    result = pytest_run("--netaudit", "--netaudit-fail-tests", "-x", cwd=pytester.path)
    assert result.ret == 1, output(result)
    result.stdout.fnmatch_lines(
        [
            "*_ test_reaches_out _*",
            "netaudit: 1 destination not allowed",
            "  AF_INET 192.0.2.1:53 (count=1, pids=*); by python: connect -> network unreachable",
            "*1 failed*",
        ]
    )
    assert "test_not_run_after_x" not in output(result)
    assert "BLOCKED" not in output(result)


TEARDOWN = """
import socket

import pytest


@pytest.fixture
def leaves():
    yield
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect_ex(("192.0.2.2", 53))


def test_fails_itself(leaves):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect_ex(("192.0.2.3", 53))
    assert False, "its own failure"
"""


def test_a_failed_test_keeps_its_failure_and_a_teardowns_calls_fail_the_teardown(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_teardown=TEARDOWN)
    result = pytest_run("--netaudit", "--netaudit-fail-tests", cwd=pytester.path)
    assert result.ret == 1, output(result)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_fails_itself*",
            "netaudit: 1 destination not allowed",
            "  AF_INET 192.0.2.2:53*",
            "*AssertionError: its own failure*",
            "*- netaudit -*",
            "netaudit: 1 destination not allowed",
            "  AF_INET 192.0.2.3:53*",
        ]
    )
