"""Programs the real-strace tests run, and how a test sees whether a process is still running.

Shared by tests/integration (``netaudit run``) and tests/plugin (``pytest --netaudit``), which
check the same behaviour through the two front ends.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

#: A daemon that ignores SIGTERM, so only SIGKILL ends it. ``argv[1]`` is a file it appends
#: to: its pid first, then the errno of a loopback connect() every 10 ms (ECONNREFUSED while
#: strace traces it; ENOSYS if it outlived strace's --seccomp-bpf filter).
STUBBORN_DAEMON = """
import os, signal, socket, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
out = open(sys.argv[1], "a", buffering=1)
out.write(f"{os.getpid()}\\n")
while True:
    s = socket.socket()
    out.write(f"{s.connect_ex(('127.0.0.1', 1))}\\n")
    s.close()
    time.sleep(0.01)
"""

#: Prints, as one JSON object, each open descriptor of its process and what it points to.
FD_LISTER = (
    "import json, os\n"
    "fds = {}\n"
    "for fd in os.listdir('/proc/self/fd'):\n"
    "    try: fds[fd] = os.readlink('/proc/self/fd/' + fd)\n"
    "    except OSError: pass\n"
    "print(json.dumps(fds))\n"
)


def sleeping_tree(pidfile: Path) -> str:
    """A program that starts a child, writes its own pid and the child's to ``pidfile`` (one
    line), and sleeps: a process tree for a test to interrupt, or to watch being ended."""
    return (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pidfile)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}\\n')\n"
        "time.sleep(60)\n"
    )


def wait_for(path: Path, proc: subprocess.Popen[str]) -> str:
    """The content of a file the traced program writes, once it is there (or the run ended)."""
    while not (path.exists() and path.read_text().endswith("\n")):
        if proc.poll() is not None:
            try:  # a process the run left behind may hold its pipes open
                said = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                said = ("(its output is held open by a process it left running)", "")
            pytest.fail(f"the run ended early: {said}")
        time.sleep(0.02)
    return path.read_text()


def terminal_signals() -> None:
    """Before exec, in a process a test interrupts: SIGINT and SIGTERM as a terminal delivers
    them, even when the test session runs where they are ignored (a shell's background job,
    ``nohup``), which the process would inherit and so never see the test's signal."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for init to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


FIXTURES = Path(__file__).parent / "fixtures" / "strace"


def build(source: str, tmp_path: Path, *flags: str) -> Path:
    """Compiles a fixture program (``flags``: ``-static``...); gcc is part of the test set-up,
    like strace."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.fail("a C compiler is needed to build the fixture programs")
    binary = tmp_path / Path(source).stem
    sources = [str(FIXTURES / source), "-lpthread"]
    subprocess.run([compiler, "-O1", *flags, "-o", str(binary), *sources], check=True)
    return binary
