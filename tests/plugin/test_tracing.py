"""The plugin end to end: how the traced session is started, nested, refused, interrupted and
ended, as a user (or a host program) sees it.

Every suite here is written with pytester and run in a process of its own. "External" calls
are UDP ``connect()`` to documentation addresses, which sends nothing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from netaudit.trace import Tracer
from tests.processes import terminal_signals
from tests.runner import pytest_run

pytestmark = pytest.mark.strace

#: A UDP connect() to a documentation address: traced, and no packet leaves.
UDP = """
import socket

def udp(addr, port=53):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect_ex((addr, port))
    s.close()
"""

TRACER_PID = """
def tracer_pid():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("TracerPid:"))
"""


def header(test: str) -> str:
    """fnmatch pattern of a test's header line in the violations block."""
    return "  " + glob.escape(f"[{test}]") + "*"


def destination(address: str) -> str:
    """fnmatch pattern of a violation line (one call)."""
    return f"    AF_INET {address} (count=1, pids=[[]*[]])"


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), which tells a reused pid; None once
    it is gone or only a zombie (dead, waiting for whoever inherited it to reap it)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return None if fields[0] in (b"Z", b"X") else int(fields[19])


def still_running(started: dict[int, int | None], wait: float) -> list[int]:
    """Which of these processes (pid -> start time) still run after up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        left = [p for p, t in started.items() if t is not None and start_time(p) == t]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def end(started: dict[int, int | None]) -> None:
    """Ends, by pid, processes a suite of ours started that are still running (the same ones:
    their start time matches)."""
    for pid in still_running(started, wait=0):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def netaudit_dirs(tmpdir: Path) -> list[str]:
    return sorted(name for name in os.listdir(tmpdir) if name.startswith("netaudit-"))


# -- pytest.main() from a host program ------------------------------------------------------------

HOST = """
import os, sys
import pytest

print("host pid before:", os.getpid(), flush=True)
for suite in ("test_violation.py", "test_clean.py"):
    status = pytest.main(["-p", "no:cacheprovider", "--netaudit", suite])
    print("host status:", int(status), "pid:", os.getpid(), flush=True)
"""

VIOLATION = UDP + "\ndef test_violation():\n    udp('192.0.2.20')\n"
CLEAN = "\ndef test_clean():\n    pass\n"


def test_pytest_main_in_a_host_program_returns_the_status_to_the_host(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    """The traced session runs in a child; the host's own process carries on (no exec), with
    1 for the run with a violation and 0 for the clean one."""
    pytester.makepyfile(test_violation=VIOLATION, test_clean=CLEAN, host=HOST)
    host = subprocess.Popen(
        [sys.executable, "host.py"],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = host.communicate(timeout=120)
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
    assert host.returncode == 0, out + err
    lines = out.splitlines()
    pid = str(host.pid)
    assert [line for line in lines if line.startswith("host pid before:")] == [
        f"host pid before: {pid}"
    ], lines
    statuses = [line for line in lines if line.startswith("host status:")]
    assert statuses == [f"host status: 1 pid: {pid}", f"host status: 0 pid: {pid}"], lines
    matcher = pytest.LineMatcher(lines)
    matcher.fnmatch_lines(
        [
            f"host pid before: {pid}",
            "  netaudit: 1 violation detected",
            header("test_violation.py::test_violation"),
            destination("192.0.2.20:53"),
            f"host status: 1 pid: {pid}",
            "netaudit: no violations (0 destinations checked, 0 calls)",
            f"host status: 0 pid: {pid}",
        ]
    )


HOST_THREADS = """
import threading, time
import pytest

status = pytest.main(["-p", "no:cacheprovider", "-q", "--netaudit", "test_clean.py"])
deadline = time.monotonic() + 1
def ours():
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("netaudit"))
while ours() and time.monotonic() < deadline:
    time.sleep(0.05)
