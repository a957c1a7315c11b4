"""The capture module with the real strace, on real processes.

Anything that connects to a non-loopback address runs inside the ``netns`` fixture's private
network namespace. Tests that must signal the process using TracedRun run a small runner
(``RUNNER``) in a subprocess.
"""

from __future__ import annotations

import errno
import json
import os
import pty
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from netaudit.errors import CommandError, TraceError
from netaudit.trace import SHIM_TAG, TracedRun, Tracer
from tests.netns import Netns
from tests.processes import FD_LISTER, terminal_signals

PY = sys.executable

RUNNER = """
import json, os, sys
from netaudit.errors import TraceError
from netaudit.trace import TracedRun, find_tracer
opts = json.loads(sys.argv[1])
with TracedRun(find_tracer(), leftover_grace=0.3, kill_grace=opts["kill_grace"]) as run:
    print(json.dumps({"dir": os.path.dirname(run.log_path)}), flush=True)
    try:
        status = run.run(opts["cmd"])
    except TraceError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        sys.exit(101)
    with open(run.log_path) as f:
        print(json.dumps({"status": status, "log": f.read()}), flush=True)
sys.exit(status)
"""


def runner(cmd: Sequence[str], *, kill_grace: float = 5.0) -> list[str]:
    return [PY, "-c", RUNNER, json.dumps({"cmd": list(cmd), "kill_grace": kill_grace})]


