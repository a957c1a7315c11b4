"""The audit beside the plugins a suite is likely to have: pytest-cov, pytest-randomly,
pytest-timeout and pytest-asyncio. Each still does its job, and each test's calls are still
reported under that test.

These plugins are not in the test extras (pytest-randomly would reorder this suite's own
tests): the compatibility matrix (scripts/matrix) installs them, on every Python from 3.9 to
3.13 with the oldest and the newest pytest, and sets NETAUDIT_MATRIX=1, under which a missing
plugin fails instead of skipping.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.runner import pytest_run

pytestmark = pytest.mark.strace

#: Every "external" call is a UDP connect() to a documentation address: no packet is sent.
APP = """
import socket

def reach(host, port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return s.connect_ex((host, port))
"""

SYNC = """
from app import reach

def test_first():
    reach("192.0.2.71", 53)

def test_second():
    reach("192.0.2.72", 53)

def test_third():
    reach("192.0.2.73", 53)
"""

ASYNC = """
import asyncio
import socket

import pytest

@pytest.mark.asyncio
async def test_first():
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        try:
            await loop.sock_connect(s, ("192.0.2.71", 53))
        except OSError:
            pass

@pytest.mark.asyncio
async def test_second():
    from app import reach
    await asyncio.sleep(0)
    reach("192.0.2.72", 53)

def test_third():
    from app import reach
    reach("192.0.2.73", 53)
"""

EXPECTED = {
    "test_suite.py::test_first": "192.0.2.71:53",
    "test_suite.py::test_second": "192.0.2.72:53",
    "test_suite.py::test_third": "192.0.2.73:53",
}


def needs(module: str) -> None:
    if importlib.util.find_spec(module) is not None:
        return
    if os.environ.get("NETAUDIT_MATRIX") == "1":
        pytest.fail(f"{module} is not installed in this matrix cell")
    pytest.skip(f"{module} is installed by the compatibility matrix (scripts/matrix)")


def run(
    root: Path, suite: str, *args: str, shuffle: bool = False
) -> tuple[pytest.RunResult, dict[str, Any]]:
    (root / "app.py").write_text(APP, encoding="utf-8")
    (root / "test_suite.py").write_text(suite, encoding="utf-8")
    result = pytest_run(
        "--netaudit", "--netaudit-report=report.json", *args, cwd=root, shuffle=shuffle
    )
    text = "\n".join(result.outlines + result.errlines)
    assert result.ret == 1, text  # the tests pass; the violations fail the run
    result.stdout.fnmatch_lines(["*3 passed*, 3 netaudit violations in *"])
    report: dict[str, Any] = json.loads((root / "report.json").read_text(encoding="utf-8"))
    seen = {d["test"]: d["display"] for d in report["violations"]}
    assert seen == EXPECTED, text
    return result, report


def test_pytest_cov_measures_the_audited_session(pytester: pytest.Pytester) -> None:
    needs("pytest_cov")
    result, _ = run(pytester.path, SYNC, "--cov=app", "--cov-report=term")
    result.stdout.fnmatch_lines(["app.py * 100%*"])
    assert (pytester.path / ".coverage").is_file()


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["session", "xdist"])
def test_pytest_randomly_reorders_and_each_call_stays_with_its_test(
    pytester: pytest.Pytester, workers: list[str]
) -> None:
    needs("pytest_randomly")
    if workers:
        needs("xdist")
    result, _ = run(pytester.path, SYNC, "--randomly-seed=4", *workers, shuffle=True)
    result.stdout.fnmatch_lines(["Using --randomly-seed=4"])


def test_pytest_timeout_guards_the_audited_tests(pytester: pytest.Pytester) -> None:
    needs("pytest_timeout")
    result, _ = run(pytester.path, SYNC, "--timeout=300")
    result.stdout.fnmatch_lines(["timeout: 300.0s"])


def test_pytest_asyncio_tests_have_their_calls_reported_under_them(
    pytester: pytest.Pytester,
) -> None:
    needs("pytest_asyncio")
    (pytester.path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n", encoding="utf-8"
    )
    run(pytester.path, ASYNC)
