"""The cost of the where-in-the-code audit hook, measured side by side.

    .venv/bin/python bench/where_hook.py [--rounds N]

One suite: 2,000 trivial tests and 200 tests that each make 1 UDP connect() and 20 sendto()
on loopback (nothing leaves the machine), all passing. Variants alternate within each round:
pytest --netaudit as shipped and without the hook (``-p where_off``); untraced, pytest with
the recorder (``-p where_on``) and without (``-p where_import``, the same imports), where the
hook's cost is not hidden by strace's. Then the cost of one call, untraced
(workloads/where_calls.py). The tables show medians and ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.run import measure  # noqa: E402

NET_TESTS = 200
NETWORK = """
import socket

# Loopback sinks that never read: a full buffer drops datagrams silently, so every call
# succeeds (a closed port would answer with ICMP and fail the next call, and the test).
_SINKS = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
for _sink in _SINKS:
    _sink.bind(("127.0.0.1", 0))
_PORTS = [_sink.getsockname()[1] for _sink in _SINKS]

def _reach(n):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", _PORTS[n % 4]))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for k in range(20):
            s.sendto(b"x", ("127.0.0.1", _PORTS[k % 4]))
"""


def suite(scratch: Path) -> Path:
    """2,000 trivial tests, 100 per module, beside the network tests, with its own rootdir."""
    folder = scratch / "suite"
    folder.mkdir()
    (folder / "pytest.ini").write_text("[pytest]\n")
    trivial = "".join(f"def test_{n}():\n    pass\n\n" for n in range(100))
    for module in range(20):
        (folder / f"test_m{module}.py").write_text(trivial)
    tests = "".join(f"\ndef test_net_{n}():\n    _reach({n})\n" for n in range(NET_TESTS))
    (folder / "test_network.py").write_text(NETWORK + tests)
    return folder


def table(title: str, times: dict[str, list[float]], pairs: list[tuple[str, str]]) -> None:
    print(f"\n{title}")
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    for name, median in medians.items():
        print(f"  {name:<40} {median:>8.3f}s")
    for with_hook, without in pairs:
        ratio = medians[with_hook] / medians[without]
        print(f"  {with_hook} / {without}: {ratio:.3f}x ({(ratio - 1) * 100:+.1f}%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(HERE / "workloads"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    print(f"machine: {os.uname().nodename}, {os.cpu_count()} CPUs, Linux {os.uname().release}")
    with tempfile.TemporaryDirectory(prefix="netaudit-bench-") as scratch:
        folder = str(suite(Path(scratch)))
        pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", folder]
        runs = {
            "pytest --netaudit (hook on, as shipped)": [*pytest, "--netaudit"],
            "pytest --netaudit (hook off)": [*pytest, "--netaudit", "-p", "where_off"],
            "pytest, untraced, recorder and hook": [*pytest, "-p", "no:netaudit", "-p", "where_on"],
            "pytest, untraced": [*pytest, "-p", "no:netaudit", "-p", "where_import"],
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        measure(runs["pytest, untraced"])  # warm the page cache
        for _ in range(args.rounds):
            for name, argv in runs.items():
                times[name].append(measure(argv)[0])
        per_call: dict[str, list[float]] = {"hook off": [], "hook on": []}
        calls = str(HERE / "workloads" / "where_calls.py")
        for _ in range(args.rounds):
            for name, switch in (("hook off", "off"), ("hook on", "on")):
                done = subprocess.run(
                    [sys.executable, calls, switch], capture_output=True, text=True, check=True
                )
                per_call[name].append(float(done.stdout))
    names = list(runs)
    title = (
        f"{2000 + NET_TESTS} tests, {NET_TESTS * 21} network calls ({args.rounds} rounds, median)"
    )
    table(title, times, [(names[0], names[1]), (names[2], names[3])])
    off, on = (statistics.median(per_call[name]) for name in ("hook off", "hook on"))
    print(f"\none loopback UDP sendto() from a helper of a test, untraced ({args.rounds} rounds)")
    print(f"  hook off {off:.2f} us, hook on {on:.2f} us: +{on - off:.2f} us per call")


if __name__ == "__main__":
    main()
