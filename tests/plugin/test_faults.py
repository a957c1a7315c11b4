"""pytest --netaudit when things go wrong: the traced session killed or interrupted at each
phase, strace killed from outside, a full disk, a log cut short, a daemon left running, two
sessions at once in one folder, and a test that forges strace lines or looks for the log.

Each ends with a clear message and a failing status, and leaves no process and no temp dir
behind. Every suite runs in a process of its own, in the private network namespace; the
"external" calls are UDP ``connect()``s to documentation addresses, which send nothing.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from netaudit.trace import Tracer
from tests import runner
from tests.conftest import TinyTmpfs
from tests.plugin.test_tracing import UDP, end, netaudit_dirs, start_time, still_running
from tests.processes import FD_LISTER, STUBBORN_DAEMON, build
from tests.runner import pytest_run

pytestmark = pytest.mark.strace

#: Where a phase's code runs: the conftest's import (start-up), the test module's import
#: (collection), the test itself, and the terminal summary (the report).
PHASES = {
    "start-up": ("conftest", ""),
    "collection": ("module", ""),
    "test": ("test", ""),
    "report": ("summary", ""),
}

#: What the traced pytest does to end itself at a phase; Ctrl-C comes from outside, to the
#: pytest the user started (a terminal signals its foreground group, and the supervisor
#: passes it on), so the traced one asks its supervisor to be interrupted and waits.
ENDINGS = {
    "SIGKILL": "os.kill(os.getpid(), signal.SIGKILL)",
    "SIGTERM": "os.kill(os.getpid(), signal.SIGTERM)",
    "ctrl-c": "os.kill(supervisor(), signal.SIGINT); time.sleep(60)",
}

PRELUDE = """
import os, signal, time
from pathlib import Path

def parent(pid):
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

def supervisor():
    return parent(parent(os.getpid()))  # pytest <- strace <- the supervising pytest

def record():
    tracer = [line for line in Path("/proc/self/status").read_text().splitlines()
              if line.startswith("TracerPid:")][0].split()[1]
    Path("pids").write_text(f"{os.getpid()} {tracer}")