def gone(pid: int, timeout: float = 60.0) -> bool:
    """Whether ``pid`` ends (a zombie waiting for init to reap it counts as ended); the timeout
    only bounds a failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def wait_for(path: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return path.read_text()


def python(code: str, *args: str) -> list[str]:
    return [PY, "-c", code, *args]


# --- exit status -----------------------------------------------------------------------------


@pytest.mark.strace
def test_find_tracer_gives_a_working_strace(tracer: Tracer) -> None:
    assert os.path.isabs(tracer.path) and os.access(tracer.path, os.X_OK)
    assert tracer.version[0].isdigit()


@pytest.mark.strace
@pytest.mark.parametrize("code", [0, 7])
def test_exit_status_passes_through(tracer: Tracer, code: int) -> None:
    with TracedRun(tracer) as traced:
        assert traced.run(python(f"raise SystemExit({code})")) == code
        assert traced.leftover_pids == () and traced.interrupted is None


@pytest.mark.strace
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGSEGV])
def test_death_by_signal_gives_128_plus_n(tracer: Tracer, sig: signal.Signals) -> None:
    with TracedRun(tracer) as traced:
        status = traced.run(python(f"import os; os.kill(os.getpid(), {int(sig)})"))
    assert status == 128 + sig


# --- the log ---------------------------------------------------------------------------------


@pytest.mark.strace
def test_connect_to_an_external_address_is_in_the_log(netns: Netns) -> None:
    code = (
        "import socket\n"
        "try: socket.create_connection(('192.0.2.1', 80), timeout=2)\n"
        "except OSError as e: print(e.errno)\n"
    )
    done = subprocess.run(
        netns(runner(python(code), kill_grace=1)), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    log = lines[-1]["log"]
    assert str(errno.ENETUNREACH) in done.stdout
    (connect,) = [line for line in log.splitlines() if 'inet_addr("192.0.2.1")' in line]
    assert " connect(" in connect and "htons(80)" in connect and "ENETUNREACH" in connect
    first, second = [line for line in log.splitlines() if " execve(" in line][:2]
    assert SHIM_TAG in first and first.split()[0] == second.split()[0]
    assert PY in second


@pytest.mark.strace
def test_the_tracee_has_no_descriptor_to_the_log(tracer: Tracer, capfd: Any) -> None:
    with TracedRun(tracer) as traced:
        assert traced.run(python(FD_LISTER)) == 0
        private = os.path.dirname(traced.log_path)
    fds = json.loads(capfd.readouterr().out)
    assert set(fds) <= {"0", "1", "2", "3"}  # 3: listdir's own descriptor, now closed
    assert not [target for target in fds.values() if target.startswith(private)]


# --- output and environment ------------------------------------------------------------------


@pytest.mark.strace
def test_the_commands_output_reaches_the_caller_unchanged(tracer: Tracer, capfdbinary: Any) -> None:
    code = (
        "import sys\n"
        "sys.stdout.buffer.write(b'out \\x00\\xff\\n'); sys.stdout.flush()\n"
        "sys.stderr.buffer.write(b'err \\xfe\\n')\n"
    )
    with TracedRun(tracer) as traced:
        assert traced.run(python(code)) == 0
    assert capfdbinary.readouterr() == (b"out \x00\xff\n", b"err \xfe\n")  # no strace messages


@pytest.mark.strace
def test_a_terminal_on_stderr_stays_a_terminal(tracer: Tracer) -> None:
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            runner(python("import os; print(os.isatty(2), os.isatty(1))")),
            stdout=subprocess.PIPE, stderr=follower, text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == 0
    assert "True False" in done.stdout


@pytest.mark.strace
def test_environment_and_cwd_pass_through_unchanged(
    tracer: Tracer, tmp_path: Path, capfd: Any
) -> None:
    env = {"PATH": os.environ["PATH"], "A.B": "1", "C-D": "2", "PWD": "/elsewhere", "E": "x y"}
    printenv = shutil.which("env")
    assert printenv is not None
    with TracedRun(tracer) as traced:
        assert traced.run([printenv], env=env, cwd=str(tmp_path)) == 0
    printed = dict(line.split("=", 1) for line in capfd.readouterr().out.splitlines())
    assert printed == env  # no LC_CTYPE added, PWD not rewritten, odd names kept

    with TracedRun(tracer) as traced:
        assert traced.run([PY, "-c", "import os; print(os.getcwd())"], cwd=str(tmp_path)) == 0
    assert capfd.readouterr().out.strip() == str(tmp_path)


@pytest.mark.strace
def test_strace_kept_on_one_cpu_and_reniced_leaves_the_command_as_it_was(
    tracer: Tracer, capfd: Any
) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs to tell one from all")
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    # The parent of the command is strace: on one CPU, and reniced where that is permitted.
    strace_nice = nice - 5 if os.geteuid() == 0 else nice
    # strace is pinned and reniced just after it starts: the command waits until its parent
    # is both (the deadline only bounds a failure) before it prints what it sees.
    code = (
        "import os, sys, time; p = os.getppid(); mine = sorted(os.sched_getaffinity(0)),"
        " os.getpriority(os.PRIO_PROCESS, 0); end = time.monotonic() + 60\n"
        "while (len(os.sched_getaffinity(p)) > 1 or os.getpriority(os.PRIO_PROCESS, p)"
        " != int(sys.argv[1])) and time.monotonic() < end: time.sleep(0.01)\n"
        "print(*mine, sorted(os.sched_getaffinity(p)), os.getpriority(os.PRIO_PROCESS, p))"
    )
    with TracedRun(tracer, strace_cpu=cpus[-1], strace_nice=nice - 5) as traced:
        assert traced.run([PY, "-c", code, str(strace_nice)]) == 0
    expected = f"{cpus} {nice} {[cpus[-1]]} {strace_nice}"
    assert capfd.readouterr().out.strip() == expected


@pytest.mark.strace
def test_a_command_that_does_not_exist_is_refused_with_a_shells_status(tracer: Tracer) -> None:
    with TracedRun(tracer) as traced:
        with pytest.raises(CommandError, match="command not found: no-such-command-4242"):
            traced.run(["no-such-command-4242"])
        assert not os.path.exists(traced.log_path)


# --- the private directory -------------------------------------------------------------------


@pytest.mark.strace
def test_private_dir_is_0700_and_removed_even_after_an_exception(tracer: Tracer) -> None:
    with pytest.raises(ZeroDivisionError), TracedRun(tracer) as traced:
        assert traced.run(["true"]) == 0
        folder = os.path.dirname(traced.log_path)
        info = os.stat(folder)
        assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
        assert os.path.getsize(traced.log_path) > 0
        1 / 0  # noqa: B018
    assert not os.path.exists(folder)


# --- signals, daemons, a killed strace -------------------------------------------------------

STUBBORN = """
import os, signal, subprocess, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(["sleep", "3600"])
with open(sys.argv[2] + ".tmp", "w") as f:
    f.write(f"{os.getppid()} {os.getpid()} {child.pid}")
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
time.sleep(3600)
"""


@pytest.mark.strace
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("mood", ["polite", "stubborn"])
def test_a_signal_to_the_runner_ends_the_tree_and_removes_the_dir(
    tracer: Tracer, tmp_path: Path, sig: signal.Signals, mood: str
) -> None:
    pids_file = tmp_path / "pids"
    proc = subprocess.Popen(
        runner(python(STUBBORN, mood, str(pids_file)), kill_grace=0.5),
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=terminal_signals,
    )
    try:
        assert proc.stdout is not None
        folder = json.loads(proc.stdout.readline())["dir"]
        pids = [int(pid) for pid in wait_for(pids_file).split()]  # strace, command, child
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)  # they sleep an hour unless ended
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()  # not communicate(): a process left running may hold the pipe open
    assert proc.returncode == 128 + sig, out
    assert [pid for pid in pids if not gone(pid)] == []
    assert not os.path.exists(folder)


DAEMONS = """
import json, subprocess, sys
quiet = subprocess.Popen(["sleep", "60"], start_new_session=True)
deaf = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); "
    "time.sleep(60)"], stdout=subprocess.PIPE)
