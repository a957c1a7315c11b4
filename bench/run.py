"""netaudit's benchmark: one command, every variant side by side in one run.

    ./scripts/bench [--only SECTION,...] [--rounds N] [--real-rounds N] [--events N] [--no-peer]
                    [--names] [--compare PYTHON]

Each pytest suite runs as plain ``pytest`` (untraced), under raw ``strace -f --seccomp-bpf``
with netaudit's own trace set (the floor: what tracing itself costs), as ``pytest --netaudit``
(ours), as ``pytest --netaudit --netaudit-block`` (block mode) and as ``pytest --netaudit``
with the PyPI netaudit 0.6.1 (in a scratch venv of its own). The variants alternate within
each round; the tables give medians and ratios, never one time. Every suite runs inside a
private network namespace (``unshare -n``, only ``lo``): nothing any of them does can leave the
machine. Sections:

  synthetic, syscall, threadfork, send   generated suites (bench/suites.py)
  synthetic-n2   the synthetic suite with -n 2 (pytest-xdist; not in the default set)
  scan        a generated suite of 250,000 distinct destinations: the live fold at scale
  urllib3, trio, trio-n2                 real suites from PyPI sdists (bench/real.py)
  latency     from the end of the last test to the report, for a 10,000-event run
  startup     one trivial test: what a session pays once (bench/startup.py), and what
              having netaudit installed but off costs every pytest run
  analysis    ``netaudit analyze`` of 1,000,000 events, few destinations (bench/genlog.py)
              and about 260,000 (bench/genscan.py): time and peak memory
  commands    ``netaudit run`` on plain commands (not in the default set)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PYTHON = str(Path(sys.executable).resolve())
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent))

from bench import netns, real, startup, suites  # noqa: E402
from netaudit.trace import find_tracer, strace_argv  # noqa: E402

PEER_VERSION = "0.6.1"
PEER = f"netaudit {PEER_VERSION}"
OURS = "pytest --netaudit"
BLOCKING = "ours, --netaudit-block"
NAMED = "ours, --netaudit-names"
#: ``pytest --netaudit`` from another venv (--compare): this checkout against an older one.
COMPARED = "compared (--compare)"
UNTRACED = "untraced"
FLOOR = "raw strace (floor)"
GENERATED = {
    "synthetic": "synthetic: 2,000 trivial + 200 loopback TCP tests",
    "syscall": "syscall-heavy: 100 tests x 2,000 stat+read",
    "threadfork": "thread/fork-heavy: 100 tests x (2 threads, fork, subprocess)",
    "send": "send-heavy: 20,000 loopback round trips",
    "scan": "scan: 250,000 UDP connects, each to a destination of its own",
    "synthetic-n2": "synthetic with -n 2 (pytest-xdist)",
}
#: Sections that run another's suite with more arguments.
SAME_SUITE = {"synthetic-n2": ("synthetic", ["-n", "2"])}
REAL = {"urllib3": ("urllib3", []), "trio": ("trio", []), "trio-n2": ("trio", ["-n", "2"])}
DEFAULT = (*(key for key in GENERATED if key not in SAME_SUITE), *REAL, "startup", "latency",
           "analysis")  # fmt: skip
SECTIONS = (*DEFAULT, *SAME_SUITE, "commands")
COMMANDS = {
    "syscall-heavy": [PYTHON, str(HERE / "workloads" / "syscall_heavy.py")],
    "thread/fork-heavy": [PYTHON, str(HERE / "workloads" / "thread_fork_heavy.py")],
}


#: Seconds after which a run is ended, and the status it is then shown with.
TIMEOUT = 600.0
TIMED_OUT = -1000


def _end(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGTERM)
    time.sleep(15)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


#: The highest peak RSS (KiB) each command line reached.
PEAK_RSS: dict[tuple[str, ...], int] = {}


def measure(
    argv: Sequence[str], cwd: str | None = None, env: dict[str, str] | None = None
) -> tuple[float, float, int]:
    """Wall time and CPU time (user + system, the whole tree) in seconds, and the exit status
    of one run (output discarded), in ``env`` if given. CPU time is the steadier figure on a
    busy machine.

    Each run has a session of its own, as strace has under ``pytest --netaudit``. A run that
    takes longer than TIMEOUT is ended (SIGTERM, which pytest --netaudit forwards to its
    traced tree, then SIGKILL to the group) and its status shows as "timeout"."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    timer = threading.Timer(TIMEOUT, _end, (proc.pid,))
    timer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if elapsed >= TIMEOUT:
        proc.returncode = TIMED_OUT
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
    PEAK_RSS[tuple(argv)] = max(PEAK_RSS.get(tuple(argv), 0), usage.ru_maxrss)
    return elapsed, usage.ru_utime + usage.ru_stime, proc.returncode