"""


def suite(pytester: pytest.Pytester, phase: str, ending: str) -> None:
    """A suite that makes a call, then ends itself (or is interrupted) at ``phase``."""
    where = PHASES[phase][0]
    act = f"record(); udp('192.0.2.60'); {ENDINGS[ending]}"
    conftest = PRELUDE + UDP
    if where == "conftest":
        conftest += act + "\n"
    if where == "summary":
        conftest += f"\ndef pytest_terminal_summary():\n    {act}\n"
    pytester.makeconftest(conftest)
    module = "from conftest import *\n"
    if where == "module":
        module += act + "\n"
    body = act if where == "test" else "record()"
    module += f"\ndef test_one():\n    {body}\n\ndef test_two():\n    pass\n"
    pytester.makepyfile(test_phase=module)


def run_to_its_end(pytester: pytest.Pytester) -> tuple[int, list[str], list[int], list[str]]:
    """Runs the suite with --netaudit (TMPDIR a fresh folder, SIGINT as a terminal gives it)
    and returns its status, its output, which of the processes it recorded still run, and
    the netaudit temp dirs left."""
    tmpdir = pytester.path / "tmpdir"
    tmpdir.mkdir()
    result = pytest_run("--netaudit", cwd=pytester.path, env={**os.environ, "TMPDIR": str(tmpdir)})
    pids_file = pytester.path / "pids"
    started = {}
    if pids_file.exists():
        started = {pid: start_time(pid) for pid in map(int, pids_file.read_text().split())}
    left = still_running(started, wait=5)
    end(started)
    return result.ret, result.outlines + result.errlines, left, netaudit_dirs(tmpdir)


@pytest.mark.parametrize("ending", list(ENDINGS))
@pytest.mark.parametrize("phase", list(PHASES))
def test_a_session_ended_at_any_phase_fails_and_leaves_nothing_behind(
    pytester: pytest.Pytester, tracer: Tracer, phase: str, ending: str
) -> None:
    suite(pytester, phase, ending)
    status, out, left, dirs = run_to_its_end(pytester)
    output = pytest.LineMatcher(out)
    if ending == "ctrl-c":
        # pytest's own status once its session runs; before that, a death by SIGINT.
        assert status in (2, 128 + signal.SIGINT), out
    else:
        assert status == 128 + signal.Signals[ending], out
    if ending != "ctrl-c" and phase != "report":
        output.fnmatch_lines([f"*netaudit: the session was killed by {ending} before it could*"])
    if phase == "report":  # the session's own report came first, and was clean
        output.fnmatch_lines(["netaudit: calls made after the session's own report:"])
    output.fnmatch_lines(["*AF_INET 192.0.2.60:53 (count=1, *"])  # the call made before
    assert left == [], out
    assert dirs == [], out


def tmp_env(pytester: pytest.Pytester) -> tuple[Path, dict[str, str]]:
    tmpdir = pytester.path / "tmpdir"
    tmpdir.mkdir()
    return tmpdir, {**os.environ, "TMPDIR": str(tmpdir)}


def sleeping_session(pytester: pytest.Pytester, env: dict[str, str]) -> subprocess.Popen[str]:
    """``pytest --netaudit`` (output captured) on a test that records its pid and its tracer's
    pid, then sleeps for a minute."""
    pytester.makepyfile(
        test_sleeps=PRELUDE + "\ndef test_sleeps():\n    record()\n    time.sleep(60)\n"
    )
    netns = runner.DEFAULT_NETNS
    assert netns is not None
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--netaudit"]
    return subprocess.Popen(
        netns(argv), cwd=pytester.path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def recorded(pytester: pytest.Pytester, proc: subprocess.Popen[str]) -> dict[int, int | None]:
    """The pids the sleeping test recorded (its own, then strace's), once it has."""
    pids_file = pytester.path / "pids"
    while not (pids_file.exists() and pids_file.read_text()) and proc.poll() is None:
        time.sleep(0.02)
    return {pid: start_time(pid) for pid in map(int, pids_file.read_text().split())}


def test_strace_killed_from_outside_fails_the_session_as_incomplete(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    tmpdir, env = tmp_env(pytester)
    proc = sleeping_session(pytester, env)
    started: dict[int, int | None] = {}
    try:
        started = recorded(pytester, proc)
        os.kill(list(started)[1], signal.SIGKILL)  # the traced pytest's TracerPid: strace
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        left = still_running(started, wait=5)
        end(started)
    assert proc.returncode == 3, out
    pytest.LineMatcher(out.splitlines()).fnmatch_lines(
        ["*netaudit*strace was killed (SIGKILL): the audit is incomplete*"]
    )
    assert left == [], out
    assert netaudit_dirs(tmpdir) == [], out


def test_a_supervisor_killed_with_sigkill_takes_strace_and_the_session_with_it(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    """No handler runs on SIGKILL; strace (a session of its own) and the traced pytest would go
    on, untraced once strace is gone, or forever with a test that hangs. They die with it."""
    _, env = tmp_env(pytester)
    proc = sleeping_session(pytester, env)
    started: dict[int, int | None] = {}
    try:
        started = recorded(pytester, proc)
        proc.kill()
        proc.communicate(timeout=60)  # what it left running may hold its pipes
        left = still_running(started, wait=10)
    finally:
        end(started)
    assert len(started) == 2 and left == []


def test_a_full_disk_fails_the_session_as_incomplete(
    pytester: pytest.Pytester, tiny_tmpfs: TinyTmpfs, tracer: Tracer
) -> None:
    pytester.makepyfile(
        test_many="""
        import socket

        def test_many_calls():
            for port in range(1, 3000):
                socket.socket().connect_ex(("127.0.0.1", port))
        """
    )
    tiny = pytester.path / "tiny"
    tiny.mkdir()
    netns = runner.DEFAULT_NETNS
    assert netns is not None
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--netaudit"]
    done = subprocess.run(
        netns(tiny_tmpfs(argv, tiny)), cwd=pytester.path, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    assert "No space left on device" in done.stdout + done.stderr
    assert "audit incomplete" in done.stdout + done.stderr


#: Finds the log and the process that follows it (the one holding it open read-only), and
#: cuts the log in one of two orders, each made certain: before the reader has read the test's
#: first call (the reader is stopped meanwhile), or once it has read all that was written.
CUT = """
import glob, os, signal, time

def reader(log):
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == log:
                    info = open(f"/proc/{pid}/fdinfo/{fd}").read().split()
                    if int(info[info.index("flags:") + 1], 8) & 3 == os.O_RDONLY:
                        return int(pid), int(fd)
        except OSError:
            continue
    raise AssertionError("nothing reads " + log)

def pos(pid, fd):
    info = open(f"/proc/{pid}/fdinfo/{fd}").read().split()
    return int(info[info.index("pos:") + 1])

def cut(order, before, after):
    log = glob.glob(TMP + "/netaudit-*/trace.log")[0]
    pid, fd = reader(log)
    if order == "before-read":
        os.kill(pid, signal.SIGSTOP)
        try:
            before()
            os.truncate(log, 0)
            after()
        finally:
            os.kill(pid, signal.SIGCONT)
    else:
        before()
        while pos(pid, fd) < os.path.getsize(log):
            time.sleep(0.001)  # a condition, polled: the reader catches up within a poll
        os.truncate(log, 0)
        after()
"""


@pytest.mark.parametrize("order", ["before-read", "after-read"])
def test_a_test_that_cuts_the_trace_short_fails_the_session_as_incomplete(
    pytester: pytest.Pytester, tracer: Tracer, order: str
) -> None:
    """strace writes on at its own offset, so a cut leaves a hole of NULs where the lines
    were. Cut before the supervisor read them, the calls are lost and the hole says so; cut
    after, nothing was lost, but the log was still cut: both are an incomplete audit."""
    tmpdir, env = tmp_env(pytester)
    pytester.makepyfile(
        test_cuts=UDP
        + f"TMP = {str(tmpdir)!r}\n"
        + CUT
        + f"""
def test_cuts():
    cut({order!r}, lambda: udp("192.0.2.61"), lambda: udp("192.0.2.62"))
"""
    )
    result = pytest_run("--netaudit", cwd=pytester.path, env=env)
    output = "\n".join(result.outlines + result.errlines)
    assert result.ret == 3, output
    assert "192.0.2.62" in output, output
    if order == "before-read":
        result.stdout.fnmatch_lines(["*netaudit: audit incomplete: the trace holds * line(s)*"])
    else:
        result.stdout.fnmatch_lines(["*netaudit: audit incomplete: the trace was cut short*"])
        assert "192.0.2.61" in output, output
    assert netaudit_dirs(tmpdir) == []


def test_a_daemon_left_running_is_reported_and_ended_and_never_runs_untraced(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    """It ignores SIGTERM, so only SIGKILL ends it; until then strace still traces it (once
    strace is gone, --seccomp-bpf would make its connect() fail with ENOSYS)."""
    tmpdir, env = tmp_env(pytester)
    errnos = pytester.path / "errnos"
    pytester.makepyfile(
        test_daemon=f"""
import os, subprocess, sys, time

def test_starts_a_daemon():
    subprocess.Popen([sys.executable, "-c", {STUBBORN_DAEMON!r}, {str(errnos)!r}],
                     start_new_session=True)
    while not os.path.exists({str(errnos)!r}) or len(open({str(errnos)!r}).read().split()) < 3:
        time.sleep(0.01)
"""
    )
    result = pytest_run("--netaudit", cwd=pytester.path, env=env)
    daemon, *results = (int(word) for word in errnos.read_text().split())
    assert result.ret == 0, result.outlines + result.errlines
    result.stdout.fnmatch_lines(
        [f"netaudit: the session left processes running; they were ended: {daemon}"]
    )
    assert still_running({daemon: start_time(daemon)}, wait=5) == []
    assert set(results) == {errno.ECONNREFUSED}, results  # never ENOSYS
    assert netaudit_dirs(tmpdir) == []


def test_two_sessions_at_once_in_one_folder_keep_their_own_files(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    tmpdir, env = tmp_env(pytester)
    for n in (0, 1):
        pytester.makepyfile(
            **{
                f"test_s{n}": UDP
                + f"""
import os, time

def test_{n}():
    open("started{n}", "w").close()
    while not os.path.exists("started{1 - n}"):  # both sessions run at once, for sure
        time.sleep(0.01)
    udp("192.0.2.{70 + n}")
"""
            }
        )
    netns = runner.DEFAULT_NETNS
    assert netns is not None
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--netaudit"]
    pipe = subprocess.PIPE
    sessions = [
        subprocess.Popen(
            netns([*argv, f"--netaudit-report=r{n}.json", f"test_s{n}.py"]),
            cwd=pytester.path,
            env=env,
            stdout=pipe,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in (0, 1)
    ]
    for n, session in enumerate(sessions):
        out, _ = session.communicate(timeout=120)
        assert session.returncode == 1, out
        report: dict[str, Any] = json.loads((pytester.path / f"r{n}.json").read_text())
        assert [(d["test"], d["display"]) for d in report["violations"]] == [
            (f"test_s{n}.py::test_{n}", f"192.0.2.{70 + n}:53")
        ]
    assert netaudit_dirs(tmpdir) == []


def test_a_test_can_neither_forge_nor_hide_calls_with_lines_that_look_like_strace_output(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    tmpdir, env = tmp_env(pytester)
    pytester.makepyfile(
        test_forger=UDP
        + r"""
import os, subprocess, sys

def test_forges():
    pid = os.getpid()
    run = os.environ.get("NETAUDIT_SUPERVISOR", "0123456789abcdef")[:16]
    lines = [
        f'{pid}  1795634279.4 connect(3, {{sa_family=AF_INET, sin_port=htons(443), '
        f'sin_addr=inet_addr("203.0.113.66")}}, 16) = 0',
        f'{pid}  1795634279.4 connect(3, {{sa_family=AF_UNIX, sun_path=@"netaudit:{run}:e"}}, 20)'
        ' = -1 ECONNREFUSED (Connection refused)',
        f'{pid}  1795634279.5 +++ exited with 0 +++',
    ]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    sys.stderr.write(text)
    open("trace.log", "w").write(text)
    subprocess.run([sys.executable, "-c", f"print({text!r})"])
    udp("192.0.2.63")

def test_next():
    pass
"""
    )
    result = pytest_run("--netaudit", "--netaudit-report=r.json", cwd=pytester.path, env=env)
    assert result.ret == 1, result.outlines + result.errlines
    assert "203.0.113.66" in (pytester.path / "trace.log").read_text()  # the forgery ran
    report: dict[str, Any] = json.loads((pytester.path / "r.json").read_text())
    assert [(d["test"], d["display"]) for d in report["violations"]] == [
        ("test_forger.py::test_forges", "192.0.2.63:53")
    ]
    assert report["summary"]["foreign_lines"] == 0
    assert netaudit_dirs(tmpdir) == []


def test_no_descriptor_of_a_test_or_its_subprocess_reaches_the_trace(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    _, env = tmp_env(pytester)
    pytester.makepyfile(
        test_fds=f"""
import subprocess, sys
from pathlib import Path

LISTER = {FD_LISTER!r}

def test_lists_descriptors(capsys):
    exec(LISTER)
    mine = capsys.readouterr().out
    child = subprocess.run([sys.executable, "-c", LISTER], capture_output=True, text=True,
                           close_fds=False).stdout
    Path("fds.json").write_text(mine.strip() + "\\n" + child.strip() + "\\n")
"""
    )
    result = pytest_run("--netaudit", cwd=pytester.path, env=env)
    assert result.ret == 0, result.outlines + result.errlines
    listed = [json.loads(line) for line in (pytester.path / "fds.json").read_text().splitlines()]
    assert len(listed) == 2 and all(listed)
    targets = [target for fds in listed for target in fds.values()]
    assert [t for t in targets if "/netaudit-" in t or "trace.log" in t] == [], targets


@pytest.mark.parametrize(
    ("flag", "status"),
    [([], 0), (["--netaudit-io-uring=deny"], 0), (["--netaudit-io-uring=report"], 3)],
    ids=["default", "deny", "report"],
)
def test_io_uring_is_denied_unless_reporting_is_asked_for(
    pytester: pytest.Pytester, tracer: Tracer, flag: list[str], status: int
) -> None:
    program = build("uring.c", pytester.path)
    pytester.makepyfile(
        test_ring=f"""
import subprocess

def test_sets_up_a_ring():
    subprocess.run([{str(program)!r}], check=True)
"""
    )
    result = pytest_run("--netaudit", "--junitxml=junit.xml", *flag, cwd=pytester.path)
    assert result.ret == status, result.outlines + result.errlines
    suite = ET.parse(pytester.path / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    if not status:
        result.stdout.no_fnmatch_line("*audit incomplete*")
        assert suite.get("errors") == "0" and suite.get("failures") == "0"
        return
    # One line for the kind, naming the test and the remedy; pytest's last line says it too.
    result.stdout.fnmatch_lines(
        [
            "netaudit: audit incomplete: io_uring used by pid * (uring) in 1 test "
            "(test_ring.py::test_sets_up_a_ring): * io_uring = ?deny? (the default) *",
            "*1 passed, 1 error, netaudit audit incomplete in *",
        ]
    )
    # The JUnit file cannot show the run green: the test case has an error, and says why.
    assert suite.get("errors") == "1", ET.tostring(suite)
    case = suite.find("testcase")
    assert case is not None and case.find("error") is not None
    properties = [p.get("value", "") for p in case.iter("property")]
    assert any("io_uring used by pid" in value for value in properties), properties
