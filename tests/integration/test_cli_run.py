"""`netaudit run` end to end: the real strace on real processes, in a private network namespace.

Every "external" destination below is reached only inside the namespace, where it fails at
once with ENETUNREACH: nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from netaudit.errors import EXIT_INCOMPLETE, EXIT_USAGE, EXIT_VIOLATIONS
from tests.conftest import TinyTmpfs
from tests.netns import Netns
from tests.processes import alive, sleeping_tree, terminal_signals, wait_for
from tests.runner import netaudit, private_tmp

pytestmark = pytest.mark.strace

PY = sys.executable
PROGRAM = os.path.basename(PY)

EVERY_WAY_OUT = r"""
import ctypes, ctypes.util, socket, struct, subprocess, sys, threading

def attempt(fn):
    try:
        fn()
    except OSError:
        pass

tcp = socket.socket()
attempt(lambda: tcp.connect(("93.184.216.34", 443)))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
attempt(lambda: udp.connect(("192.0.2.1", 53)))
attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("198.51.100.7", 9)))
attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendmsg(
    [b"x"], [], 0, ("203.0.113.5", 10)))
attempt(lambda: socket.socket(socket.AF_INET6).connect(("2001:db8::1", 443)))
attempt(lambda: socket.socket(socket.AF_INET6).connect(("::ffff:203.0.113.9", 8443)))
thread = threading.Thread(target=attempt,
    args=(lambda: socket.socket().connect(("192.0.2.2", 80)),))
thread.start(); thread.join()
subprocess.run([sys.executable, "-c",
    "import socket\ntry: socket.socket().connect(('192.0.2.3', 81))\nexcept OSError: pass"])
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
fd = socket.socket()
addr = struct.pack("=H", socket.AF_INET) + struct.pack("!H4s8x", 82, socket.inet_aton("192.0.2.4"))
libc.connect(fd.fileno(), ctypes.c_char_p(addr), len(addr))
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(1)
socket.create_connection(server.getsockname()).close()
print("workload done", flush=True)
"""


@pytest.fixture(scope="module")
def every_way_out(netns: Netns, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One audited run of a program that tries every way out; the tests below read its report."""
    cwd = tmp_path_factory.mktemp("run")
    done = netaudit(
        "run", "--report", "report.json", "--", PY, "-c", EVERY_WAY_OUT, cwd=cwd, netns=netns
    )
    assert "workload done" in done.stdout, done.stderr
    report: dict[str, Any] = json.loads((cwd / "report.json").read_text())
    report["_status"] = done.returncode
    report["_stderr"] = done.stderr
    return report


def find(report: dict[str, Any], family: str, address: str, port: int) -> dict[str, Any]:
    for d in report["destinations"]:
        if (d["family"], d["address"], d["port"]) == (family, address, port):
            found: dict[str, Any] = d
            return found
    raise AssertionError(f"{family} {address}:{port} not reported: {report['destinations']}")


@pytest.mark.parametrize(
    ("family", "address", "port", "syscall"),
    [
        ("AF_INET", "93.184.216.34", 443, "connect"),  # TCP to a public address
        ("AF_INET", "192.0.2.1", 53, "connect"),  # UDP connect
        ("AF_INET", "198.51.100.7", 9, "sendto"),  # UDP sendto without connect
        ("AF_INET", "203.0.113.5", 10, "sendmsg"),  # sendmsg with a destination
        ("AF_INET6", "2001:db8::1", 443, "connect"),  # IPv6
        ("AF_INET", "203.0.113.9", 8443, "connect"),  # v4-mapped IPv6, judged as IPv4
        ("AF_INET", "192.0.2.4", 82, "connect"),  # ctypes libc.connect
    ],
)
def test_each_way_out_is_reported_as_a_violation(
    every_way_out: dict[str, Any], family: str, address: str, port: int, syscall: str
) -> None:
    d = find(every_way_out, family, address, port)
    assert d["verdict"] == "violation"
    assert d["syscalls"] == [syscall]
    assert d["programs"] == [PROGRAM]
    assert d["results"] == {"ENETUNREACH": 1}


def test_a_threads_call_belongs_to_its_process(every_way_out: dict[str, Any]) -> None:
    main = find(every_way_out, "AF_INET", "93.184.216.34", 443)
    thread = find(every_way_out, "AF_INET", "192.0.2.2", 80)
    assert thread["pids"] == main["pids"]


