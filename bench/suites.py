"""The generated pytest suites the benchmark times: each is written into a folder of its own
(with its own rootdir) so that nothing of this repository's configuration applies to it.

Every network call they make goes to 127.0.0.1, and the benchmark runs them inside a private
network namespace besides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

_LISTENER = """
import socket

import pytest


@pytest.fixture(scope="module")
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    yield server
    server.close()
"""

_TCP_TEST = """

def test_tcp_{n}(listener):
    with socket.create_connection(listener.getsockname()) as client:
        peer, _ = listener.accept()
        client.sendall(b"x")
        assert peer.recv(1) == b"x"
        peer.close()
"""

_FILES = """
import os

import pytest


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    paths = []
    for i in range(2000):
        path = folder / f"f{i}"
        path.write_bytes(b"x" * (i % 200))
        paths.append(str(path))
    return paths
"""

_STAT_TEST = """

def test_stat_read_{n}(files):
    total = 0
    for path in files:
        total += os.stat(path).st_size
        with open(path, "rb") as f:
            total += len(f.read())
    assert total > 0
"""

_THREAD_FORK = """
import os
import subprocess
import threading


def spin(n):
    for _ in range(n):
        os.getppid()
"""

_THREAD_FORK_TEST = """

def test_threads_fork_subprocess_{n}():
    threads = [threading.Thread(target=spin, args=(2000,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pid = os.fork()
    if pid == 0:
        spin(2000)
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    subprocess.run(["/bin/true"], check=True)
"""

_ECHO = """
import socket
import threading

import pytest


def echo(server):
    conn, _ = server.accept()
    with conn:
        while True:
            data = conn.recv(64)
            if not data:
                return
            conn.sendall(data)


@pytest.fixture(scope="module")
def peer():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    thread = threading.Thread(target=echo, args=(server,))
    thread.start()
    client = socket.create_connection(server.getsockname())
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    yield client
    client.close()
    thread.join()
    server.close()
"""

_ROUND_TRIPS_TEST = """

def test_round_trips_{n}(peer):
    for _ in range({trips}):
        peer.sendall(b"ping")
        assert peer.recv(64) == b"ping"
"""

_EVENTS = """
import socket
import time
"""

_EVENTS_TEST = """

def test_events_{n}():
    for _ in range({calls}):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("127.0.0.1", 9))
"""

_LAST_TEST = """

def test_zz_last():
    with open({stamp!r}, "w") as out:
        out.write(repr(time.time()))
"""


_SCAN = """
import socket

#: Documentation networks: a UDP connect() there sends nothing (and, in the bench's private
#: network namespace, fails at once: no route).
NETWORKS = ("192.0.2.", "198.51.100.", "203.0.113.")
"""

_SCAN_TEST = """

def test_scan_{n}():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for i in range({first}, {last}):
            host = "127.0.0.1" if i % 4 == 0 else NETWORKS[i % 3] + str(i // 3 % 256)
            try:
                probe.connect((host, 1 + i // 768))
            except OSError:
                pass
"""


def _write(folder: Path, modules: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    (folder / "pytest.ini").write_text("[pytest]\n")
    for name, body in modules.items():
        (folder / name).write_text(body)
    return folder


def synthetic(folder: Path) -> Path:
    """2,000 trivial tests (20 modules of 100) and 200 that each open a loopback TCP
    connection (2 modules of 100)."""
    modules = {
        f"test_trivial_{m}.py": "".join(f"def test_{n}():\n    pass\n\n" for n in range(100))
        for m in range(20)
    }
    for m in range(2):
        modules[f"test_tcp_{m}.py"] = _LISTENER + "".join(_TCP_TEST.format(n=n) for n in range(100))
    return _write(folder, modules)


def syscall_heavy(folder: Path) -> Path:
    """100 tests that each stat and read 2,000 small files: 800,000 untraced syscalls."""
    return _write(folder, {"test_files.py": _FILES + "".join(
        _STAT_TEST.format(n=n) for n in range(100)
    )})  # fmt: skip


def thread_fork_heavy(folder: Path) -> Path:
    """100 tests that each start 2 threads, fork a child and run a subprocess."""
    return _write(folder, {"test_procs.py": _THREAD_FORK + "".join(
        _THREAD_FORK_TEST.format(n=n) for n in range(100)
    )})  # fmt: skip


def send_heavy(folder: Path) -> Path:
    """20,000 small request/response round trips over loopback TCP (20 tests of 1,000): every
    round trip is two traced sendto() calls, one each way."""
    return _write(folder, {"test_echo.py": _ECHO + "".join(
        _ROUND_TRIPS_TEST.format(n=n, trips=1000) for n in range(20)
    )})  # fmt: skip


def events(folder: Path, stamp: str, count: int = 10_000) -> Path:
    """``count`` traced calls (UDP connect()s to loopback, which send nothing) in 100 tests,
    then a last test that writes the time it ended to ``stamp``."""
    body = "".join(_EVENTS_TEST.format(n=n, calls=count // 100) for n in range(100))
    return _write(folder, {"test_events.py": _EVENTS + body + _LAST_TEST.format(stamp=stamp)})


def scan(folder: Path, count: int = 250_000) -> Path:
    """``count`` UDP connect()s, each to a destination of its own (a quarter on loopback, the
    rest to documentation addresses), in 100 tests: the trace of a scan."""
    step = count // 100
    body = "".join(_SCAN_TEST.format(n=n, first=n * step, last=(n + 1) * step) for n in range(100))
    return _write(folder, {"test_scan.py": _SCAN + body})


GENERATED: dict[str, Callable[[Path], Path]] = {
    "synthetic: 2,000 trivial + 200 loopback TCP tests": synthetic,
    "syscall-heavy: 100 tests x 2,000 stat+read": syscall_heavy,
    "thread/fork-heavy: 100 tests x (2 threads, fork, subprocess)": thread_fork_heavy,
    "send-heavy: 20,000 loopback round trips": send_heavy,
    "scan: 250,000 UDP connects, each to a destination of its own": scan,
}