print("status:", int(status))
print("netaudit threads left:", ours())
"""


def test_pytest_main_leaves_no_netaudit_thread_in_the_host(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    pytester.makepyfile(test_clean=CLEAN, host=HOST_THREADS)
    done = subprocess.run(
        [sys.executable, "host.py"], cwd=pytester.path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "status: 0" in lines, lines
    assert "netaudit threads left: []" in lines, lines


# -- nested runs ----------------------------------------------------------------------------------

INNER_SUBPROCESS = UDP + "\ndef test_inner_subprocess_call():\n    udp('198.51.100.7')\n"
INNER_IN_PROCESS = UDP + "\ndef test_inner_in_process_call():\n    udp('198.51.100.8')\n"

OUTER = """
import subprocess, sys
from pathlib import Path
import pytest

def test_runs_pytest_in_a_subprocess():
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--netaudit", "inner_sub"],
        capture_output=True, text=True, timeout=120,
    )
    Path("inner_sub.out").write_text(f"{done.returncode}\\n{done.stdout}{done.stderr}")

def test_runs_pytest_in_process():
    status = pytest.main(["-p", "no:cacheprovider", "--netaudit", "inner_inproc"])
    Path("inner_inproc.status").write_text(str(int(status)))
"""


def test_a_nested_run_reports_its_own_violations_and_the_outer_run_reports_them_too(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    """A ``pytest --netaudit`` that a test runs, in a subprocess or in the test's own process,
    is audited by the outer session's supervisor: it reports its own calls and exits 1, and the
    outer run reports the same calls under the test that ran it."""
    pytester.makeini("[pytest]\n")  # the rootdir, for the nested runs too
    pytester.mkpydir("inner_sub").joinpath("test_inner_sub.py").write_text(INNER_SUBPROCESS)
    pytester.mkpydir("inner_inproc").joinpath("test_inner_inproc.py").write_text(INNER_IN_PROCESS)
    pytester.makepyfile(test_outer=OUTER)
    # -s: the in-process nested run writes its report to the outer run's stdout.
    result = pytest_run("--netaudit", "-s", "test_outer.py", cwd=pytester.path)
    assert result.ret == 1, result.outlines + result.errlines

    status, *inner = (pytester.path / "inner_sub.out").read_text().splitlines()
    assert status == "1", inner
    pytest.LineMatcher(inner).fnmatch_lines(
        [
            "  netaudit: 1 violation detected",
            "",
            header("inner_sub/test_inner_sub.py::test_inner_subprocess_call"),
            destination("198.51.100.7:53"),
            "      by python: connect -> network unreachable",
            "*1 passed*",
        ]
    )
    assert (pytester.path / "inner_inproc.status").read_text() == "1"

    result.stdout.fnmatch_lines(
        [
            # the in-process nested run's own report, while the outer test runs
            "  netaudit: 1 violation detected",
            header("inner_inproc/test_inner_inproc.py::test_inner_in_process_call"),
            destination("198.51.100.8:53"),
            "*1 passed*",
            # then the outer run's
            "  netaudit: 2 violations detected",
        ]
    )
    for test, address, located in (
        # a subprocess's call: no at line names the test, so its location has a line of its own
        ("test_outer.py::test_runs_pytest_in_a_subprocess", "198.51.100.7:53", True),
        ("test_outer.py::test_runs_pytest_in_process", "198.51.100.8:53", False),
    ):
        where = ["    defined at test_outer.py:*"] if located else []
        result.stdout.fnmatch_lines([header(test), *where, destination(address)], consecutive=True)
    result.stdout.fnmatch_lines(["*2 passed*"])


# -- a test that changes the process's environment or directory -----------------------------------

ENVIRONMENT = (
    UDP
    + """
import os, subprocess, sys

CHILD = (
    "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "s.connect_ex((%r, 53))"
)

def test_1_clears_the_environment():
    assert "NETAUDIT_SUPERVISOR" in os.environ
    os.environ.clear()

def test_2_calls_after_the_environment_was_cleared():
    udp("192.0.2.31")
    subprocess.run([sys.executable, "-c", CHILD % "192.0.2.32"], check=True)

def test_3_changes_directory():
    os.chdir("/")

def test_4_calls_after_the_directory_changed():
    udp("192.0.2.33")
    subprocess.run([sys.executable, "-c", CHILD % "192.0.2.34"], check=True)