def test_a_subprocess_call_names_the_child_process(every_way_out: dict[str, Any]) -> None:
    main = find(every_way_out, "AF_INET", "93.184.216.34", 443)
    child = find(every_way_out, "AF_INET", "192.0.2.3", 81)
    assert child["verdict"] == "violation"
    assert child["pids"] != main["pids"]
    assert child["programs"] == [PROGRAM]


def test_loopback_is_allowed_by_the_builtin_rule(every_way_out: dict[str, Any]) -> None:
    loop = [d for d in every_way_out["destinations"] if d["address"] == "127.0.0.1"]
    assert loop and all(d["rule"] == "loopback (IPv4)" for d in loop)


def test_violations_with_a_successful_command_exit_with_the_reserved_code(
    every_way_out: dict[str, Any],
) -> None:
    assert every_way_out["_status"] == EXIT_VIOLATIONS
    assert "netaudit: 9 violations detected" in every_way_out["_stderr"]


def test_the_report_carries_the_run_metadata(every_way_out: dict[str, Any]) -> None:
    run = every_way_out["run"]
    assert run["command"][:2] == [PY, "-c"]
    assert run["strace_version"] and run["syscalls"][0] == "connect"
    assert run["started"].endswith("+00:00")
    assert run["exit_status"] == 0


def test_a_clean_run_exits_zero_and_still_writes_the_report(tmp_path: Path) -> None:
    code = "import socket; s = socket.socket(); s.connect_ex(('127.0.0.1', 9))"
    done = netaudit("run", "--report", "r.json", "--", PY, "-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["summary"]["clean"] is True
    assert report["destinations"][0]["rule"] == "loopback (IPv4)"
    assert "netaudit: no violations" in done.stderr


def test_violations_outweigh_the_commands_failure_and_both_are_said(
    netns: Netns, tmp_path: Path
) -> None:
    code = "import socket, sys; socket.socket().connect_ex(('192.0.2.9', 80)); sys.exit(7)"
    done = netaudit("run", "--", PY, "-c", code, cwd=tmp_path, netns=netns)
    assert done.returncode == EXIT_VIOLATIONS
    assert "192.0.2.9:80" in done.stderr
    assert "netaudit: the command exited with 7; netaudit exits 1 for the violations\n" in (
        done.stderr
    )


def test_a_clean_run_keeps_the_commands_failing_status_and_says_so(tmp_path: Path) -> None:
    done = netaudit("run", "--", PY, "-c", "import sys; sys.exit(7)", cwd=tmp_path)
    assert done.returncode == 7
    assert done.stderr.endswith("netaudit: the command exited with 7\n"), done.stderr


def test_a_death_by_signal_is_passed_through_as_128_plus_n(tmp_path: Path) -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    done = netaudit("run", "--", PY, "-c", code, cwd=tmp_path)
    assert done.returncode == 128 + 15
    assert "netaudit: the command exited with 143 (killed by SIGTERM)\n" in done.stderr


def test_an_invalid_allowlist_stops_the_run_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("version: 1\nallowlist:\n  - family: AF_INET\n    adr: x\n")
    marker = tmp_path / "ran"
    done = netaudit("run", "--allowlist", "bad.yaml", "--", "touch", str(marker), cwd=tmp_path)
    assert done.returncode == EXIT_USAGE
    assert done.stderr.startswith(f"netaudit: error: {tmp_path / 'bad.yaml'}:4: ")
    assert not marker.exists()


def test_a_missing_strace_is_a_usage_error_before_anything_runs(tmp_path: Path) -> None:
    done = netaudit("run", "--strace", "/nonexistent/strace", "--", "true", cwd=tmp_path)
    assert done.returncode == EXIT_USAGE
    assert "apt-get install strace" in done.stderr


def test_a_command_that_does_not_exist_exits_127(tmp_path: Path) -> None:
    done = netaudit("run", "--", "no-such-command-4242", cwd=tmp_path)
    assert done.returncode == 127
    assert "command not found: no-such-command-4242" in done.stderr


def test_suggested_rules_allow_exactly_what_the_run_violated(netns: Netns, tmp_path: Path) -> None:
    code = (
        "import socket\n"
        "for host, port in [('192.0.2.1', 443), ('2001:db8::7', 80), ('198.51.100.1', 53)]:\n"
        "    try: socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)"
        ".connect((host, port))\n"
        "    except OSError: pass\n"
    )
    first = netaudit("run", "--suggest-rules", "--", PY, "-c", code, cwd=tmp_path, netns=netns)
    assert first.returncode == EXIT_VIOLATIONS
    marker = "netaudit: rules that would allow the violations above:\n"
    (tmp_path / "suggested.yaml").write_text(first.stderr.split(marker, 1)[1])
    again = netaudit(
        "run", "--allowlist", "suggested.yaml", "--", PY, "-c", code, cwd=tmp_path, netns=netns
    )
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_ends_the_tree_and_removes_its_files(
    tmp_path: Path, signum: int, status: int
) -> None:
    scratch, env = private_tmp(tmp_path)
    pidfile = tmp_path / "pid"
    proc = subprocess.Popen(
        [PY, "-m", "netaudit", "run", "--", PY, "-c", sleeping_tree(pidfile)],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=terminal_signals,
    )
    pids = [int(pid) for pid in wait_for(pidfile, proc).split()]
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == status, stderr
    assert list(scratch.iterdir()) == []
    for pid in pids:
        assert not alive(pid), f"pid {pid} was left running"


@pytest.mark.parametrize("touch_log", [False, True], ids=["no-log", "empty-log"])
def test_a_tracer_that_traced_nothing_fails_the_audit(tmp_path: Path, touch_log: bool) -> None:
    # A stand-in that passes the pre-flight, then runs the command untraced.
    fake = tmp_path / "strace"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-V" ]; then echo "strace -- version 6.1"; exit 0; fi\n'
        'while [ "$1" != "--" ]; do\n'
        + ('  if [ "$1" = "-o" ]; then : > "$2"; fi\n' if touch_log else "")
        + '  shift\ndone\nshift\nexec "$@"\n'
    )
    fake.chmod(0o755)
    done = netaudit("run", "--strace", str(fake), "--", PY, "-c", "print('ran')", cwd=tmp_path)
    assert "ran" in done.stdout
    assert done.returncode == EXIT_INCOMPLETE, done.stderr
    assert "the audit is incomplete" in done.stderr or "cannot read the strace log" in done.stderr


