"""Ways around syscall tracing fail the audit instead of passing it (real strace, real C)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netaudit.errors import EXIT_INCOMPLETE
from tests.netns import Netns
from tests.runner import netaudit

pytestmark = pytest.mark.strace

FIXTURES = Path(__file__).parent.parent / "fixtures" / "strace"


def build(source: str, tmp_path: Path) -> Path:
    """Compiles a fixture program; gcc is part of the test set-up, like strace."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.fail("a C compiler is needed to build the escape programs")
    binary = tmp_path / Path(source).stem
    sources = [str(FIXTURES / source), "-lpthread"]
    subprocess.run([compiler, "-O1", "-o", str(binary), *sources], check=True)
    return binary


def test_an_io_uring_makes_the_audit_incomplete(netns: Netns, tmp_path: Path) -> None:
    done = netaudit("run", "--", str(build("uring.c", tmp_path)), cwd=tmp_path, netns=netns)
    assert done.returncode == EXIT_INCOMPLETE, done.stderr
    assert "netaudit: audit incomplete: io_uring used by pid " in done.stderr
    assert "(uring)" in done.stderr


def test_an_untraced_child_makes_the_audit_incomplete(netns: Netns, tmp_path: Path) -> None:
    done = netaudit("run", "--", str(build("untraced.c", tmp_path)), cwd=tmp_path, netns=netns)
    assert done.returncode == EXIT_INCOMPLETE, done.stderr
    assert "an untraced child (CLONE_UNTRACED) started by pid " in done.stderr


def test_analyze_reports_an_incomplete_audit_as_not_clean(tmp_path: Path) -> None:
    log = tmp_path / "t.log"
    log.write_text(
        '10  1795634279.1 execve("/opt/u", ["u"], 0x7ffe /* 3 vars */) = 0\n'
        "10  1795634279.2 io_uring_setup(4, {flags=0, sq_thread_cpu=0}) = 3\n"
    )
    done = netaudit("analyze", str(log), cwd=tmp_path)
    assert done.returncode == 1
    assert "netaudit: audit incomplete: io_uring used by pid 10 (u)" in done.stdout


def test_a_seccomp_user_notification_filter_makes_the_audit_incomplete(
    netns: Netns, tmp_path: Path
) -> None:
    # Its connect() goes to a supervisor thread instead of ptrace: strace never shows it.
    done = netaudit(
        "run", "--", str(build("seccomp_notify.c", tmp_path)), cwd=tmp_path, netns=netns
    )
    assert done.returncode == EXIT_INCOMPLETE, done.stderr
    assert "a seccomp user-notification filter installed by pid " in done.stderr


def test_a_bound_raw_packet_socket_makes_the_audit_incomplete(netns: Netns, tmp_path: Path) -> None:
    # send() on a bound AF_PACKET socket writes whole frames with no address strace can show.
    code = (
        "import socket\n"
        "raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
        "raw.bind(('lo', 0))\n"
        "raw.send(bytes(14) + b'frame')\n"
    )
    done = netaudit("run", "--", sys.executable, "-c", code, cwd=tmp_path, netns=netns)
    assert done.returncode == EXIT_INCOMPLETE, done.stderr
    assert "a raw packet socket (AF_PACKET) bound to an interface by pid " in done.stderr
