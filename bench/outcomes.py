"""Does auditing change a real suite's outcome? Each suite runs untraced, under
``pytest --netaudit``, and untraced again, and every test's outcome is compared.

    .venv/bin/python bench/outcomes.py [--suite NAME ...]

The suites come from PyPI sdists into scratch venvs (bench/real.py) and run inside a private
network namespace. Outcomes come from ``--junitxml`` (exit statuses differ by design: a
violation turns 0 into 1). A test whose two untraced runs disagree is flaky and is listed
apart; any other difference is netaudit's doing and makes this command exit 1.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import netns, real

#: A run that takes longer than this is stopped; its tests that never ran show as missing.
TIMEOUT = 900.0
_HEADER = re.compile(r"netaudit: (?:[0-9]+ violations? detected|no violations)")


def outcomes(junit: Path) -> dict[str, str]:
    """test id -> passed, failed, error or skipped (xfail counts as skipped, as junit says)."""
    result: dict[str, str] = {}
    if not junit.exists():
        return result
    for case in ET.parse(junit).iter("testcase"):
        key = f"{case.get('classname', '')}::{case.get('name', '')}"
        tags = {child.tag for child in case}
        if "failure" in tags:
            outcome = "failed"
        elif "error" in tags:
            outcome = "error"
        elif "skipped" in tags:
            outcome = "skipped"
        else:
            outcome = "passed"
        # A test that passed and then errored in tear-down is listed twice: keep the worse.
        if result.get(key) not in ("failed", "error"):
            result[key] = outcome
    return result


def run(suite: real.Suite, audited: bool, junit: Path) -> int:
    plugin = ["--netaudit"] if audited else ["-p", "no:netaudit"]
    argv = [suite.python("ours"), "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin,
            f"--junitxml={junit}", *suite.pytest_args("ours")]  # fmt: skip
    with open(junit.with_suffix(".out"), "w") as out:
        proc = subprocess.Popen(argv, cwd=suite.source, stdout=out, stderr=subprocess.STDOUT)
        try:
            return proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            # SIGTERM: pytest --netaudit forwards it and ends the traced tree (a SIGKILL
            # would leave strace and the tree behind).
            print(f"  timed out after {TIMEOUT:.0f} s: stopping it", flush=True)
            proc.terminate()
            try:
                return proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait()


def _report(output: str) -> list[str]:
    """netaudit's block of the session's output: what the suite reached that the built-in
    rules do not allow (its violations do not change any test's outcome)."""
    lines = output.splitlines()
    for start, line in enumerate(lines):
        if _HEADER.search(line):
            end = next((i for i in range(start + 2, len(lines)) if lines[i].startswith("==")), -1)
            return [line for line in lines[start:end] if line.strip() and "===" not in line]
    return [line for line in lines if line.startswith("netaudit:")]


def compare(suite: real.Suite, scratch: Path) -> int:
    """Prints every difference; returns how many are not explained by flakiness."""
    print(f"\n{suite.sdist}: running untraced, audited, untraced", flush=True)
    runs = {}
    for label, audited in (("untraced", False), ("audited", True), ("untraced again", False)):
        junit = scratch / f"{suite.name}-{label.replace(' ', '-')}.xml"
        status = run(suite, audited, junit)
        runs[label] = outcomes(junit)
        counts = Counter(runs[label].values())
        summary = ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "error", "skipped"))
        print(f"  {label:<15} exit {status:>3}: {len(runs[label])} tests: {summary}", flush=True)
        if audited:
            for line in _report(junit.with_suffix(".out").read_text(errors="replace")):
                print(f"    | {line}")
    first, audited_run, again = runs["untraced"], runs["audited"], runs["untraced again"]
    unexplained = 0
    for test in sorted(set(first) | set(audited_run) | set(again)):
        a, b, c = (run.get(test, "missing") for run in (first, audited_run, again))
        if a == b == c:
            continue
        flaky = a != c
        tag = "flaky (the untraced runs disagree)" if flaky else "DIFFERENT under netaudit"
        unexplained += 0 if flaky else 1
        print(f"  {tag}: {test}: untraced {a}, audited {b}, untraced again {c}")
    print(f"  {suite.name}: {unexplained} difference(s) not explained by flakiness")
    return unexplained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="append", choices=sorted(real.SUITES))
    args = parser.parse_args()
    netns.default_signals()
    chosen = [real.SUITES[name] for name in (args.suite or sorted(real.SUITES))]
    if not netns.inside():  # installs need the network: before the namespace
        for suite in chosen:
            real.ensure(suite, ("ours",))
        netns.reenter()
    with tempfile.TemporaryDirectory(prefix="netaudit-outcomes-") as name:
        bad = sum(compare(suite, Path(name)) for suite in chosen)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
