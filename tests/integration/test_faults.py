"""`netaudit run` when things go wrong during the run: its tracer killed from outside, its log
changed or cut by the traced program, a daemon left behind, two runs at once in one folder,
and a program that writes lines that look like strace's. Each ends with a clear message and a
failing status, and leaves no process and no temp file behind.

"External" destinations are UDP ``connect()``s to documentation addresses: nothing is sent.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from netaudit.errors import EXIT_INCOMPLETE, EXIT_VIOLATIONS
from tests.processes import STUBBORN_DAEMON, alive, sleeping_tree, wait_for
from tests.runner import netaudit, private_tmp

pytestmark = pytest.mark.strace

PY = sys.executable

UDP = """
import socket

def udp(addr, port=53):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect_ex((addr, port))
    s.close()
"""


def test_strace_killed_from_outside_fails_the_audit_and_ends_the_tree(tmp_path: Path) -> None:
    scratch, env = private_tmp(tmp_path)
    pidfile = tmp_path / "pid"
    proc = subprocess.Popen(
        [PY, "-m", "netaudit", "run", "--", PY, "-c", sleeping_tree(pidfile)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    pids = [int(pid) for pid in wait_for(pidfile, proc).split()]
    status = Path(f"/proc/{pids[0]}/status").read_text()
    strace = int(status.split("TracerPid:")[1].split()[0])
    assert strace != 0
    os.kill(strace, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INCOMPLETE, stderr
    assert "strace was killed (SIGKILL): the audit is incomplete" in stderr
    assert [pid for pid in pids if alive(pid)] == []
    assert list(scratch.iterdir()) == []


def test_a_command_that_cuts_its_trace_short_fails_the_audit(tmp_path: Path) -> None:
    # As the same user, the command can reach the log by its path (not by a descriptor):
    # cutting it erases what strace wrote so far, and strace goes on after a hole of NULs.
    scratch, env = private_tmp(tmp_path)
    code = (
        UDP + "import glob, os\n"
        "udp('192.0.2.31')\n"
        f"os.truncate(glob.glob({str(scratch)!r} + '/netaudit-*/trace.log')[0], 0)\n"
        "udp('192.0.2.33')\n"
    )
    done = netaudit("run", "--", PY, "-c", code, cwd=tmp_path, env=env)
    assert done.returncode == EXIT_INCOMPLETE, done.stderr
    assert "netaudit: audit incomplete: the trace holds 1 line(s) that strace did not write" in (
        done.stderr
    )
    assert "192.0.2.33" in done.stderr  # what came after the cut is still reported
    assert list(scratch.iterdir()) == []


def test_a_command_that_writes_into_its_trace_fails_the_audit(tmp_path: Path) -> None:
    scratch, env = private_tmp(tmp_path)
    code = (
        UDP + "import glob\n"
        f"log = glob.glob({str(scratch)!r} + '/netaudit-*/trace.log')[0]\n"
        "udp('192.0.2.32')\n"
        "with open(log, 'r+b') as f:\n"  # overwrite the start: the shim's exec and more
        "    f.write(b'not a trace\\n')\n"
    )
    done = netaudit("run", "--", PY, "-c", code, cwd=tmp_path, env=env)
    assert done.returncode == EXIT_INCOMPLETE, done.stderr
    assert "that strace did not write" in done.stderr


def test_a_daemon_is_ended_before_strace_so_it_never_runs_with_failing_syscalls(
    tmp_path: Path,
) -> None:
    # With --seccomp-bpf, a process that outlives strace gets ENOSYS from every traced call
    # (notes c.4): the daemon must be gone before strace is, and the run must not hang on it.
    scratch, env = private_tmp(tmp_path)
    errnos = tmp_path / "errnos"
    code = (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', {STUBBORN_DAEMON!r}, {str(errnos)!r}],"
        " start_new_session=True)\n"
        "import os, time\n"
        f"path = {str(errnos)!r}\n"
        "while not os.path.exists(path) or len(open(path).read().split()) < 3:\n"
        "    time.sleep(0.01)\n"
    )
    done = netaudit("run", "--", PY, "-c", code, cwd=tmp_path, env=env)
    daemon, *results = (int(word) for word in errnos.read_text().split())
    assert done.returncode == 0, done.stderr
    assert f"the command left processes running; they were ended: {daemon}" in done.stderr
    assert not alive(daemon)
    assert set(results) == {errno.ECONNREFUSED}, results  # never ENOSYS
    assert list(scratch.iterdir()) == []


def test_two_runs_at_once_in_one_folder_keep_their_own_files(tmp_path: Path) -> None:
    scratch, env = private_tmp(tmp_path)

    def code(mine: str, other: str, address: str) -> str:
        # Each waits until the other has started: the two runs overlap for sure.
        return (
            UDP + "import os, time\n"
            f"open({mine!r}, 'w').close()\n"
            f"while not os.path.exists({other!r}): time.sleep(0.01)\n"
            f"udp({address!r})\n"
        )

    commands = [
        [PY, "-m", "netaudit", "run", "--report", f"r{n}.json", "--", PY, "-c",
         code(f"started{n}", f"started{1 - n}", f"192.0.2.{40 + n}")]
        for n in (0, 1)
    ]  # fmt: skip
    pipe = subprocess.PIPE
    runs = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stdout=pipe, stderr=pipe, text=True)
        for command in commands
    ]
    for n, run in enumerate(runs):
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == EXIT_VIOLATIONS, stderr
        report: dict[str, Any] = json.loads((tmp_path / f"r{n}.json").read_text())
        assert [d["display"] for d in report["violations"]] == [f"192.0.2.{40 + n}:53"]
    assert list(scratch.iterdir()) == []


FORGER = (
    UDP
    + r"""
import os, sys
pid = os.getpid()
forged = [
    f'{pid}  1795634279.426813 connect(3, {{sa_family=AF_INET, sin_port=htons(443), '
    f'sin_addr=inet_addr("203.0.113.66")}}, 16) = 0',
    f'{pid}  1795634279.426813 sendto(3, "x", 1, 0, {{sa_family=AF_INET, sin_port=htons(53), '
    f'sin_addr=inet_addr("203.0.113.67")}}, 16) = 1',
    f'{pid}  1795634279.5 +++ exited with 0 +++',
    'strace: Process 1 detached',
]
text = "\n".join(forged) + "\n"
sys.stdout.write(text); sys.stdout.flush()
sys.stderr.write(text); sys.stderr.flush()
open("trace.log", "w").write(text)
open(os.path.join(os.environ.get("TMPDIR", "/tmp"), "trace.log"), "w").write(text)
udp("192.0.2.77")
"""
)


def test_lines_that_look_like_strace_output_can_neither_forge_nor_hide_a_call(
    tmp_path: Path,
) -> None:
    scratch, env = private_tmp(tmp_path)
    done = netaudit("run", "--report", "r.json", "--", PY, "-c", FORGER, cwd=tmp_path, env=env)
    assert "203.0.113.66" in done.stdout  # the forged lines were written
    assert done.returncode == EXIT_VIOLATIONS, done.stderr
    report: dict[str, Any] = json.loads((tmp_path / "r.json").read_text())
    assert [d["display"] for d in report["violations"]] == ["192.0.2.77:53"]
    assert report["summary"]["foreign_lines"] == 0
    assert [p.name for p in scratch.iterdir()] == ["trace.log"]  # the program's own file
