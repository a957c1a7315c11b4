"""Block mode on real processes (``netaudit run --block``): every kind of caller is refused
before anything is sent, allowed calls go on with their real result, and everything that
could leave a call unjudged fails closed instead.

Every run is in a private network namespace (only ``lo``): a refused call fails with the errno
chosen, at once; a call let through to an "external" address reaches the stack and fails with
ENETUNREACH. Tests that run the supervisor in this process use only loopback and UDP
``connect()`` (which sends nothing).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import netaudit
from netaudit.cli import main
from netaudit.errors import EXIT_INCOMPLETE, EXIT_USAGE, EXIT_VIOLATIONS
from netaudit.supervisor import BlockPlan, Supervisor
from netaudit.trace import Tracer
from tests import netns as netns_helper
from tests.netns import EXTERNAL_V4, Netns
from tests.processes import STUBBORN_DAEMON, alive, build, wait_for
from tests.runner import netaudit as run_netaudit
from tests.runner import private_tmp

pytestmark = pytest.mark.strace

PY = sys.executable
WAYS = ("main", "thread", "fork", "sendto", "sendmsg", "sendmmsg", "i386", "socketcall",
        "socketcall-sendto")  # fmt: skip


def report(cwd: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((cwd / "r.json").read_text())
    return loaded


def results(stdout: str) -> dict[str, int]:
    """``way errno`` lines, as the fixture programs print them."""
    found = {}
    for line in stdout.splitlines():
        way, _, value = line.rpartition(" ")
        if way and value.lstrip("-").isdigit():
            found[way] = int(value)
    return found


@pytest.fixture(scope="module")
def callers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """block_callers.c, static: raw syscalls of every kind, i386's included."""
    return build("block_callers.c", tmp_path_factory.mktemp("callers"), "-static")


def test_every_kind_of_caller_is_refused_before_anything_is_sent(
    netns: Netns, tmp_path: Path, callers: Path
) -> None:
    done = run_netaudit(
        "run", "--block", "--report", "r.json", "--", str(callers), EXTERNAL_V4, "53",
        cwd=tmp_path, netns=netns,
    )  # fmt: skip
    assert results(done.stdout) == dict.fromkeys(WAYS, errno.EPERM), done.stdout + done.stderr
    assert done.returncode == EXIT_VIOLATIONS, done.stderr
    (violation,) = report(tmp_path)["violations"]
    assert violation["display"] == f"{EXTERNAL_V4}:53"
    assert (violation["count"], violation["blocked"]) == (9, 9)
    assert violation["syscalls"] == ["connect", "sendmmsg", "sendmsg", "sendto"]
    assert len(violation["pids"]) == 2  # the fork's child is its own process
    assert f"AF_INET {EXTERNAL_V4}:53 (count=9, pids=" in done.stderr
    assert (
        "BLOCKED\n      by block_callers: connect/sendmmsg/sendmsg/sendto -> BLOCKED EPERM x9"
        in (done.stderr)
    )


def test_every_kind_of_caller_reaches_what_the_allowlist_allows(
    netns: Netns, tmp_path: Path, callers: Path
) -> None:
    (tmp_path / "netaudit.yaml").write_text(
        f"version: 1\nallowlist:\n  - {{name: dns, family: AF_INET, addr: {EXTERNAL_V4}}}\n"
    )
    done = run_netaudit(
        "run", "--block", "--", str(callers), EXTERNAL_V4, "53", cwd=tmp_path, netns=netns
    )
    # It reached the stack, which has no route there in the private namespace.
    assert results(done.stdout) == dict.fromkeys(WAYS, errno.ENETUNREACH), done.stdout
    assert done.returncode == 0, done.stderr
    loopback = run_netaudit("run", "--block", "--", str(callers), "127.0.0.1", "53",
                            cwd=tmp_path, netns=netns)  # fmt: skip
    assert results(loopback.stdout) == dict.fromkeys(WAYS, 0), loopback.stdout
    assert loopback.returncode == 0, loopback.stderr


EXTENSION = """
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <sys/socket.h>

static PyObject *reach(PyObject *self, PyObject *args) {
    const char *ip;
    int port;
    if (!PyArg_ParseTuple(args, "si", &ip, &port))
        return NULL;
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &to.sin_addr);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    int rc = connect(s, (struct sockaddr *)&to, sizeof to) ? errno : 0;
    close(s);
    return PyLong_FromLong(rc);
}

static PyMethodDef methods[] = {{"reach", reach, METH_VARARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "cext", NULL, -1, methods};
PyMODINIT_FUNC PyInit_cext(void) { return PyModule_Create(&module); }
"""

