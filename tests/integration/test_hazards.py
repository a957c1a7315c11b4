"""Ways around syscall tracing fail the audit instead of passing it (real strace, real C)."""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from netaudit.errors import EXIT_INCOMPLETE, EXIT_USAGE, EXIT_VIOLATIONS
from tests.netns import EXTERNAL_V4, Netns
from tests.processes import build
from tests.runner import netaudit

pytestmark = pytest.mark.strace


def test_an_io_uring_makes_the_audit_incomplete_when_reported(netns: Netns, tmp_path: Path) -> None:
    program = str(build("uring.c", tmp_path))
    done = netaudit("run", "--io-uring", "report", "--", program, cwd=tmp_path, netns=netns)
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
    assert done.returncode == EXIT_INCOMPLETE
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


def report_of(cwd: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((cwd / "r.json").read_text())
    return loaded


def test_an_io_uring_connect_is_invisible_and_fails_the_audit_when_reported(
    netns: Netns, tmp_path: Path
) -> None:
    # The connect goes through the ring: strace shows only io_uring_setup, never the address.
    program = str(build("uring_connect.c", tmp_path))
    done = netaudit(
        "run", "--io-uring", "report", "--report", "r.json", "--", program, EXTERNAL_V4, "443",
        cwd=tmp_path, netns=netns,
    )  # fmt: skip
    assert "io_uring enter=1" in done.stdout, done.stdout + done.stderr
    assert done.returncode == EXIT_INCOMPLETE, done.stderr
    assert "netaudit: audit incomplete: io_uring used by pid " in done.stderr
    assert [d["display"] for d in report_of(tmp_path)["destinations"]] == []


@pytest.mark.parametrize("flag", [[], ["--io-uring", "deny"]], ids=["default", "flag"])
def test_io_uring_deny_makes_the_program_fall_back_to_a_connect_that_is_judged(
    netns: Netns, tmp_path: Path, flag: list[str]
) -> None:
    program = str(build("uring_connect.c", tmp_path))
    done = netaudit(
        "run", *flag, "--report", "r.json", "--", program, EXTERNAL_V4, "443",
        cwd=tmp_path, netns=netns,
    )  # fmt: skip
    assert f"fallback setup_errno={errno.ENOSYS}" in done.stdout, done.stdout + done.stderr
    assert done.returncode == EXIT_VIOLATIONS, done.stderr
    assert "audit incomplete" not in done.stderr
    report = report_of(tmp_path)
    assert [(d["display"], d["syscalls"]) for d in report["violations"]] == [
        (f"{EXTERNAL_V4}:443", ["connect"])
    ]


@pytest.mark.parametrize(("setting", "status"), [("report", EXIT_INCOMPLETE), ("deny", 0)])
def test_io_uring_can_be_set_in_pyproject(
    netns: Netns, tmp_path: Path, setting: str, status: int
) -> None:
    (tmp_path / "pyproject.toml").write_text(f'[tool.netaudit]\nio_uring = "{setting}"\n')
    done = netaudit("run", "--", str(build("uring.c", tmp_path)), cwd=tmp_path, netns=netns)
    assert done.returncode == status, done.stderr


def test_an_unknown_io_uring_setting_is_refused_at_its_line(tmp_path: Path) -> None:
    pyproject = '[project]\nname = "x"\n\n[tool.netaudit]\nio_uring = "allow"\n'
    (tmp_path / "pyproject.toml").write_text(pyproject)
    done = netaudit("run", "--", "touch", "ran", cwd=tmp_path)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "pyproject.toml:5: [tool.netaudit] io_uring must be 'report' or 'deny'" in done.stderr
    assert not (tmp_path / "ran").exists()


def test_tcp_fast_open_is_a_judged_event(tmp_path: Path) -> None:
    # sendto(MSG_FASTOPEN, addr) opens the connection itself: there is no connect() to see.
    code = (
        "import socket\n"
        "server = socket.socket(); server.bind(('127.0.0.1', 0)); server.listen(1)\n"
        "client = socket.socket()\n"
        "client.sendto(b'GET / HTTP/1.0\\r\\n\\r\\n', socket.MSG_FASTOPEN, server.getsockname())\n"
        "peer, _ = server.accept()\n"
        "print('port', server.getsockname()[1], 'got', peer.recv(100))\n"
    )
    allowlist = tmp_path / "nothing.yaml"
    allowlist.write_text("version: 1\nbuiltins: false\nallowlist: []\n")
    done = netaudit(
        "run", "--allowlist", str(allowlist), "--report", "r.json", "--", sys.executable, "-c",
        code, cwd=tmp_path,
    )  # fmt: skip
    assert "got b'GET / HTTP/1.0" in done.stdout, done.stdout + done.stderr
    port = int(done.stdout.split()[1])
    assert done.returncode == EXIT_VIOLATIONS, done.stderr
    violations = report_of(tmp_path)["violations"]
    assert [(d["display"], d["syscalls"]) for d in violations] == [
        (f"127.0.0.1:{port}", ["sendto"])
    ]
