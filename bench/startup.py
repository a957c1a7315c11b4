"""What a session pays once, whatever its tests: one trivial test, as a user's machine runs it.

The variants run from a venv of their own that holds pytest, pytest-xdist and this checkout
(editable), and nothing else, so that other plugins' start-up is not measured; and with
bytecode caching on (``PYTHONDONTWRITEBYTECODE`` unset, the sources compiled first), as on a
developer's machine. Side by side, alternating within each round:

  -p no:netaudit       pytest as if netaudit were not installed
  installed, off       netaudit installed, its plugin loaded, not auditing (+5 ms at most)
  raw strace (floor)   -p no:netaudit under strace with netaudit's own flags
  pytest --netaudit    the start hook's path (the goal: within +0.10 s of -p no:netaudit)
  fallback             the plugin's own start (NETAUDIT_EARLY_START=0), for pytest.main()

With ``--compare PYTHON`` (another venv's netaudit, made alike), its ``installed, off`` and
``pytest --netaudit`` run in the same rounds: before and after side by side.
"""

from __future__ import annotations

import compileall
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import real

VENV = real.CACHE / "startup"
PYTHON = str(VENV / "bin" / "python")
ABSENT = "-p no:netaudit"
OFF = "installed, off"
FLOOR = "raw strace (floor)"
OURS = "pytest --netaudit"
FALLBACK = "fallback"
COMPARED_OFF = "compared: off"
COMPARED = "compared: --netaudit"

#: One run: (argv, extra environment) -> (wall seconds, CPU seconds, exit status).
Measure = Callable[[Sequence[str], str, dict[str, str]], tuple[float, float, int]]


def ensure() -> None:
    """The venv, made once (it needs the package index); re-pointed at this checkout."""
    if (VENV / ".ready").exists():
        if not real.from_this_checkout(VENV):
            real.pip(VENV, "--no-deps", "-e", str(real.REPO))
        return
    print(f"bench: making {VENV}", file=sys.stderr)
    subprocess.run([real.BASE_PYTHON, "-m", "venv", "--clear", str(VENV)], check=True)
    real.pip(VENV, "pytest", "pytest-xdist", "-e", str(real.REPO))
    (VENV / ".ready").touch()


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with bytecode caching on, as a user's machine has it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, **(extra or {})}


def variants(
    floor: Sequence[str], folder: Path, compare: str | None = None
) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each variant's argv and extra environment; ``floor`` is strace's argv before the
    command (trace.strace_argv with netaudit's own flags)."""
    plain = [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)]
    runs = {
        ABSENT: ([*plain, "-p", "no:netaudit"], {}),
        OFF: (plain, {}),
        FLOOR: ([*floor, *plain, "-p", "no:netaudit"], {}),
        OURS: ([*plain, "--netaudit"], {}),
        FALLBACK: ([*plain, "--netaudit"], {"NETAUDIT_EARLY_START": "0"}),
    }
    if compare is not None:
        runs[COMPARED_OFF] = ([compare, *plain[1:]], {})
        runs[COMPARED] = ([compare, *plain[1:], "--netaudit"], {})
    return runs


def run(
    rounds: int,
    scratch: Path,
    floor: Callable[[str], list[str]],
    measure: Measure,
    compare: str | None = None,
) -> None:
    """Every variant in each round, so that the machine's load falls on all alike; the table
    gives each median's difference to ``-p no:netaudit``, the cost a user sees."""
    folder = scratch / "one-test"
    folder.mkdir()
    (folder / "test_one.py").write_text("def test_one():\n    pass\n")
    compileall.compile_dir(str(real.REPO / "src"), quiet=1)
    runs = variants(floor(str(scratch / "floor.log")), folder, compare)
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    codes: dict[str, set[int]] = {name: set() for name in runs}
    for argv, extra in runs.values():  # warm the page cache and the bytecode caches
        measure(argv, str(folder), environment(extra))
    for _ in range(rounds):
        for name, (argv, extra) in runs.items():
            elapsed, used, code = measure(argv, str(folder), environment(extra))
            wall[name].append(elapsed)
            cpu[name].append(used)
            codes[name].add(code)
    base_wall, base_cpu = statistics.median(wall[ABSENT]), statistics.median(cpu[ABSENT])
    print(f"\nstart-up: one trivial test, pytest and netaudit only ({rounds} rounds)")
    print(f"  {'variant':<20} {'median':>9} {'vs ' + ABSENT:>18} {'CPU':>8}"
          f" {'CPU vs ' + ABSENT:>19} {'exit':>6}")  # fmt: skip
    for name in runs:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        exits = ",".join(str(code) for code in sorted(codes[name]))
        print(f"  {name:<20} {w:>8.3f}s {w - base_wall:>+17.3f}s {c:>7.3f}s {c - base_cpu:>+18.3f}s"
              f" {exits:>6}")  # fmt: skip
    sys.stdout.flush()