CALLERS = """
import ctypes, socket, subprocess, sys, threading
import cext

def reach(host, port=443):
    with socket.socket() as s:
        return s.connect_ex((host, port))

def libc_connect(host, port=443):
    libc = ctypes.CDLL(None, use_errno=True)
    s = socket.socket()
    address = bytes([2, 0, port >> 8, port & 255]) + socket.inet_aton(host) + bytes(8)
    rc = libc.connect(s.fileno(), address, 16)
    s.close()
    return ctypes.get_errno() if rc else 0

host = sys.argv[1]
print("python", reach(host))
found = []
thread = threading.Thread(target=lambda: found.append(reach(host)))
thread.start()
thread.join()
print("thread", found[0])
child = [sys.executable, "-c", f"import socket; print(socket.socket().connect_ex(({host!r}, 443)))"]
print("subprocess", subprocess.run(child, capture_output=True, text=True).stdout.strip())
print("ctypes", libc_connect(host))
print("extension", cext.reach(host, 443))
try:
    socket.create_connection((host, 443), timeout=1)
except OSError as err:
    print("exception", type(err).__name__)
"""


def test_python_threads_subprocesses_ctypes_and_c_extensions_are_refused(
    netns: Netns, tmp_path: Path
) -> None:
    include = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    source = tmp_path / "cext.c"
    source.write_text(EXTENSION)
    compiler = shutil.which("gcc") or shutil.which("cc")
    assert compiler is not None
    subprocess.run(
        [compiler, "-shared", "-fPIC", f"-I{include}", "-o", str(tmp_path / f"cext{suffix}"),
         str(source)],
        check=True,
    )  # fmt: skip
    (tmp_path / "callers.py").write_text(CALLERS)
    done = run_netaudit("run", "--block", "--", PY, "callers.py", EXTERNAL_V4, cwd=tmp_path,
                        netns=netns)  # fmt: skip
    ways = results(done.stdout)
    assert ways == dict.fromkeys(("python", "thread", "subprocess", "ctypes", "extension"), 1)
    assert "exception PermissionError" in done.stdout  # not a ConnectionError to retry on
    assert done.returncode == EXIT_VIOLATIONS, done.stderr


@pytest.mark.parametrize(
    ("chosen", "exception"),
    [("ECONNREFUSED", "ConnectionRefusedError"), ("EACCES", "PermissionError"),
     ("ENETUNREACH", "OSError")],
)  # fmt: skip
def test_a_refused_call_fails_with_the_errno_chosen(
    netns: Netns, tmp_path: Path, chosen: str, exception: str
) -> None:
    (tmp_path / "pyproject.toml").write_text(f'[tool.netaudit]\nblock_errno = "{chosen}"\n')
    code = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('198.51.100.7', 80))\n"
        "except OSError as err:\n"
        "    print(type(err).__name__, err.errno)\n"
    )
    done = run_netaudit("run", "--block", "--", PY, "-c", code, cwd=tmp_path, netns=netns)
    assert done.stdout.split() == [exception, str(getattr(errno, chosen))], done.stderr
    assert f"connect -> BLOCKED {chosen}" in done.stderr
    flag = run_netaudit("run", "--block", "--block-errno", "EPERM", "--", PY, "-c", code,
                        cwd=tmp_path, netns=netns)  # fmt: skip
    assert flag.stdout.split() == ["PermissionError", str(errno.EPERM)]


def test_a_thread_that_swaps_the_address_after_the_check_never_reaches_the_other(
    netns: Netns, tmp_path: Path
) -> None:
    # 127.0.0.2 is reachable (it is loopback): only 127.0.0.1 may be, and the race must lose.
    (tmp_path / "race.yaml").write_text(
        "version: 1\nbuiltins: false\nallowlist:\n"
        "  - {name: one, family: AF_INET, addr: 127.0.0.1, port: 9}\n"
    )
    program = build("swap_race.c", tmp_path)
    done = run_netaudit(
        "run", "--block", "--allowlist", "race.yaml", "--", str(program), "127.0.0.1",
        "127.0.0.2", "9", "3000", cwd=tmp_path, netns=netns,
    )  # fmt: skip
    words = done.stdout.split()
    counts = dict(zip(words[::2], (int(n) for n in words[1::2])))
    assert counts["leaked"] == 0, done.stdout
    assert counts["failed"] == 0, done.stdout
    assert counts["allowed"] > 0 and counts["refused"] > 0, done.stdout  # the race was run


