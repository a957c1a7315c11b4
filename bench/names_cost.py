"""What reading DNS answers costs (``--names``): the same workloads untraced, under strace with
netaudit's trace set, and with the names additions (recvfrom/recvmsg, -yy -x -s 512), raw and
through ``netaudit run``, side by side in one run.

    .venv/bin/python bench/names_cost.py [--rounds N]

The variants alternate within each round; the table shows medians and ratios. Every workload
stays on loopback (or makes no network call at all): nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = str(Path(sys.executable).resolve())
sys.path.insert(0, str(ROOT / "src"))

from netaudit.trace import find_tracer, strace_argv  # noqa: E402

PING_PONG = """
import socket, sys, threading
n = int(sys.argv[1])
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(1)
def echo():
    conn, _ = server.accept()
    with conn:
        while data := conn.recv(64):
            conn.sendall(data)
threading.Thread(target=echo, daemon=True).start()
with socket.create_connection(server.getsockname()) as client:
    for _ in range(n):
        client.sendall(b"ping")
        client.recv(64)
"""

HTTP = """
import http.server, sys, threading, urllib.request
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = "http://127.0.0.1:%d/" % server.server_address[1]
for _ in range(int(sys.argv[1])):
    urllib.request.urlopen(url).read()
server.shutdown()
"""


def measure(argv: Sequence[str]) -> float:
    quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_WRONLY, 0) for fd in (1, 2)]
    start = time.perf_counter()
    pid = os.posix_spawnp(argv[0], list(argv), dict(os.environ), file_actions=quiet)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench: {' '.join(argv[:6])}... failed ({status})")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--round-trips", type=int, default=20000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    tracer = find_tracer()
    scratch = tempfile.mkdtemp(prefix="netaudit-bench-")
    os.chmod(scratch, 0o700)
    try:
        log = os.path.join(scratch, "trace.log")
        netaudit = [str(Path(sys.executable).parent / "netaudit"), "run"]
        suite = [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:netaudit",
            str(ROOT / "tests" / "unit" / "test_render.py"),
            str(ROOT / "tests" / "unit" / "test_audit.py"),
        ]  # fmt: skip
        workloads = {
            f"ping-pong, {args.round_trips} round trips": [
                PYTHON, "-c", PING_PONG, str(args.round_trips)
            ],
            f"HTTP on loopback, {args.requests} requests": [
                PYTHON, "-c", HTTP, str(args.requests)
            ],
            "pytest suite (tests/unit: render, audit)": suite,
        }  # fmt: skip
        for title, command in workloads.items():
            runs = {
                "untraced": command,
                "strace": strace_argv(tracer, log, command),
                "strace + names": strace_argv(tracer, log, command, names=True),
                "netaudit run": [*netaudit, "--", *command],
                "netaudit run --names": [*netaudit, "--names", "--", *command],
            }
            times: dict[str, list[float]] = {name: [] for name in runs}
            measure(command)  # warm the page cache
            for _ in range(args.rounds):
                for name, argv in runs.items():
                    times[name].append(measure(argv))
            medians = {name: statistics.median(ts) for name, ts in times.items()}
            print(f"\n{title} ({args.rounds} rounds, median wall time)")
            print(f"  {'variant':<22} {'median':>9} {'vs untraced':>12} {'names vs without':>17}")
            for name, median in medians.items():
                without = {"strace + names": "strace", "netaudit run --names": "netaudit run"}
                pair = without.get(name)
                vs = f"{median / medians[pair]:.2f}x" if pair else ""
                ratio = median / medians["untraced"]
                print(f"  {name:<22} {median:>8.3f}s {ratio:>11.2f}x {vs:>17}")
            sys.stdout.flush()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
