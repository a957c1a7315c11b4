"""The plugin end to end: which test each network call is reported under.

Every suite here is written with pytester and run with ``pytest --netaudit`` in a process of
its own (``tests.runner.pytest_run``). "External" calls are UDP ``connect()`` to documentation
addresses, which sends nothing, or TCP only inside a private network namespace.

What a run attributed is read from its JSON report (``--netaudit-report``): for each
destination, the exact set of ``(test, after_test)`` it was reported under, so a call that
lands under the wrong test, or under two, fails as surely as a lost one.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from netaudit.trace import Tracer
from tests.netns import Netns
from tests.runner import pytest_run

pytestmark = pytest.mark.strace

SESSION = "<session>"

#: A UDP connect() to a documentation address: traced, and no packet leaves.
UDP = """
import socket

def udp(addr, port=53):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect_ex((addr, port))
    s.close()
"""

Where = dict[str, set[tuple[str, bool]]]


def attributed(report: Path) -> Where:
    """``"addr:port"`` -> the ``(test, after_test)`` pairs it was reported under."""
    document = json.loads(report.read_text(encoding="utf-8"))
    where: Where = {}
    for d in document["destinations"]:
        where.setdefault(d["display"], set()).add((d["test"], d["after_test"]))
    return where


def assert_attributed(where: Where, expected: Mapping[str, set[tuple[str, bool]]]) -> None:
    got = {address: where.get(address, set()) for address in expected}
    assert got == dict(expected), f"the whole report: {where}"


def violation(test: str, address: str, evidence: str, located: bool = False) -> list[str]:
    """The report's lines for a test with one violation: its header, where the test is (when
    ``located``: no at line names the test's own frame, as for a subprocess's call), the
    destination line and the evidence line, next to each other (fnmatch patterns)."""
    header = "  " + glob.escape(f"[{test}]")
    return [
        header,
        *(["    defined at " + glob.escape(test.partition("::")[0]) + ":*"] if located else []),
        destination_line(address),
        f"      {evidence}",
    ]


def destination_line(address: str) -> str:
    """fnmatch pattern of a violation line (one call)."""
    return f"    AF_INET {address} (count=1, pids=[[]*[]])"


# -- where a call comes from: the test's thread, its subprocess, its daemon -----------------------

#: A daemon's code: it calls once the pytest process that started it is gone, that is after the
#: session's own report.
AFTER_SESSION = """
import os, socket, time
parent = os.getppid()
deadline = time.monotonic() + 60
while os.getppid() == parent and time.monotonic() < deadline:
    time.sleep(0.02)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect_ex((%r, 53))
"""

ORIGINS = (
    UDP
    + f"\nDAEMON_AFTER_SESSION = {AFTER_SESSION % '192.0.2.5'!r}\n"
    + """
import os, subprocess, sys, threading, time
from pathlib import Path

CHILD = (
    "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "s.connect_ex((%r, 53))"
)

# Calls once test B is running (B says so with a file), then says it called.
DAEMON_DURING_B = '''
import os, socket, sys, time
deadline = time.monotonic() + 60
while not os.path.exists("b-running") and time.monotonic() < deadline:
    time.sleep(0.02)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect_ex(("192.0.2.3", 53))
open("daemon-called", "w").close()
'''

daemons = []

def test_thread():
    thread = threading.Thread(target=udp, args=("192.0.2.1",))
    thread.start()
    thread.join()
    Path("test-pid").write_text(str(os.getpid()))

def test_subprocess():
    subprocess.run([sys.executable, "-c", CHILD % "192.0.2.2"], check=True)

def test_a_starts_a_daemon():
    daemons.append(subprocess.Popen([sys.executable, "-c", DAEMON_DURING_B]))

def test_b_runs_while_the_daemon_calls():
    Path("b-running").touch()
    deadline = time.monotonic() + 60
    while not Path("daemon-called").exists():
        assert time.monotonic() < deadline, "the daemon never called"
        time.sleep(0.02)
    udp("192.0.2.4")

def test_c_starts_a_daemon_that_calls_after_the_session():
    daemons.append(subprocess.Popen([sys.executable, "-c", DAEMON_AFTER_SESSION]))