"""
)


def test_a_test_that_clears_the_environment_or_changes_directory_does_not_hide_later_calls(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    pytester.makepyfile(test_environment=ENVIRONMENT)
    result = pytest_run("--netaudit", cwd=pytester.path)
    assert result.ret == 1, result.outlines + result.errlines
    result.stdout.fnmatch_lines(["  netaudit: 4 violations detected", "*4 passed*"])
    for test, addresses in (
        ("test_2_calls_after_the_environment_was_cleared", ("192.0.2.31:53", "192.0.2.32:53")),
        ("test_4_calls_after_the_directory_changed", ("192.0.2.33:53", "192.0.2.34:53")),
    ):
        result.stdout.fnmatch_lines(
            [
                header(f"test_environment.py::{test}"),
                destination(addresses[0]),
                "      by python: connect -> network unreachable",
                f"      at test_environment.py:* in {test} > test_environment.py:* in udp",
                destination(addresses[1]),
                "      by python: connect -> network unreachable",
            ],
            consecutive=True,
        )


# -- no strace, or strace that cannot trace -------------------------------------------------------

INFO = """
import pytest
from pathlib import Path

@pytest.fixture
def some_fixture():
    return 1

def test_quiet(some_fixture):
    Path("the-test-ran").touch()
"""


@pytest.fixture
def without_strace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment whose PATH holds only a symlink to this Python: no strace on it."""
    bindir = tmp_path_factory.mktemp("bin")
    os.symlink(sys.executable, bindir / "python")
    assert shutil.which("strace", path=str(bindir)) is None
    return {**os.environ, "PATH": str(bindir)}


@pytest.mark.parametrize(
    ("option", "shows"),
    [
        ("--help", "*--netaudit *audit the network egress of this session under strace*"),
        ("--version", "pytest *"),
        ("--collect-only", "*<Function test_quiet>*"),
        ("--fixtures", "some_fixture*"),
        ("--fixtures-per-test", "*fixtures used by test_quiet*"),
        ("--markers", "@pytest.mark.skip*"),
        ("--setup-plan", "*test_info.py::test_quiet*"),
    ],
)
def test_options_that_run_no_test_need_no_strace(
    pytester: pytest.Pytester, without_strace: dict[str, str], option: str, shows: str
) -> None:
    pytester.makepyfile(test_info=INFO)
    result = pytest_run("--netaudit", option, cwd=pytester.path, env=without_strace)
    assert result.ret == 0, result.outlines + result.errlines
    output = pytest.LineMatcher(result.outlines + result.errlines)
    output.fnmatch_lines([shows])
    output.no_fnmatch_line("*netaudit: *")  # no complaint, and no audit either
    output.no_fnmatch_line("*netaudit cannot trace*")
    output.no_fnmatch_line("*UsageError*")
    assert not (pytester.path / "the-test-ran").exists()


def test_a_run_without_strace_is_a_usage_error_that_says_to_install_it(
    pytester: pytest.Pytester, without_strace: dict[str, str]
) -> None:
    pytester.makepyfile(test_info=INFO)
    plain = pytest_run(cwd=pytester.path, env=without_strace)
    assert plain.ret == 0, plain.outlines + plain.errlines  # this environment runs pytest
    (pytester.path / "the-test-ran").unlink()

    result = pytest_run("--netaudit", cwd=pytester.path, env=without_strace)
    assert result.ret == 4, result.outlines + result.errlines
    result.stderr.fnmatch_lines(
        ["ERROR: netaudit cannot trace this session: strace was not found on PATH; install strace*"]
    )
    assert not (pytester.path / "the-test-ran").exists()