def test_the_bundled_example_shows_each_kind_of_finding(netns: Netns, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    done = netaudit(
        "run",
        "--allowlist",
        str(root / "examples" / "netaudit.yaml"),
        "--report",
        "r.json",
        "--",
        PY,
        str(root / "examples" / "egress_demo.py"),
        cwd=tmp_path,
        netns=netns,
    )
    assert done.returncode == EXIT_VIOLATIONS, done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    verdicts = {d["display"]: d["rule"] for d in report["destinations"]}
    loopback = [shown for shown in verdicts if shown.startswith("127.0.0.1:")]
    assert len(loopback) == 1 and verdicts.pop(loopback[0]) == "loopback (IPv4)"
    assert verdicts == {
        "192.0.2.53:53": "Internal DNS",
        "198.51.100.3:8080": "Staging API",
        "203.0.113.10:443": None,
        "198.51.100.3:22": None,
        "[2001:db8::10]:443": None,
        "192.0.2.99:9000": None,  # from a thread
        "203.0.113.77:5432": None,  # from a subprocess
    }


def test_a_command_that_kills_its_tracer_fails_the_audit(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    code = (
        "import os, signal, time\n"
        f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
        "status = open('/proc/self/status').read().split('TracerPid:')[1].split()[0]\n"
        "os.kill(int(status), signal.SIGKILL)\n"
        "time.sleep(3600)\n"  # still running when netaudit sees strace gone, until it ends it
    )
    done = netaudit("run", "--", PY, "-c", code, cwd=tmp_path)
    assert done.returncode == EXIT_INCOMPLETE, done.stderr
    assert "strace was killed (SIGKILL)" in done.stderr
    assert not alive(int(pidfile.read_text()))


def test_a_daemon_left_behind_is_ended_and_reported(tmp_path: Path) -> None:
    pidfile = tmp_path / "daemon.pid"
    code = (
        "import subprocess, sys\n"
        "daemon = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
        " start_new_session=True)\n"
        f"open({str(pidfile)!r}, 'w').write(str(daemon.pid))\n"
    )
    done = netaudit("run", "--", PY, "-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    daemon = int(pidfile.read_text())
    assert f"the command left processes running; they were ended: {daemon}" in done.stderr
    assert not alive(daemon)


def test_a_trace_cut_short_by_a_full_disk_fails_the_audit(
    tmp_path: Path, tiny_tmpfs: TinyTmpfs
) -> None:
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    many = (
        "import socket\n"
        "for port in range(1, 3000):\n"
        "    socket.socket().connect_ex(('127.0.0.1', port))\n"
    )
    audited = [PY, "-m", "netaudit", "run", "--", PY, "-c", many]
    done = subprocess.run(
        tiny_tmpfs(audited, tiny), cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == EXIT_INCOMPLETE, done.stderr
    assert "No space left on device" in done.stderr


def test_a_report_that_cannot_be_written_never_hides_the_commands_status(
    tmp_path: Path,
) -> None:
    (tmp_path / "folder").mkdir()
    refused = netaudit("run", "--report", "folder", "--", "touch", "ran", cwd=tmp_path)
    assert refused.returncode == EXIT_USAGE
    assert "the report path is a folder" in refused.stderr
    assert not (tmp_path / "ran").exists()


def test_an_interrupted_run_says_so(tmp_path: Path) -> None:
    # The command's parent is strace; strace's parent is netaudit, which gets the SIGTERM.
    code = (
        "import os, signal, time\n"
        "strace = open(f'/proc/{os.getppid()}/stat').read().rsplit(')', 1)[1].split()\n"
        "os.kill(int(strace[1]), signal.SIGTERM)\n"
        "time.sleep(3600)\n"  # until the SIGTERM netaudit passes on ends it
    )
    done = netaudit("run", "--", PY, "-c", code, cwd=tmp_path)
    assert done.returncode == 143, done.stderr
    assert "netaudit: the run was interrupted (SIGTERM)" in done.stderr


def test_a_command_that_kills_its_tracer_and_exits_at_once_fails_the_audit(
    tmp_path: Path,
) -> None:
    # Nothing is left running to show that strace died first: the log has to tell.
    done = netaudit("run", "--", "sh", "-c", "kill -9 $PPID; exit 0", cwd=tmp_path)
    assert done.returncode == EXIT_INCOMPLETE, done.stderr
    assert "strace was killed (SIGKILL)" in done.stderr


def test_a_command_killed_by_sigkill_passes_its_status_through(tmp_path: Path) -> None:
    done = netaudit("run", "--", "sh", "-c", "kill -9 $$", cwd=tmp_path)
    assert done.returncode == 128 + 9, done.stderr


def verdicts(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Each destination with its verdict and evidence, as a run's report and a replay's share
    them (the replay knows no command, and names the log instead)."""
    keys = ("test", "family", "address", "port", "raw", "verdict", "rule", "count", "pids",
            "programs", "syscalls", "results")  # fmt: skip
    return sorted(tuple(json.dumps(d[key]) for key in keys) for d in report["destinations"])


def test_a_kept_trace_replays_to_the_verdicts_of_the_run(netns: Netns, tmp_path: Path) -> None:
    (tmp_path / "allow.yaml").write_text(
        "version: 1\nallowlist:\n  - name: docs\n    family: AF_INET\n    cidr: 192.0.2.0/25\n"
    )
    scratch, env = private_tmp(tmp_path)
    options = ("--allowlist", "allow.yaml")
    done = netaudit(
        "run", *options, "--report", "run.json", "--keep-trace", "kept.log",
        "--", PY, "-c", EVERY_WAY_OUT, cwd=tmp_path, netns=netns, env=env,
    )  # fmt: skip
    assert done.returncode == EXIT_VIOLATIONS, done.stderr
    assert "the trace is kept; replay it with: netaudit analyze" in done.stderr
    assert list(scratch.iterdir()) == []  # the private dir went, the log was moved out
    replay = netaudit("analyze", *options, "--report", "replay.json", "kept.log", cwd=tmp_path)
    assert replay.returncode == 1, replay.stderr
    run, replayed = (
        json.loads((tmp_path / name).read_text()) for name in ("run.json", "replay.json")
    )
    assert verdicts(replayed) == verdicts(run)
    assert {d["rule"] for d in run["destinations"]} == {None, "docs", "loopback (IPv4)"}