def pytest_variants(
    python: str,
    peer_python: str | None,
    args: Sequence[str],
    log: str,
    names: bool = False,
    compare: str | None = None,
) -> dict[str, list[str]]:
    plain = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    untraced = [*plain, "-p", "no:netaudit", *args]
    runs = {
        UNTRACED: untraced,
        FLOOR: strace_argv(find_tracer(), log, untraced),  # the very flags netaudit uses
        OURS: [*plain, "--netaudit", *args],
        BLOCKING: [*plain, "--netaudit", "--netaudit-block", *args],
    }
    if names:  # what reading DNS costs (issue 6): recvfrom/recvmsg traced, -yy -x -s 512
        runs[NAMED] = [*plain, "--netaudit", "--netaudit-names", *args]
    if compare is not None:  # before/after in one run, alternated like the rest
        runs[COMPARED] = [compare, *plain[1:], "--netaudit", *args]
    if peer_python is not None:
        runs[PEER] = [peer_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--netaudit",
                      *args]  # fmt: skip
    return runs


def alternate(
    runs: dict[str, list[str]], rounds: int, cwd: str | None = None
) -> dict[str, list[tuple[float, float, int]]]:
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in runs}
    measure(runs[UNTRACED], cwd)  # warm the page cache
    for _ in range(rounds):
        for name, argv in runs.items():
            results[name].append(measure(argv, cwd))
    return results


def table(
    title: str,
    results: dict[str, list[tuple[float, float, int]]],
    runs: dict[str, list[str]] | None = None,
) -> None:
    """Medians and ratios; with ``runs`` (the command lines), the peak RSS of each variant's
    process tree too (the largest process: for ours, the supervisor or the traced pytest)."""
    medians = {name: statistics.median(t for t, _, _ in runs) for name, runs in results.items()}
    cpu = {name: statistics.median(c for _, c, _ in runs) for name, runs in results.items()}
    print(f"\n{title}", flush=True)
    rss = f" {'peak RSS':>9}" if runs else ""
    print(f"  {'variant':<22} {'median':>9} {'vs untraced':>12} {'vs floor':>9} "
          f"{'vs ' + PEER:>17} {'CPU':>8} {'CPU vs untraced':>16} {'exit':>6}{rss}")  # fmt: skip
    for name, median in medians.items():
        cols = [f"{median / medians[base]:.3f}x" if base in medians else "-"
                for base in (UNTRACED, FLOOR, PEER)]  # fmt: skip
        seen = sorted({rc for _, _, rc in results[name]})
        codes = ",".join("timeout" if c == TIMED_OUT else str(c) for c in seen)
        peak = f" {PEAK_RSS[tuple(runs[name])] / 1024:>7.0f}MB" if runs else ""
        print(
            f"  {name:<22} {median:>8.3f}s {cols[0]:>12} {cols[1]:>9} {cols[2]:>17} "
            f"{cpu[name]:>7.2f}s {cpu[name] / cpu[UNTRACED]:>15.3f}x {codes:>6}{peak}"
        )
    sys.stdout.flush()


def run_generated(
    key: str,
    rounds: int,
    peer: str | None,
    scratch: Path,
    names: bool = False,
    compare: str | None = None,
) -> None:
    title = GENERATED[key]
    suite, extra = SAME_SUITE.get(key, (key, []))
    folder = suites.GENERATED[GENERATED[suite]](scratch / key)
    log = str(scratch / "floor.log")
    runs = pytest_variants(sys.executable, peer, [*extra, str(folder)], log, names, compare)
    table(f"{title} ({rounds} rounds)", alternate(runs, rounds, str(folder)), runs)
    shutil.rmtree(folder)


def run_real(key: str, rounds: int, with_peer: bool, scratch: Path, names: bool = False) -> None:
    name, extra = REAL[key]
    suite = real.SUITES[name]
    runs = pytest_variants(
        suite.python("ours"),
        suite.python("peer") if with_peer else None,
        [*extra, *suite.pytest_args("ours")],
        str(scratch / "floor.log"),
        names,
    )
    if with_peer:
        runs[PEER] = [*runs[PEER][: -len(suite.args)], *suite.pytest_args("peer")]
    title = f"real: {suite.sdist} test suite{' ' + ' '.join(extra) if extra else ''}"
    table(f"{title} ({rounds} rounds)", alternate(runs, rounds, str(suite.source)))


def run_latency(rounds: int, peer: str | None, scratch: Path) -> None:
    """From the moment the last test ends to the moment pytest has printed its report and
    exited; the untraced run shows pytest's own share of it."""
    stamp = scratch / "last-test-ended"
    folder = suites.events(scratch / "latency", str(stamp))
    runs = pytest_variants(sys.executable, peer, [str(folder)], str(scratch / "floor.log"))
    delays: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, argv in runs.items():
            stamp.unlink(missing_ok=True)
            measure(argv, str(folder))
            ended = time.time()
            last = float(stamp.read_text()) if stamp.exists() else float("nan")
            delays[name].append(ended - last)
    print(f"\nlatency: end of the last test to the report, 10,000 traced calls ({rounds} rounds)")
    print(f"  {'variant':<22} {'median':>9} {'minus untraced':>15}")
    base = statistics.median(delays[UNTRACED])
    for name, samples in delays.items():
        median = statistics.median(samples)
        print(f"  {name:<22} {median:>8.3f}s {median - base:>14.3f}s")
    sys.stdout.flush()
    shutil.rmtree(folder)