deaf.stdout.readline()
print(json.dumps([quiet.pid, deaf.pid]))
"""


@pytest.mark.strace
def test_leftover_daemons_do_not_hang_the_run_and_are_ended(tracer: Tracer, capfd: Any) -> None:
    # Each daemon would live a minute: ended by the run, it is among the leftovers.
    with TracedRun(tracer, leftover_grace=0.3, kill_grace=0.5) as traced:
        assert traced.run(python(DAEMONS)) == 0
    daemons = json.loads(capfd.readouterr().out)
    assert set(daemons) <= set(traced.leftover_pids)
    assert [pid for pid in daemons if not gone(pid)] == []


@pytest.mark.strace
def test_strace_killed_mid_run_is_a_trace_error(tracer: Tracer, tmp_path: Path) -> None:
    pid_file, slept = tmp_path / "pid", tmp_path / "slept"
    code = (
        "import os, signal, sys, time\n"
        "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
        "os.kill(os.getppid(), signal.SIGKILL)\n"
        "time.sleep(30)\n"
        "open(sys.argv[2], 'w').close()\n"  # only if the run let it sleep its fill
    )
    with TracedRun(tracer) as traced, pytest.raises(TraceError, match=r"strace was killed"):
        traced.run(python(code, str(pid_file), str(slept)))
    assert gone(int(pid_file.read_text()))
    assert not slept.exists()  # ended by the run, not waited for


@pytest.mark.strace
def test_signal_handlers_are_restored(tracer: Tracer) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with TracedRun(tracer) as traced:
        traced.run(["true"])
    assert {sig: signal.getsignal(sig) for sig in before} == before


@pytest.mark.strace
def test_already_traced_is_tracer_unavailable(tracer: Tracer) -> None:
    code = (
        "from netaudit.errors import TracerUnavailable\n"
        "from netaudit.trace import find_tracer\n"
        "try: find_tracer()\n"
        "except TracerUnavailable as e: print('unavailable:', e)\n"
    )
    argv = [tracer.path, "-f", "-o", os.devnull, "--", PY, "-c", code]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert "unavailable: netaudit is itself being traced" in done.stdout, done


# --- the namespace helper itself -------------------------------------------------------------

ISOLATION = """
import json, socket
with open("/proc/net/dev") as f:
    names = [line.split(":")[0].strip() for line in f.readlines()[2:]]
if names != ["lo"]:
    raise SystemExit(f"not isolated: {names}")  # never connect out from a shared namespace
try:
    socket.create_connection(("192.0.2.1", 80), timeout=2)
    outside = 0
except OSError as e:
    outside = e.errno  # None for a timeout: ENETUNREACH comes at once
server = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(server.getsockname(), timeout=2)
client.sendall(b"ping")
conn, _ = server.accept()
print(json.dumps({"names": names, "outside": outside, "lo": conn.recv(4).decode()}))
"""


def test_netns_has_only_loopback_and_external_connects_fail_at_once(netns: Netns) -> None:
    done = subprocess.run(netns(python(ISOLATION)), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["outside"] == errno.ENETUNREACH
    assert seen["lo"] == "ping"