def test_an_allowed_connect_shows_its_real_result(netns: Netns, tmp_path: Path) -> None:
    code = (
        "import socket\n"
        "server = socket.socket(); server.bind(('127.0.0.1', 0)); server.listen(1)\n"
        "print(socket.socket().connect_ex(server.getsockname()))\n"
        "print(socket.socket().connect_ex(('127.0.0.1', 1)))\n"
        "quiet = socket.socket(); quiet.setblocking(False)\n"
        "print(quiet.connect_ex(('127.0.0.1', 1)))\n"
        f"print(socket.socket().connect_ex(({EXTERNAL_V4!r}, 443)))\n"
    )
    (tmp_path / "netaudit.yaml").write_text(
        f"version: 1\nallowlist:\n  - {{name: x, family: AF_INET, addr: {EXTERNAL_V4}}}\n"
    )
    done = run_netaudit("run", "--block", "--report", "r.json", "--", PY, "-c", code,
                        cwd=tmp_path, netns=netns)  # fmt: skip
    assert done.stdout.split() == ["0", "111", "115", "101"], done.stderr  # EINPROGRESS: 115
    by_port = {d["port"]: d["results"] for d in report(tmp_path)["destinations"]}
    assert by_port[1] == {"ECONNREFUSED": 1, "EINPROGRESS": 1}
    assert by_port[443] == {"ENETUNREACH": 1}
    assert list(by_port.values()).count({"0": 1}) == 1  # the listener


