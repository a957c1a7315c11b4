"""netaudit's benchmark: one command, variants measured side by side in one run.

    .venv/bin/python bench/run.py [--rounds N] [--events N] [--no-peer] [--peer-run]

Workloads run untraced, under raw strace with netaudit's trace set (the floor) and under
`netaudit run`; with --peer-run also under the PyPI netaudit 0.6.1 (installed into
bench/.work/peer), which traces without seccomp-bpf and takes minutes on these workloads.
The variants alternate within each round; the tables show medians and ratios, never one time.
Then `netaudit analyze` judges generated 1,000,000-event logs, ours and the peer's side by side
on a log in the form the peer reads: time and peak memory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
PEER_VERSION = "0.6.1"
BIN = Path(sys.executable).parent
PYTHON = str(Path(sys.executable).resolve())
sys.path.insert(0, str(HERE.parent / "src"))

from netaudit.trace import find_tracer, strace_argv  # noqa: E402

WORKLOADS = {
    "start-up (/bin/true)": ["/bin/true"],
    "syscall-heavy": [PYTHON, str(HERE / "workloads" / "syscall_heavy.py")],
    "thread/fork-heavy": [PYTHON, str(HERE / "workloads" / "thread_fork_heavy.py")],
}


def peer() -> Path | None:
    """The incumbent, in a scratch venv of its own (pinned)."""
    exe = WORK / "peer" / "bin" / "netaudit"
    if not exe.exists():
        print(f"bench: installing netaudit=={PEER_VERSION} into {WORK / 'peer'}", file=sys.stderr)
        subprocess.run([PYTHON, "-m", "venv", str(WORK / "peer")], check=True)
        installed = subprocess.run(
            [str(WORK / "peer" / "bin" / "pip"), "install", "-q", f"netaudit=={PEER_VERSION}"],
            check=False,
        )
        if installed.returncode != 0:
            print("bench: could not install the peer; its columns stay empty", file=sys.stderr)
            return None
    return exe


def measure(argv: Sequence[str]) -> tuple[float, int]:
    """Wall time in seconds and peak RSS in KiB of one run (output discarded)."""
    quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_WRONLY, 0) for fd in (1, 2)]
    start = time.perf_counter()
    pid = os.posix_spawnp(argv[0], list(argv), dict(os.environ), file_actions=quiet)
    _, _, usage = os.wait4(pid, 0)
    return time.perf_counter() - start, usage.ru_maxrss


def variants(command: list[str], peer_exe: Path | None, log: str) -> dict[str, list[str]]:
    out = {
        "untraced": command,
        "raw strace (floor)": strace_argv(find_tracer(), log, command),  # the very same flags
        "netaudit run": [str(BIN / "netaudit"), "run", "--", *command],
    }
    if peer_exe is not None:
        out[f"netaudit {PEER_VERSION} run"] = [str(peer_exe), "run", "--", *command]
    return out


def table(title: str, times: dict[str, list[float]], base: str, peer_key: str | None) -> None:
    print(f"\n{title}")
    print(f"  {'variant':<24} {'median':>9} {'vs untraced':>12} {'vs ' + (peer_key or 'peer'):>22}")
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    for name, median in medians.items():
        vs_base = f"{median / medians[base]:.3f}x"
        vs_peer = f"{median / medians[peer_key]:.3f}x" if peer_key in medians else "-"
        print(f"  {name:<24} {median:>8.3f}s {vs_base:>12} {vs_peer:>22}")


def run_workloads(rounds: int, peer_exe: Path | None, scratch: str) -> None:
    for title, command in WORKLOADS.items():
        runs = variants(command, peer_exe, os.path.join(scratch, "floor.log"))
        times: dict[str, list[float]] = {name: [] for name in runs}
        measure(command)  # warm the page cache
        for _ in range(rounds):
            for name, argv in runs.items():
                times[name].append(measure(argv)[0])
        peer_key = f"netaudit {PEER_VERSION} run" if peer_exe is not None else None
        table(f"{title} ({rounds} rounds, median wall time)", times, "untraced", peer_key)


def trivial_suite(folder: Path, tests: int = 2000) -> Path:
    """A suite of trivial tests, 100 per module, with its own rootdir."""
    folder.mkdir()
    (folder / "pytest.ini").write_text("[pytest]\n")
    for module in range(tests // 100):
        body = "".join(f"def test_{n}():\n    pass\n\n" for n in range(100))
        (folder / f"test_m{module}.py").write_text(body)
    return folder


def run_pytest_suites(rounds: int, scratch: str) -> None:
    """`pytest --netaudit` against plain pytest on the same suite, with and without xdist."""
    suite = trivial_suite(Path(scratch) / "trivial")
    log = os.path.join(scratch, "pytest-floor.log")
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:netaudit"]
    for title, extra in (("2000 trivial tests", []), ("2000 trivial tests, -n 2", ["-n", "2"])):
        runs = {
            "untraced": [*pytest, *extra, str(suite)],
            "raw strace (floor)": strace_argv(find_tracer(), log, [*pytest, *extra, str(suite)]),
            "pytest --netaudit": [*pytest[:-2], "--netaudit", *extra, str(suite)],
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        measure(runs["untraced"])  # warm the page cache
        for _ in range(rounds):
            for name, argv in runs.items():
                times[name].append(measure(argv)[0])
        table(f"pytest: {title} ({rounds} rounds, median wall time)", times, "untraced", None)


def run_analysis(events: int, rounds: int, peer_exe: Path | None, scratch: str) -> None:
    logs: dict[str, tuple[list[str], dict[str, Path | None]]] = {
        "every kind of call, -ttt": ([], {"netaudit analyze": None}),
        "successful connects, -tt (the form 0.6.1 reads)": (
            ["--connect"],
            {"netaudit analyze": None, f"netaudit {PEER_VERSION} analyze": peer_exe},
        ),
    }
    for title, (flags, tools) in logs.items():
        log = os.path.join(scratch, "events.log")
        subprocess.run([PYTHON, str(HERE / "genlog.py"), str(events), log, *flags], check=True)
        size = os.path.getsize(log) / 2**20
        runs = {
            name: [str(exe if exe is not None else BIN / "netaudit"), "analyze", log]
            for name, exe in tools.items()
            if exe is not None or name == "netaudit analyze"
        }
        results: dict[str, list[tuple[float, int]]] = {name: [] for name in runs}
        for _ in range(rounds):
            for name, argv in runs.items():
                results[name].append(measure(argv))
        print(f"\nanalysis of {events:,} events: {title} ({size:.0f} MiB, {rounds} rounds)")
        print(f"  {'variant':<24} {'median':>9} {'peak RSS':>10} {'time vs ours':>13}")
        ours = statistics.median(t for t, _ in results["netaudit analyze"])
        for name, samples in results.items():
            median = statistics.median(t for t, _ in samples)
            rss = max(r for _, r in samples) / 1024
            print(f"  {name:<24} {median:>8.2f}s {rss:>8.0f}MB {median / ours:>12.2f}x")
        os.unlink(log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", choices=("workloads", "pytest", "analysis"), help="run one section only"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--no-peer", action="store_true", help="skip the PyPI netaudit")
    parser.add_argument(
        "--peer-run", action="store_true", help="also time `run` of the PyPI netaudit (slow)"
    )
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    peer_exe = None if args.no_peer else peer()
    print(f"machine: {os.uname().nodename}, {os.cpu_count()} CPUs, Linux {os.uname().release}")
    with tempfile.TemporaryDirectory(prefix="netaudit-bench-") as scratch:
        if args.only in (None, "workloads"):
            run_workloads(args.rounds, peer_exe if args.peer_run else None, scratch)
        if args.only in (None, "pytest"):
            run_pytest_suites(args.rounds, scratch)
        if args.only in (None, "analysis"):
            run_analysis(args.events, max(3, args.rounds // 2), peer_exe, scratch)


if __name__ == "__main__":
    main()