"""
)


def test_calls_from_a_thread_a_subprocess_and_daemons_belong_to_the_test_that_started_them(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    """The daemon started by test A calls while test B runs: that is A's call, made after A
    ended, not B's. The daemon started by the last test calls after the session has reported:
    the supervisor still reports it (and fails the run), never drops it.

    The daemons wait for an event, not for a time: A's for B to start (B then waits for its
    call), the last one for its pytest to exit; so the order holds on a loaded machine too."""
    pytester.makepyfile(test_origins=ORIGINS)
    report = pytester.path / "report.json"
    result = pytest_run("--netaudit", f"--netaudit-report={report}", cwd=pytester.path)
    assert result.ret == 1, result.outlines + result.errlines
    result.stdout.fnmatch_lines(["*5 passed*"])
    module = "test_origins.py::"
    where = attributed(report)
    assert_attributed(
        where,
        {
            "192.0.2.1:53": {(module + "test_thread", False)},
            "192.0.2.2:53": {(module + "test_subprocess", False)},
            "192.0.2.3:53": {(module + "test_a_starts_a_daemon", True)},
            "192.0.2.4:53": {(module + "test_b_runs_while_the_daemon_calls", False)},
        },
    )
    assert "192.0.2.5:53" not in where  # made after the report was written: see below

    document = json.loads(report.read_text(encoding="utf-8"))
    pids = {d["display"]: d["pids"] for d in document["destinations"]}
    test_pid = int((pytester.path / "test-pid").read_text())
    assert pids["192.0.2.1:53"] == [test_pid]  # the thread: the test's own process
    assert test_pid not in pids["192.0.2.2:53"] + pids["192.0.2.3:53"]

    result.stdout.fnmatch_lines(
        violation(
            module + "test_a_starts_a_daemon",
            "192.0.2.3:53",
            "by python: connect -> network unreachable (after the test ended)",
            located=True,
        ),
        consecutive=True,
    )
    result.stdout.fnmatch_lines(
        violation(
            module + "test_b_runs_while_the_daemon_calls",
            "192.0.2.4:53",
            "by python: connect -> network unreachable",
        ),
        consecutive=True,
    )
    result.stdout.fnmatch_lines(
        [
            "*5 passed*",
            "netaudit: calls made after the session's own report:",
            *violation(
                module + "test_c_starts_a_daemon_that_calls_after_the_session",
                "192.0.2.5:53",
                "by python: connect -> network unreachable (after the test ended)",
                located=True,
            ),
        ]
    )


LATE = (
    UDP
    + f"\nDAEMON_AFTER_SESSION = {AFTER_SESSION % '192.0.2.70'!r}\n"
    + """
import subprocess, sys

daemons = []

def test_starts_a_daemon():
    daemons.append(subprocess.Popen([sys.executable, "-c", DAEMON_AFTER_SESSION]))
"""
)


def test_a_call_after_the_session_report_names_its_test_with_its_location(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    pytester.makepyfile(test_late=LATE)
    result = pytest_run("--netaudit", cwd=pytester.path)
    assert result.ret == 1, result.outlines + result.errlines
    result.stdout.fnmatch_lines(
        [
            "netaudit: calls made after the session's own report:",
            "  [[]test_late.py::test_starts_a_daemon[]]",
            "    defined at test_late.py:*",
            destination_line("192.0.2.70:53"),
            "      by python: connect -> network unreachable (after the test ended)",
        ]
    )


# -- fixtures and conftest.py ---------------------------------------------------------------------

FIXTURES_CONFTEST = (
    UDP
    + """
import pytest

udp("192.0.2.40")  # at import time

@pytest.fixture(scope="session")
def session_fixture():
    udp("192.0.2.41")
    yield
    udp("192.0.2.42")

def pytest_runtest_logreport(report):
    # A hook inside the test's own protocol (its report of the call phase).
    if report.when == "call" and report.nodeid.endswith("::test_uses_fixtures"):
        udp("192.0.2.49")
"""
)

FIXTURES = (
    UDP
    + """
import pytest

@pytest.fixture
def function_fixture():
    udp("192.0.2.43")
    yield
    udp("192.0.2.44")

@pytest.fixture(scope="module")
def module_fixture():
    udp("192.0.2.45")
    yield
    udp("192.0.2.46")

def test_uses_fixtures(function_fixture, module_fixture, session_fixture):
    udp("192.0.2.47")

def test_last_of_the_module():  # the module's and the session's fixtures end in its teardown
    udp("192.0.2.48")
"""
)


def test_fixtures_wider_than_a_test_and_conftest_imports_belong_to_the_session(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    pytester.makeconftest(FIXTURES_CONFTEST)
    pytester.makepyfile(test_fixtures=FIXTURES)
    report = pytester.path / "report.json"
    result = pytest_run("--netaudit", f"--netaudit-report={report}", cwd=pytester.path)
    assert result.ret == 1, result.outlines + result.errlines
    result.stdout.fnmatch_lines(["*2 passed*"])
    first = {("test_fixtures.py::test_uses_fixtures", False)}
    assert_attributed(
        attributed(report),
        {
            "192.0.2.40:53": {(SESSION, False)},  # conftest.py at import
            "192.0.2.41:53": {(SESSION, False)},  # session fixture set-up
            "192.0.2.42:53": {(SESSION, False)},  # session fixture tear-down
            "192.0.2.45:53": {(SESSION, False)},  # module fixture set-up
            "192.0.2.46:53": {(SESSION, False)},  # module fixture tear-down
            "192.0.2.43:53": first,  # function fixture set-up
            "192.0.2.44:53": first,  # function fixture tear-down
            "192.0.2.47:53": first,  # the test's body
            "192.0.2.49:53": first,  # pytest_runtest_logreport for that test
            "192.0.2.48:53": {("test_fixtures.py::test_last_of_the_module", False)},
        },
    )
    result.stdout.fnmatch_lines(
        ["  [<session>]", "    (outside any test: *)", "    AF_INET 192.0.2.40:53 *"],
        consecutive=True,
    )


# -- pytest-xdist ---------------------------------------------------------------------------------

XDIST_CONFTEST = (
    UDP
    + """
