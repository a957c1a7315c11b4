"""The audit is invisible to the rest of pytest: every other plugin behaves exactly as in an
unaudited run. Each of its hooks runs once, in the traced session, never in the supervising
process; pytest-cov's data, the JUnit file and the cache (``--lf``) come out as they would
without ``--netaudit``. Both starts are checked: the start hook's (the supervisor is not a
pytest process) and the plugin's own fallback (a pytest that supervises from its first hook).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from netaudit.trace import Tracer
from tests.runner import pytest_run

pytestmark = pytest.mark.strace

#: How the audited session starts: the start hook, or the plugin's fallback.
STARTS = {"hook": {}, "fallback": {"NETAUDIT_EARLY_START": "0"}}

#: A plugin that records, for every hook it implements, the process it ran in and whether that
#: process was traced.
RECORDER = """
import os

def _note(hook):
    traced = 0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("TracerPid:"):
                traced = int(line.split()[1])
    with open(os.environ["RECORD"], "a") as out:
        out.write(f"{os.getpid()} {int(traced != 0)} {hook}\\n")

def pytest_addoption(parser):
    _note("pytest_addoption")

def pytest_load_initial_conftests(early_config, parser, args):
    _note("pytest_load_initial_conftests")

def pytest_configure(config):
    _note("pytest_configure")

def pytest_sessionstart(session):
    _note("pytest_sessionstart")

def pytest_collection_finish(session):
    _note("pytest_collection_finish")

def pytest_runtest_logreport(report):
    _note("pytest_runtest_logreport:" + report.when)

def pytest_sessionfinish(session):
    _note("pytest_sessionfinish")

def pytest_terminal_summary(terminalreporter):
    _note("pytest_terminal_summary")

def pytest_unconfigure(config):
    _note("pytest_unconfigure")
"""

SUITE = """
import socket

def test_calls_out():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect_ex(("192.0.2.31", 53))
    s.close()

def test_fails():
    assert False

def test_passes():
    pass
"""


def env_with(start: str, **extra: str) -> dict[str, str]:
    return {**os.environ, **STARTS[start], **extra}


def records(path: Path) -> list[tuple[int, bool, str]]:
    lines = path.read_text().split("\n") if path.exists() else []
    return [(int(p), t == "1", h) for p, t, h in (line.split(" ", 2) for line in lines if line)]


@pytest.mark.parametrize("start", STARTS)
def test_every_hook_of_another_plugin_runs_once_and_only_in_the_traced_session(
    pytester: pytest.Pytester, tracer: Tracer, start: str
) -> None:
    pytester.makepyfile(recorder=RECORDER, test_suite=SUITE)
    plain_log, audited_log = pytester.path / "plain.txt", pytester.path / "audited.txt"
    plain = pytest_run(
        "-p", "recorder", cwd=pytester.path, env=env_with(start, RECORD=str(plain_log))
    )
    audited = pytest_run(
        "-p",
        "recorder",
        "--netaudit",
        cwd=pytester.path,
        env=env_with(start, RECORD=str(audited_log)),
    )
    assert plain.ret == 1 and audited.ret == 1, audited.outlines + audited.errlines
    expected = Counter(hook for _, _, hook in records(plain_log))
    assert expected["pytest_runtest_logreport:call"] == 3
    ran = records(audited_log)
    traced = [(pid, hook) for pid, was_traced, hook in ran if was_traced]
    untraced = [(pid, hook) for pid, was_traced, hook in ran if not was_traced]
    assert Counter(hook for _, hook in traced) == expected
    assert len({pid for pid, _ in traced}) == 1  # the one traced session
    if start == "hook":
        assert untraced == []  # the supervisor is no pytest process
    else:
        # The fallback's supervisor is a pytest: it met the plugin when it loaded it, and
        # nothing of the session happens there, before or after the traced run.
        assert {hook for _, hook in untraced} <= {
            "pytest_addoption",
            "pytest_load_initial_conftests",
        }


COVERED = """
def used(n):
    if n > 1:
        return "many"
    return "one"

def unused():
    return 0
"""

COVER_TESTS = """
from pkg.mod import used

def test_one():
    assert used(1) == "one"

def test_many():
    assert used(5) == "many"
"""


def covered_lines(folder: Path) -> dict[str, list[int]]:
    """Lines covered per file, read from the .coverage database pytest-cov wrote."""
    database = folder / ".coverage"
    assert database.exists(), "no .coverage file"
    # closing(): sqlite3's own context manager commits but does not close (Python 3.13 warns).
    with contextlib.closing(sqlite3.connect(database)) as db:
        rows = db.execute(
            "select file.path, line_bits.numbits from line_bits "
            "join file on file.id = line_bits.file_id"
        ).fetchall()
    from coverage.numbits import numbits_to_nums

    return {Path(path).name: sorted(numbits_to_nums(bits)) for path, bits in rows}


@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_pytest_cov_writes_the_same_coverage_as_an_unaudited_run(
    pytester: pytest.Pytester, tracer: Tracer, start: str, xdist: list[str]
) -> None:
    (pytester.path / "pkg").mkdir()
    (pytester.path / "pkg" / "__init__.py").write_text("")
    (pytester.path / "pkg" / "mod.py").write_text(COVERED)
    pytester.makepyfile(test_cover=COVER_TESTS)
    args = ["--cov=pkg", "--cov-report=", *xdist]
    plain = pytest_run(*args, cwd=pytester.path, env=env_with(start))
    assert plain.ret == 0, plain.outlines + plain.errlines
    expected = covered_lines(pytester.path)
    (pytester.path / ".coverage").unlink()
    audited = pytest_run("--netaudit", *args, cwd=pytester.path, env=env_with(start))
    assert audited.ret == 0, audited.outlines + audited.errlines
    assert covered_lines(pytester.path) == expected
    assert expected["mod.py"]  # something was measured


def junit_cases(path: Path) -> list[tuple[str, str]]:
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    return sorted(
        (case.get("name", ""), ",".join(child.tag for child in case if child.tag != "properties"))
        for case in suite.iter("testcase")
    )


@pytest.mark.parametrize("start", STARTS)
def test_junitxml_writes_the_same_cases_as_an_unaudited_run(
    pytester: pytest.Pytester, tracer: Tracer, start: str
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    pytest_run("--junitxml=plain.xml", cwd=pytester.path, env=env_with(start))
    pytest_run("--netaudit", "--junitxml=audited.xml", cwd=pytester.path, env=env_with(start))
    assert junit_cases(pytester.path / "audited.xml") == junit_cases(pytester.path / "plain.xml")
    assert ("test_fails", "failure") in junit_cases(pytester.path / "plain.xml")


@pytest.mark.parametrize("start", STARTS)
def test_the_cache_of_an_audited_run_serves_last_failed(
    pytester: pytest.Pytester, tracer: Tracer, start: str
) -> None:
    """runner.pytest_run switches the cache off; here it is on, as in a user's project."""
    pytester.makepyfile(test_suite=SUITE)
    first = pytest_run("--netaudit", cwd=pytester.path, env=env_with(start), cache=True)
    assert first.ret == 1
    lastfailed = pytester.path / ".pytest_cache" / "v" / "cache" / "lastfailed"
    assert json.loads(lastfailed.read_text()) == {"test_suite.py::test_fails": True}
    again = pytest_run(
        "--netaudit", "--lf", "-q", cwd=pytester.path, env=env_with(start), cache=True
    )
    again.stdout.fnmatch_lines(["*1 failed*"])
    again.stdout.no_fnmatch_line("*passed*")