def run_analysis(events: int, rounds: int, peer: Path | None, scratch: Path) -> None:
    alone: dict[str, Path | None] = {"netaudit analyze": BIN / "netaudit"}
    both = {**alone, f"{PEER} analyze": peer}
    logs: dict[str, tuple[str, list[str], dict[str, Path | None]]] = {
        "every kind of call, -ttt": ("genlog.py", [], alone),
        "successful connects, -tt (the form 0.6.1 reads)": ("genlog.py", ["--connect"], both),
        "a scan, ~26% distinct destinations, -ttt": ("genscan.py", [], alone),
        "a scan, successful connects, -tt (the form 0.6.1 reads)": (
            "genscan.py", ["--connect"], both
        ),
    }  # fmt: skip
    for title, (generator, flags, tools) in logs.items():
        log = str(scratch / "events.log")
        subprocess.run([PYTHON, str(HERE / generator), str(events), log, *flags], check=True)
        size = os.path.getsize(log) / 2**20
        runs = {name: [str(exe), "analyze", log] for name, exe in tools.items() if exe}
        results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in runs}
        for _ in range(rounds):
            for name, argv in runs.items():
                results[name].append(measure(argv))
        print(f"\nanalysis of {events:,} events: {title} ({size:.0f} MiB, {rounds} rounds)")
        print(f"  {'variant':<24} {'median':>9} {'CPU':>8} {'peak RSS':>10} {'time vs ours':>13}")
        ours = statistics.median(t for t, _, _ in results["netaudit analyze"])
        for name, samples in results.items():
            median = statistics.median(t for t, _, _ in samples)
            cpu = statistics.median(c for _, c, _ in samples)
            rss = PEAK_RSS[tuple(runs[name])] / 1024
            print(
                f"  {name:<24} {median:>8.2f}s {cpu:>7.2f}s {rss:>8.0f}MB {median / ours:>12.2f}x"
            )
        sys.stdout.flush()
        os.unlink(log)


def run_commands(rounds: int, scratch: Path) -> None:
    for title, command in COMMANDS.items():
        runs = {
            UNTRACED: command,
            FLOOR: strace_argv(find_tracer(), str(scratch / "floor.log"), command),
            "netaudit run": [str(BIN / "netaudit"), "run", "--", *command],
            "netaudit run --block": [str(BIN / "netaudit"), "run", "--block", "--", *command],
        }
        table(f"command: {title} ({rounds} rounds)", alternate(runs, rounds))


def _floor(log: str) -> list[str]:
    """strace's argv before the command, with netaudit's own flags (trace.strace_argv)."""
    argv = strace_argv(find_tracer(), log, ["true"])
    return argv[:-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated sections of {','.join(SECTIONS)}")
    parser.add_argument("--rounds", type=int, default=5, help="rounds for the generated suites")
    parser.add_argument("--real-rounds", type=int, default=3, help="rounds for the real suites")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--no-peer", action="store_true", help="leave out the PyPI netaudit")
    parser.add_argument(
        "--names", action="store_true", help="also pytest --netaudit --netaudit-names (DNS names)"
    )
    parser.add_argument(
        "--compare",
        metavar="PYTHON",
        help="also pytest --netaudit with this interpreter (a venv with pytest, pytest-xdist and "
        "another netaudit): the generated suites and start-up, before and after side by side",
    )
    args = parser.parse_args()
    netns.default_signals()
    chosen = DEFAULT if args.only is None else tuple(args.only.split(","))
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if not netns.inside():  # installs need the network: before the namespace
        if not args.no_peer:
            real.peer_venv()
        for name in {REAL[key][0] for key in chosen if key in REAL}:
            real.ensure(real.SUITES[name], ("ours",) if args.no_peer else ("ours", "peer"))
        if "startup" in chosen:
            startup.ensure()
        print(f"machine: {os.cpu_count()} CPUs, Linux {os.uname().release}, "
              f"Python {sys.version.split()[0]}, strace {find_tracer().version}")  # fmt: skip
        netns.reenter()
    peer_venv = None if args.no_peer else real.CACHE / "peer"
    peer_python = None if peer_venv is None else str(peer_venv / "bin" / "python")
    with tempfile.TemporaryDirectory(prefix="netaudit-bench-") as name:
        scratch = Path(name)
        for key in chosen:
            if key in GENERATED:
                run_generated(key, args.rounds, peer_python, scratch, args.names, args.compare)
            elif key in REAL:
                run_real(key, args.real_rounds, not args.no_peer, scratch, args.names)
            elif key == "startup":
                startup.run(args.rounds, scratch, _floor, measure, args.compare)
            elif key == "latency":
                run_latency(args.rounds, peer_python, scratch)
            elif key == "analysis":
                peer_exe = None if peer_venv is None else peer_venv / "bin" / "netaudit"
                run_analysis(args.events, max(3, args.rounds // 2), peer_exe, scratch)
            elif key == "commands":
                run_commands(args.rounds, scratch)


if __name__ == "__main__":
    main()