def test_memory_that_cannot_be_read_and_an_unknown_family_are_refused(
    netns: Netns, tmp_path: Path
) -> None:
    code = (
        "import ctypes, socket\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "print('pointer', 0 if libc.connect(s.fileno(), ctypes.c_void_p(0xdeadbeef), 16) == 0"
        " else ctypes.get_errno())\n"
        "odd = (0x63).to_bytes(2, 'little') + bytes(14)\n"
        "print('family', 0 if libc.connect(s.fileno(), odd, 16) == 0 else ctypes.get_errno())\n"
    )
    done = run_netaudit("run", "--block", "--report", "r.json", "--", PY, "-c", code,
                        cwd=tmp_path, netns=netns)  # fmt: skip
    # Without block mode the kernel says EFAULT and EAFNOSUPPORT: the calls were refused first.
    assert results(done.stdout) == {"pointer": errno.EPERM, "family": errno.EPERM}, done.stderr
    shown = {(d["family"], d["blocked"]) for d in report(tmp_path)["violations"]}
    assert shown == {("INVALID", 1), ("0x63", 1)}


def test_io_uring_is_refused_and_the_connect_it_falls_back_to_is_judged(
    netns: Netns, tmp_path: Path
) -> None:
    program = str(build("uring_connect.c", tmp_path))
    done = run_netaudit("run", "--block", "--", program, EXTERNAL_V4, "443", cwd=tmp_path,
                        netns=netns)  # fmt: skip
    assert f"fallback setup_errno={errno.ENOSYS} connect=-{errno.EPERM}" in done.stdout
    assert done.returncode == EXIT_VIOLATIONS, done.stderr
    assert "audit incomplete" not in done.stderr


def test_a_second_notification_listener_in_the_tree_is_refused_and_reported(
    netns: Netns, tmp_path: Path
) -> None:
    program = str(build("seccomp_notify.c", tmp_path))
    done = run_netaudit("run", "--block", "--", program, cwd=tmp_path, netns=netns)
    assert done.returncode == EXIT_INCOMPLETE, done.stderr
    assert "netaudit: the command exited with 1" in done.stderr  # its seccomp() failed: EBUSY
    assert (
        "a seccomp user-notification filter refused (block mode holds the tree's) by pid"
        in done.stderr
    )


def test_a_program_that_takes_many_signals_completes_every_call(
    tracer: Tracer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without WAIT_KILLABLE_RECV, a signal that comes while the supervisor is judging a call
    # restarts it (SA_RESTART), and with a signal every 200 us and an answer that takes 2 ms,
    # the calls never complete (notes on block mode, 1.4). In this process, so that each
    # answer can be made slow; loopback UDP only. `timeout` ends the program if it never ends.
    from netaudit import block

    answer = block.Blocker.handle

    def slowly(self: block.Blocker, notification: object) -> Iterator[str]:
        time.sleep(0.002)
        return answer(self, notification)  # type: ignore[arg-type]

    monkeypatch.setattr(block.Blocker, "handle", slowly)
    program = build("signal_storm.c", tmp_path)
    out = tmp_path / "out"
    command = ["timeout", "60", str(program), "127.0.0.1", "192.0.2.9", "100"]
    status, _ = _run_here(tracer, command, tmp_path, out)
    assert status == 0, out.read_text()
    done, refused, _ = (int(n) for n in out.read_text().split()[1::2])
    assert (done, refused) == (100, 50)


def _run_here(tracer: Tracer, command: list[str], cwd: Path, out: Path) -> tuple[int, Supervisor]:
    """A block-mode run supervised by this process, the command's output in ``out``."""
    scratch, env = private_tmp(cwd)
    supervisor = Supervisor(tracer, "", block=BlockPlan())
    with open(out, "w") as stdout:
        saved = os.dup(1)
        os.dup2(stdout.fileno(), 1)
        try:
            status = supervisor.run(command, env=env, cwd=str(cwd))
        finally:
            os.dup2(saved, 1)
            os.close(saved)
    assert list(scratch.iterdir()) == []
    scratch.rmdir()
    return status, supervisor


def test_the_same_calls_audited_and_blocked_are_reported_alike(
    netns: Netns, tmp_path: Path, callers: Path
) -> None:
    """The supervisor writes the calls it judges as strace writes them: what it allows, the
    report shows as strace's trace would (the results of calls the kernel made are unseen)."""

    def destinations(*flags: str) -> set[tuple[str, str, int, tuple[str, ...]]]:
        done = run_netaudit("run", *flags, "--report", "r.json", "--", str(callers),
                            "127.0.0.1", "53", cwd=tmp_path, netns=netns)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return {
            (d["family"], d["display"], d["count"], tuple(d["syscalls"]))
            for d in report(tmp_path)["destinations"]
        }

    assert destinations("--block") == destinations()


def test_block_mode_can_be_asked_for_in_pyproject(netns: Netns, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.netaudit]\nblock = true\n")
    code = "import socket; print(socket.socket().connect_ex(('203.0.113.5', 443)))"
    done = run_netaudit("run", "--", PY, "-c", code, cwd=tmp_path, netns=netns)
    assert done.stdout.strip() == str(errno.EPERM), done.stderr
    assert done.returncode == EXIT_VIOLATIONS


# -- fail closed ----------------------------------------------------------------------------


def test_a_supervisor_that_fails_closes_the_filter_and_says_why(
    tracer: Tracer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In this process, so that its decisions can be made to fail: loopback UDP only.
    from netaudit import block

    def broken(*args: object) -> None:
        raise RuntimeError("a decision went wrong")

    monkeypatch.setattr(block.Blocker, "_fast_connect", broken)
    code = (
        "import socket\n"
        "for port in (9, 10, 11):\n"
        "    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:\n"
        "        print(s.connect_ex(('127.0.0.1', port)))\n"
    )
    out = tmp_path / "out"
    status, supervisor = _run_here(tracer, [PY, "-c", code], tmp_path, out)
    assert status == 0
    audit, _ = supervisor.leftovers()
    assert out.read_text().split() == [str(errno.ENOSYS)] * 3  # never one let through unjudged
    assert "block mode's supervisor failed (RuntimeError('a decision went wrong'))" in (
        audit.problem
    )
    assert "the calls it would have judged after that failed (ENOSYS)" in audit.problem


def test_every_call_after_the_supervisor_is_gone_fails_with_enosys(
    netns: Netns, tmp_path: Path
) -> None:
    scratch, env = private_tmp(tmp_path)
    errnos = tmp_path / "errnos"
    code = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {STUBBORN_DAEMON!r}, {str(errnos)!r}],"
        " start_new_session=True)\n"
        "time.sleep(3600)\n"
    )
    argv = [PY, "-m", "netaudit", "run", "--block", "--", PY, "-c", code]
    said = tmp_path / "said"
    with open(said, "w") as output:  # the daemon keeps what it inherits: no pipe to drain
        proc = subprocess.Popen(
            netns(argv), cwd=tmp_path, env=env, stdout=output, stderr=output, text=True
        )
    daemon = 0
    try:
        daemon = int(wait_for(errnos, proc).split()[0])
        while str(errno.ECONNREFUSED) not in errnos.read_text().split()[1:]:
            assert proc.poll() is None, said.read_text()
            time.sleep(0.01)
        supervisor = [int(pid) for pid in _children(proc.pid) if _is_netaudit(pid)]
        assert supervisor, "the supervisor was not found"
        os.kill(supervisor[0], signal.SIGKILL)
        proc.wait()
        while str(errno.ENOSYS) not in errnos.read_text().split()[1:]:
            assert alive(daemon)
            time.sleep(0.01)
    finally:
        if daemon:
            os.kill(daemon, signal.SIGKILL)
    seen = [int(n) for n in errnos.read_text().split()[1:]]
    assert set(seen) <= {errno.ECONNREFUSED, errno.ENOSYS}
    assert seen[seen.index(errno.ENOSYS) :] == [errno.ENOSYS] * len(
        seen[seen.index(errno.ENOSYS) :]
    )
    shutil.rmtree(scratch)


def _children(pid: int) -> Iterator[int]:
    """``pid`` and its descendants (the namespace's shell execs into netaudit)."""
    yield pid
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                yield from _children(int(entry))


def _is_netaudit(pid: int) -> bool:
    try:
        return b"netaudit\0run" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_a_kernel_too_old_for_block_mode_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import platform

    monkeypatch.setattr(platform, "release", lambda: "5.4.0-150-generic")
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--block", "--", "touch", "ran"]) == EXIT_USAGE
    said = capsys.readouterr().err
    assert "block mode needs Linux 5.6 or newer" in said
    assert "this kernel is 5.4.0-150-generic" in said
    assert not (tmp_path / "ran").exists()


# -- without privileges ---------------------------------------------------------------------

NOBODY = 65534
UNDUMPABLE = """
import ctypes, socket, subprocess, sys
def attempt():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return s.connect_ex(('127.0.0.1', 9))
if sys.argv[1:] == ['undumpable']:
    ctypes.CDLL(None).prctl(4, 0)  # PR_SET_DUMPABLE 0, before its memory is ever read
    print('undumpable', attempt())
else:
    status = open('/proc/self/status').read()
    uid, caps = status.split('Uid:')[1].split()[0], status.split('CapEff:')[1].split()[0]
    print('uid', uid, 'caps', caps)
    print('dumpable', attempt(), flush=True)
    subprocess.run([sys.executable, __file__, 'undumpable'])
"""


@pytest.fixture
def unprivileged() -> Iterator[tuple[list[str], Path]]:
    """The argv prefix that runs a command as uid 65534 with no capabilities, an interpreter
    that user can run netaudit with, and a folder it can write to."""
    setpriv = netns_helper.tool("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("dropping privileges needs root and setpriv (util-linux)")
    drop = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all"]  # fmt: skip
    source = str(Path(netaudit.__file__).resolve().parents[1])
    for python in (PY, shutil.which("python3", path="/usr/bin:/bin") or PY):
        probe = [*drop, "/bin/sh", "-c", f"PYTHONPATH={source} exec {python} -c 'import netaudit'"]
        if subprocess.run(probe, capture_output=True).returncode == 0:
            break
    else:
        pytest.skip("no Python interpreter here that uid 65534 can run netaudit with")
    folder = Path(tempfile.mkdtemp(prefix="netaudit-unprivileged-"))
    folder.chmod(0o777)
    try:
        yield [*drop, "/usr/bin/env", f"PYTHONPATH={source}", f"TMPDIR={folder}", python], folder
    finally:
        shutil.rmtree(folder)


def test_block_mode_needs_no_privileges_and_refuses_what_it_cannot_read(
    netns: Netns, callers: Path, unprivileged: tuple[list[str], Path]
) -> None:
    python, folder = unprivileged
    program = folder / "callers"
    shutil.copy(callers, program)
    program.chmod(0o755)
    (folder / "undumpable.py").write_text(UNDUMPABLE)
    run = [*python, "-m", "netaudit", "run", "--block"]

    def as_nobody(*command: str) -> subprocess.CompletedProcess[str]:
        shell = "cd " + str(folder) + ' && exec "$@"'
        argv = netns(["/bin/sh", "-c", shell, "nobody", *run, "--", *command])
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    done = as_nobody(str(program), EXTERNAL_V4, "53")
    assert results(done.stdout) == dict.fromkeys(WAYS, errno.EPERM), done.stdout + done.stderr
    assert done.returncode == EXIT_VIOLATIONS, done.stderr
    done = as_nobody(python[-1], "undumpable.py")
    lines = done.stdout.splitlines()
    assert lines[0] == f"uid {NOBODY} caps 0000000000000000", done.stderr
    # Its memory cannot be read: even loopback, which the built-in rules allow, is refused.
    assert results("\n".join(lines[1:])) == {"dumpable": 0, "undumpable": errno.EPERM}
    assert "AF_INET 127.0.0.1:9" not in done.stderr
    assert " BLOCKED\n" in done.stderr and "INVALID 0x" in done.stderr
    assert list(folder.glob("netaudit-*")) == []
