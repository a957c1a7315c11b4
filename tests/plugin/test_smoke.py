"""The plugin end to end on a small suite: the shape a user sees."""

from __future__ import annotations

import pytest

from tests.runner import pytest_run

pytestmark = pytest.mark.strace

SUITE = """
import socket

def test_udp_to_documentation_address():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect_ex(("192.0.2.10", 53))  # UDP: sends nothing; in the namespace, fails at once
    s.close()

def test_quiet():
    pass
"""


def test_a_violation_fails_a_passing_session_and_names_its_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_egress=SUITE)
    result = pytest_run("--netaudit", cwd=pytester.path)
    assert result.ret == 1, result.outlines + result.errlines
    result.stdout.fnmatch_lines(
        [
            "netaudit: auditing network egress; allowlist: built-in rules only",
            "*2 passed*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "  netaudit: 1 violation detected",
            "",
            "  [test_egress.py::test_udp_to_documentation_address]",
            "    AF_INET 192.0.2.10:53 (count=1, pids=[[]*[]])",
        ]
    )