def test_a_run_that_is_already_traced_is_a_usage_error_that_says_why(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    """A process can have only one tracer: under ``strace -f`` (as under gdb, or a debugger),
    netaudit's strace cannot trace the session (ptrace is denied), and says so."""

    def under_strace(argv: Sequence[str]) -> list[str]:
        return [tracer.path, "-f", "-o", os.devnull, *argv]

    pytester.makepyfile(test_info=INFO)
    result = pytest_run("--netaudit", cwd=pytester.path, netns=under_strace)
    assert result.ret == 4, result.outlines + result.errlines
    result.stderr.fnmatch_lines(
        [
            "ERROR: netaudit cannot trace this session: netaudit is itself being traced (by pid *)"
            ", and a process can have only one tracer*"
        ]
    )
    assert not (pytester.path / "the-test-ran").exists()


# -- interrupted: Ctrl-C and SIGTERM --------------------------------------------------------------

SLEEPER = (
    TRACER_PID
    + """
import os, subprocess, sys, time
from pathlib import Path

SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]

def test_sleeps_with_children():
    children = [subprocess.Popen(SLEEP)]
    if os.environ.get("WITH_DAEMON"):  # in a session of its own: no group signal reaches it
        children.append(subprocess.Popen(SLEEP, start_new_session=True))
    pids = [os.getpid(), tracer_pid(), *(child.pid for child in children)]
    Path("pids.part").write_text(" ".join(str(pid) for pid in pids))
    os.replace("pids.part", "pids")
    time.sleep(120)
"""
)


def interrupt(
    pytester: pytest.Pytester, signum: int, *, with_daemon: bool
) -> tuple[int, list[str], list[int], list[str]]:
    """Runs SLEEPER with ``--netaudit`` (TMPDIR a fresh directory), sends ``signum`` to the
    pytest the user started once its test sleeps, and returns its status, its output, which of
    the processes the test named (the traced pytest, its strace, its children) still run, and
    the netaudit temp dirs left."""
    pytester.makepyfile(test_sleeper=SLEEPER)
    tmpdir = pytester.path / "tmpdir"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    if with_daemon:
        env["WITH_DAEMON"] = "1"
    pids_file = pytester.path / "pids"
    started: dict[int, int | None] = {}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--netaudit"],
        cwd=pytester.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=terminal_signals,
    )
    try:
        deadline = time.monotonic() + 60
        while not pids_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if not pids_file.exists():
            proc.terminate()  # the supervisor forwards it, and ends its tree
            pytest.fail(f"the test never started its children:\n{proc.communicate(timeout=60)[0]}")
        started = {pid: start_time(pid) for pid in map(int, pids_file.read_text().split())}
        assert all(started.values()), started
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=60)
        left = still_running(started, wait=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        end(started)
    return proc.returncode, out.splitlines(), left, netaudit_dirs(tmpdir)


def test_ctrl_c_interrupts_the_session_and_leaves_nothing_behind(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    """Ctrl-C reaches the whole traced tree, as it would from a terminal: pytest stops with its
    own status for an interrupted session, 2, and the test's child goes with it."""
    status, out, left, dirs = interrupt(pytester, signal.SIGINT, with_daemon=False)
    assert status == 2, "\n".join(out)
    pytest.LineMatcher(out).fnmatch_lines(["*! KeyboardInterrupt !*"])
    assert left == [], out
    assert dirs == [], out


def test_ctrl_c_keeps_pytest_status_when_a_test_left_a_daemon(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    status, out, left, dirs = interrupt(pytester, signal.SIGINT, with_daemon=True)
    assert left == [], out
    assert dirs == [], out
    assert status == 2, "\n".join(out)


def test_sigterm_ends_the_whole_tree_with_status_143(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    """pytest does not handle SIGTERM: the forwarded signal kills it, and the supervisor
    returns what a shell reports for that, 128 + 15 = 143, as its exit status (it is not
    itself killed: its returncode is 143, not -15). A child that the group signal does not
    reach (a session of its own) is ended by pid, and the temp dir is removed."""
    status, out, left, dirs = interrupt(pytester, signal.SIGTERM, with_daemon=True)
    assert status == 128 + signal.SIGTERM, out
    assert left == [], out
    assert dirs == [], out


# -- fail closed ----------------------------------------------------------------------------------

KILLER = (
    UDP
    + TRACER_PID
    + """
import os, signal
from pathlib import Path

def test_kills_its_tracer():
    Path("test-pid").write_text(str(os.getpid()))
    os.kill(tracer_pid(), signal.SIGKILL)
    udp("192.0.2.90")  # no longer traced

def test_later():
    udp("192.0.2.91")
"""
)


def test_a_test_that_kills_the_tracer_fails_the_run_as_incomplete(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    """Nothing is traced once strace is gone, so the run must not pass as clean: it ends with
    the status of an incomplete audit (3, as for an internal error) and says so."""
    pytester.makepyfile(test_killer=KILLER)
    tmpdir = pytester.path / "tmpdir"
    tmpdir.mkdir()
    result = pytest_run("--netaudit", cwd=pytester.path, env={**os.environ, "TMPDIR": str(tmpdir)})
    assert result.ret == 3, result.outlines + result.errlines
    output = pytest.LineMatcher(result.outlines + result.errlines)
    output.fnmatch_lines(["*netaudit*audit is incomplete*"])
    output.no_fnmatch_line("*netaudit: no violations*")
    test_pid = int((pytester.path / "test-pid").read_text())
    assert still_running({test_pid: start_time(test_pid)}, wait=5) == []
    assert netaudit_dirs(tmpdir) == []


def test_the_supervisor_imports_no_conftest_and_keeps_the_projects_own_options(
    pytester: pytest.Pytester,
) -> None:
    """The untraced pytest only starts the traced one: project code (a conftest) runs once,
    traced, and options and ini keys that a conftest defines still work, --strict-config too."""
    pytester.makeini(
        """
        [pytest]
        addopts = --strict-config --project-flag
        project_key = 1
        """
    )
    pytester.makeconftest(
        """
        import os, socket

        with open("imports.txt", "a") as f:
            f.write(f"{os.getpid()}\\n")

        def pytest_addoption(parser):
            parser.addini("project_key", "a key of the project's own")
            parser.addoption("--project-flag", action="store_true")
        """
    )
    pytester.makepyfile(
        test_flag="""
        def test_flag(pytestconfig):
            assert pytestconfig.getoption("project_flag")
            assert pytestconfig.getini("project_key") == "1"
        """
    )
    result = pytest_run("--netaudit", cwd=pytester.path)
    assert result.ret == 0, result.outlines + result.errlines
    result.stdout.fnmatch_lines(["netaudit: no violations*", "*1 passed*"])
    imported = (pytester.path / "imports.txt").read_text().split()
    assert len(imported) == 1  # by the traced child only


def test_a_test_that_closes_every_descriptor_cannot_hide_its_calls(
    pytester: pytest.Pytester,
) -> None:
    """The driver's connection to the supervisor goes with the rest; pytest itself may not
    survive it. Whatever the session manages to say, the supervisor reports the calls, each
    under its test, and the run fails."""
    pytester.makepyfile(
        test_closing="""
        import os, socket

        def test_closes_everything():
            os.closerange(3, 1024)
            reused = open("reused.txt", "w")  # takes one of the numbers just freed
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect_ex(("192.0.2.44", 53))
            reused.close()
        """
    )
    result = pytest_run("--netaudit", cwd=pytester.path)
    assert result.ret != 0
    result.stdout.fnmatch_lines(
        [
            "  [[]test_closing.py::test_closes_everything[]]",
            "    AF_INET 192.0.2.44:53 (count=1, pids=[[]*[]])",
        ]
    )
    assert (pytester.path / "reused.txt").read_text() == ""  # nothing of netaudit's went in


HOST_PLUGINS = """
import sys
import pytest

class Recorder:
    def pytest_report_header(self):
        return "object plugin loaded"

sys.path.insert(0, ".")
status = pytest.main(
    ["-p", "no:cacheprovider", "--netaudit", "test_clean.py"],
    plugins=["named_plugin", Recorder()],
)
print("host status:", int(status))
"""


def test_plugins_given_to_pytest_main_by_name_travel_and_objects_are_warned_about(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    pytester.makepyfile(
        test_clean=CLEAN,
        host=HOST_PLUGINS,
        named_plugin="def pytest_report_header():\n    return 'named plugin loaded'\n",
    )
    done = subprocess.run(
        [sys.executable, "host.py"], cwd=pytester.path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "host status: 0" in done.stdout.splitlines()
    assert "named plugin loaded" in done.stdout  # in the traced session, through -p
    assert "object plugin loaded" not in done.stdout
    assert "plugins passed as objects to pytest.main() cannot be carried" in done.stderr