import pytest

@pytest.fixture(scope="session", autouse=True)
def in_every_worker():
    udp("192.0.2.50")
    yield
"""
)


def _xdist_module(octet: int) -> str:
    return UDP + "".join(
        f"\ndef test_{n}():\n    udp('203.0.113.{octet + n}')\n" for n in range(1, 4)
    )


@pytest.mark.parametrize("workers", ["2", "auto"])
def test_under_xdist_each_call_is_under_its_own_test(
    pytester: pytest.Pytester, tracer: Tracer, workers: str
) -> None:
    pytester.makeconftest(XDIST_CONFTEST)
    pytester.makepyfile(test_first=_xdist_module(10), test_second=_xdist_module(20))
    report = pytester.path / "report.json"
    result = pytest_run(
        "--netaudit", "-n", workers, f"--netaudit-report={report}", cwd=pytester.path
    )
    assert result.ret == 1, result.outlines + result.errlines
    result.stdout.fnmatch_lines(["*6 passed*"])
    if workers == "2":
        result.stdout.fnmatch_lines(["2 workers [[]6 items[]]"])
    expected = {
        f"203.0.113.{octet + n}:53": {(f"{module}::test_{n}", False)}
        for module, octet in (("test_first.py", 10), ("test_second.py", 20))
        for n in range(1, 4)
    }
    expected["192.0.2.50:53"] = {(SESSION, False)}  # a session fixture, in each worker
    assert_attributed(attributed(report), expected)
    result.stdout.fnmatch_lines(
        violation(
            "test_second.py::test_3", "203.0.113.23:53", "by python: connect -> network unreachable"
        ),
        consecutive=True,
    )


# -- TCP, inside the private network namespace ----------------------------------------------------

TCP = """
import errno, socket

def test_tcp_to_the_outside():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    err = s.connect_ex(("203.0.113.10", 443))
    s.close()
    assert err == errno.ENETUNREACH, err  # only lo in this namespace: nothing was sent

def test_quiet():
    pass
"""


def test_a_failed_tcp_connect_is_reported_under_its_test(
    pytester: pytest.Pytester, tracer: Tracer, netns: Netns
) -> None:
    pytester.makepyfile(test_tcp=TCP)
    result = pytest_run("--netaudit", cwd=pytester.path, netns=netns)
    assert result.ret == 1, result.outlines + result.errlines
    result.stdout.fnmatch_lines(["  netaudit: 1 violation detected", "*2 passed*"])
    result.stdout.fnmatch_lines(
        violation(
            "test_tcp.py::test_tcp_to_the_outside",
            "203.0.113.10:443",
            "by python: connect -> network unreachable",
        ),
        consecutive=True,
    )
    result.stdout.no_fnmatch_line("*test_quiet*")


# -- a long test id -------------------------------------------------------------------------------

LONG_ID = "ünïcødé [brackets] ] [ (parens) and spaces " + "x" * 300 + " ✓ 日本語 :: /end"

LONG = (
    UDP
    + f"""
import pytest

@pytest.mark.parametrize("addr", ["192.0.2.60"], ids=[{LONG_ID!r}])
def test_long(addr):
    udp(addr)

@pytest.mark.parametrize("addr", ["192.0.2.61"], ids=["short"])
def test_short(addr):
    udp(addr)
"""
)


def test_a_long_unicode_test_id_still_gets_its_events(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    # Without this, pytest escapes non-ASCII ids; with it, the nodeid is the id as written.
    pytester.makeini(
        "[pytest]\ndisable_test_id_escaping_and_forfeit_all_rights_to_community_support = true\n"
    )
    pytester.makepyfile(test_long_id=LONG)
    report = pytester.path / "report.json"
    result = pytest_run("--netaudit", f"--netaudit-report={report}", cwd=pytester.path)
    assert result.ret == 1, result.outlines + result.errlines
    result.stdout.fnmatch_lines(["*2 passed*"])
    long_nodeid = f"test_long_id.py::test_long[{LONG_ID}]"
    assert len(long_nodeid) > 300
    assert_attributed(
        attributed(report),
        {
            "192.0.2.60:53": {(long_nodeid, False)},
            "192.0.2.61:53": {("test_long_id.py::test_short[short]", False)},
        },
    )
    result.stdout.fnmatch_lines(
        violation(long_nodeid, "192.0.2.60:53", "by python: connect -> network unreachable"),
        consecutive=True,
    )
