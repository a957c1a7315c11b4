"""What ``pytest --netaudit`` shows and returns: the violations block, the verbose table, the
summary by destination, suggested rules, colours, the JSON report and the exit status."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.runner import pytest_run

pytestmark = pytest.mark.strace

BAR = "=" * 60
#: The program the session runs as, as the report names it: the basename of what was exec'd.
PY = Path(sys.executable).name
SUMMARY = "  netaudit: destinations and the tests that reached them"

#: Every "external" call below is a UDP connect() to a documentation address: no packet is sent.
REACH = """
import socket

def reach(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect_ex((host, port))
"""

#: A conftest.py that reaches out when it is imported: outside any test.
CONFTEST = """
import socket

with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
    s.connect_ex(("2001:db8::5", 443))
"""

#: Passing tests: a module-scoped fixture, two tests sharing a destination, one of them also
#: on loopback, and one whose child process (named "fetcher") reaches out.
SUITE = (
    REACH
    + """
import subprocess
from pathlib import Path

import pytest

CHILD = "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect_ex(%r)" % (
    ("203.0.113.9", 443),
)

@pytest.fixture(scope="module")
def shared():
    reach("198.51.100.7", 123)

def test_one(shared):
    reach("192.0.2.10", 53)

def test_two():
    reach("192.0.2.10", 53)
    reach("127.0.0.1", 9)

def test_child():
    fetcher = Path(__file__).with_name("fetcher")  # this Python, under another name
    subprocess.run([str(fetcher), "-c", CHILD], check=True)
"""
)


def line_of(path: Path, text: str) -> int:
    """The 1-based line of ``path`` that starts with ``text``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, start=1) if line.startswith(text))


def framed(lines: list[str], title: str) -> list[str]:
    """A block as the report frames it: BAR, ``title``, BAR, the body, and its closing BAR."""
    start = lines.index(title) - 1
    assert lines[start] == BAR and lines[start + 2] == BAR, lines[start : start + 3]
    stop = lines.index(BAR, start + 3)
    return lines[start : stop + 1]


def pids_of(lines: list[str]) -> tuple[list[str], list[int]]:
    """The lines with each ``pids=[N]`` made ``pids=[PID]``, and the pids taken out."""
    pids = [int(pid) for line in lines for pid in re.findall(r"pids=\[(\d+)\]", line)]
    return [re.sub(r"pids=\[\d+\]", "pids=[PID]", line) for line in lines], pids


def output(result: pytest.RunResult) -> str:
    return "\n".join(result.outlines + result.errlines)


@dataclass(frozen=True)
class Run:
    """The whole suite run once, verbose, with suggestions and a JSON report."""

    root: Path
    result: pytest.RunResult

    def where(self, test: str) -> str:
        return f"test_suite.py:{line_of(self.root / 'test_suite.py', f'def {test}(')}"

    def site(self, test: str, nth: int = 1) -> str:
        """Where in the code: the test's ``nth`` line, then the helper that connects."""
        source = self.root / "test_suite.py"
        line = line_of(source, f"def {test}(") + nth
        return f"test_suite.py:{line} in {test} > {self.reach()}"

    def reach(self) -> str:
        line = line_of(self.root / "test_suite.py", "        s.connect_ex(")
        return f"test_suite.py:{line} in reach"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("suite")
    (root / "test_suite.py").write_text(SUITE, encoding="utf-8")
    (root / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    (root / "fetcher").symlink_to(sys.executable)
    result = pytest_run(
        "--netaudit",
        "--netaudit-verbose",
        "--netaudit-suggest-rules",
        "--netaudit-report",
        "report.json",
        cwd=root,
    )
    return Run(root, result)


# -- the shapes of the report --------------------------------------------------------------


def test_violations_are_a_passing_session_failed(run: Run) -> None:
    assert run.result.ret == 1, output(run.result)
    run.result.stdout.fnmatch_lines(["=* 3 passed, 5 netaudit violations in * =*"])


def test_the_violations_block_is_grouped_by_test_with_evidence(run: Run) -> None:
    lines, pids = pids_of(framed(run.result.outlines, "  netaudit: 5 violations detected"))
    assert lines == [
        BAR,
        "  netaudit: 5 violations detected",
        BAR,
        "",
        "  [<session>]",  # explained in the verbose table above, once
        "    AF_INET6 [2001:db8::5]:443 (count=1, pids=[PID])",
        f"      by {PY}: connect -> network unreachable",
        "    AF_INET 198.51.100.7:123 (count=1, pids=[PID])",
        f"      by {PY}: connect -> network unreachable",
        f"      at {run.reach()}",  # a module fixture: no test frame
        "",
        "  [test_suite.py::test_one]",  # its at line names the test's own line
        "    AF_INET 192.0.2.10:53 (count=1, pids=[PID])",
        f"      by {PY}: connect -> network unreachable",
        f"      at {run.site('test_one')}",
        "",
        "  [test_suite.py::test_two]",
        "    AF_INET 192.0.2.10:53 (count=1, pids=[PID])",
        f"      by {PY}: connect -> network unreachable",
        f"      at {run.site('test_two')}",
        "",
        "  [test_suite.py::test_child]",
        f"    defined at {run.where('test_child')}",  # a subprocess: no at line
        "    AF_INET 203.0.113.9:443 (count=1, pids=[PID])",
        "      by fetcher: connect -> network unreachable",
        BAR,
    ], output(run.result)
    session = pids[0]
    assert pids[:4] == [session] * 4, "the session and its tests run in one process"
    assert pids[4] != session, "the child process has a pid of its own"


def test_the_verbose_table_names_the_rule_of_each_allowed_call(run: Run) -> None:
    title = "  netaudit: verbose network event report"
    table = framed(run.result.outlines, title)
    head = "FAMILY       ADDR:PORT                      STATUS     RULE"
    rule = "------------ ------------------------------ ---------- ------------------------"
    assert table == [
        BAR,
        title,
        BAR,
        "",
        "  [<session>]",
        "    (outside any test: conftest.py imports, collection, fixtures wider than a test)",
        head,
        rule,
        "AF_INET6     [2001:db8::5]:443             VIOLATION  -",
        "AF_INET      198.51.100.7:123              VIOLATION  -",
        f"             at {run.reach()}",
        "",
        "  [test_suite.py::test_one]",
        head,
        rule,
        "AF_INET      192.0.2.10:53                 VIOLATION  -",
        f"             at {run.site('test_one')}",
        "",
        "  [test_suite.py::test_two]",
        head,
        rule,
        "AF_INET      192.0.2.10:53                 VIOLATION  -",
        f"             at {run.site('test_two')}",
        "AF_INET      127.0.0.1:9                   OK         loopback (IPv4)",
        f"             at {run.site('test_two', 2)}",
        "",
        "  [test_suite.py::test_child]",
        f"    defined at {run.where('test_child')}",
        head,
        rule,
        "AF_INET      203.0.113.9:443               VIOLATION  -",
        BAR,
    ], output(run.result)


def test_the_summary_names_the_tests_that_reached_each_destination(run: Run) -> None:
    lines = run.result.outlines
    start = lines.index(SUMMARY)
    assert lines[start + 1 : start + 6] == [
        "    AF_INET6 [2001:db8::5]:443 VIOLATION: 1 test: <session>",
        "    AF_INET 198.51.100.7:123 VIOLATION: 1 test: <session>",
        "    AF_INET 192.0.2.10:53 VIOLATION: 2 tests: "
        "test_suite.py::test_one, test_suite.py::test_two",
        "    AF_INET 127.0.0.1:9 OK: 1 test: test_suite.py::test_two",
        "    AF_INET 203.0.113.9:443 VIOLATION: 1 test: test_suite.py::test_child",
    ], output(run.result)


def suggestions(result: pytest.RunResult) -> str:
    lines = result.outlines
    start = lines.index("netaudit: rules that would allow the violations above:") + 1
    stop = next(n for n in range(start, len(lines)) if re.fullmatch(r"=+ .* =+", lines[n]))
    return "\n".join(lines[start:stop]) + "\n"


def test_suggested_rules_are_one_per_destination(run: Run) -> None:
    text = suggestions(run.result)
    names = [line for line in text.splitlines() if line.startswith("- name: ")]
    assert len(names) == 4, text  # 192.0.2.10:53 once, though two tests reached it
    assert sum("192.0.2.10:53" in name for name in names) == 1, text
    assert "127.0.0.1" not in text  # allowed already


def test_suggested_rules_saved_as_the_allowlist_make_the_session_pass(run: Run) -> None:
    (run.root / "suggested.yaml").write_text(suggestions(run.result), encoding="utf-8")
    again = pytest_run("--netaudit", "--netaudit-allowlist", "suggested.yaml", cwd=run.root)
    assert again.ret == 0, output(again)
    again.stdout.fnmatch_lines(["netaudit: no violations (6 destinations checked, *)"])


# -- the JSON report -----------------------------------------------------------------------


def test_the_json_report_attributes_each_destination_to_its_test(run: Run) -> None:
    report: dict[str, Any] = json.loads((run.root / "report.json").read_text(encoding="utf-8"))
    assert report["schema"] == "netaudit.report"
    assert report["run"]["exit_status"] == 1
    assert report["summary"]["clean"] is False
    assert report["summary"]["violations"] == 5
    seen = [
        (d["test"], d["location"], d["display"], d["verdict"], d["programs"])
        for d in report["destinations"]
    ]
    assert seen == [
        ("<session>", None, "[2001:db8::5]:443", "violation", [PY]),
        ("<session>", None, "198.51.100.7:123", "violation", [PY]),
        ("test_suite.py::test_one", run.where("test_one"), "192.0.2.10:53", "violation",
         [PY]),
        ("test_suite.py::test_two", run.where("test_two"), "192.0.2.10:53", "violation",
         [PY]),
        ("test_suite.py::test_two", run.where("test_two"), "127.0.0.1:9", "allowed", [PY]),
        ("test_suite.py::test_child", run.where("test_child"), "203.0.113.9:443", "violation",
         ["fetcher"]),
    ]  # fmt: skip
    assert len(report["violations"]) == 5


CLEAN = (
    REACH
    + """
def test_loopback():
    reach("127.0.0.1", 9)
"""
)


def test_a_clean_session_passes_and_still_writes_the_json_report(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_clean=CLEAN)
    result = pytest_run("--netaudit", "--netaudit-report", "report.json", cwd=pytester.path)
    assert result.ret == 0, output(result)
    result.stdout.fnmatch_lines(["netaudit: no violations (1 destination checked, *)"])
    # Without --netaudit-verbose the summary by destination lists violations only: none here.
    assert SUMMARY not in result.outlines, output(result)
    report: dict[str, Any] = json.loads((pytester.path / "report.json").read_text())
    assert report["schema"] == "netaudit.report"
    assert report["summary"]["clean"] is True
    assert report["run"]["exit_status"] == 0
    [destination] = report["destinations"]
    assert destination["test"] == "test_clean.py::test_loopback"
    assert destination["rule"] == "loopback (IPv4)"
    assert report["violations"] == []


def test_a_clean_report_counts_the_calls_it_checked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_clean=CLEAN)
    result = pytest_run("--netaudit", "--netaudit-report", "report.json", cwd=pytester.path)
    assert result.ret == 0, output(result)
    summary = json.loads((pytester.path / "report.json").read_text())["summary"]
    assert summary["calls"] >= 1, summary
    assert summary["lines"] >= 1, summary
    result.stdout.fnmatch_lines(["netaudit: no violations (1 destination checked, [1-9]* call*)"])


# -- colours ---------------------------------------------------------------------------------

ONE_VIOLATION = (
    REACH
    + """
def test_reaches_out():
    reach("192.0.2.10", 53)
"""
)


@pytest.mark.parametrize(
    ("args", "env", "coloured"),
    [
        (["--color=yes"], {}, True),
        (["--color=no"], {"FORCE_COLOR": "1"}, False),
        ([], {"NO_COLOR": "1", "FORCE_COLOR": "1"}, False),
        ([], {"FORCE_COLOR": "1"}, True),  # what NO_COLOR is checked against
    ],
    ids=["color-yes", "color-no", "NO_COLOR", "FORCE_COLOR"],
)
def test_the_headline_is_coloured_only_when_pytest_colours(
    pytester: pytest.Pytester, args: list[str], env: Mapping[str, str], coloured: bool
) -> None:
    pytester.makepyfile(test_egress=ONE_VIOLATION)
    base = {k: v for k, v in os.environ.items() if k not in ("PY_COLORS", "NO_COLOR")}
    result = pytest_run("--netaudit", *args, cwd=pytester.path, env={**base, **env})
    assert result.ret == 1, output(result)
    [headline] = [line for line in result.outlines if "netaudit: 1 violation detected" in line]
    [last] = [line for line in result.outlines if "1 netaudit violation" in line]
    if coloured:
        assert headline.startswith("\x1b[31m"), repr(headline)  # red
        assert "\x1b[1m" in headline, repr(headline)  # bold
        assert last.startswith("\x1b[31m"), repr(last)  # pytest's last line: red
        assert "\x1b[31m\x1b[1m1 netaudit violation" in last, repr(last)
    else:
        assert headline == "  netaudit: 1 violation detected"
        assert not any("\x1b[" in line for line in result.outlines), output(result)


# -- exit statuses -------------------------------------------------------------------------


def test_a_failing_test_with_violations_stays_failed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_fail=REACH
        + """
def test_fails():
    reach("192.0.2.10", 53)
    reach("127.0.0.1", 9)
    assert False

def test_not_run_after_x():
    open("second-ran", "w").close()
"""
    )
    result = pytest_run("--netaudit", "-x", cwd=pytester.path)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output(result)
    result.stdout.fnmatch_lines(
        ["  netaudit: 1 violation detected", "  [[]test_fail.py::test_fails]", "*1 failed*"]
    )
    assert not (pytester.path / "second-ran").exists(), output(result)
    # Not verbose: each violation is shown once; one test reached it, so no summary adds to it.
    assert SUMMARY not in result.outlines, output(result)
    result.stdout.fnmatch_lines(["=* 1 failed, 1 netaudit violation in * =*"])


def test_no_tests_collected_with_a_violation_from_conftest_fails(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(CONFTEST)
    result = pytest_run("--netaudit", cwd=pytester.path)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output(result)
    result.stdout.fnmatch_lines(
        [
            "  netaudit: 1 violation detected",
            "  [[]<session>]",
            "    (outside any test: *)",
            "    AF_INET6 [[]2001:db8::5]:443 (count=1, pids=[[]*])",
            "*no tests ran, 1 netaudit violation in*",
        ]
    )


def test_an_interrupted_session_stays_interrupted(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_interrupt=REACH
        + """
def test_interrupted():
    reach("192.0.2.10", 53)
    raise KeyboardInterrupt
"""
    )
    result = pytest_run("--netaudit", cwd=pytester.path)
    assert result.ret == pytest.ExitCode.INTERRUPTED, output(result)
    result.stdout.fnmatch_lines(["  netaudit: 1 violation detected", "*KeyboardInterrupt*"])


URING = """
import ctypes
import os

def test_sets_up_an_io_uring():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
    fd = libc.syscall(425, 8, params)  # io_uring_setup(8 entries, &params)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    os.close(fd)
"""


def test_an_incomplete_audit_fails_a_passing_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_uring=URING)
    result = pytest_run("--netaudit", "--netaudit-io-uring=report", cwd=pytester.path)
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR, output(result)
    result.stdout.fnmatch_lines(
        [
            f"netaudit: audit incomplete: io_uring used by pid [0-9]* ({PY}) in 1 test "
            "(test_uring.py::test_sets_up_an_io_uring): *",
            "*1 passed, netaudit audit incomplete in*",
        ]
    )


def test_io_uring_is_denied_by_default_and_the_audit_stays_complete(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_uring=URING.replace(
            "assert fd >= 0",
            "assert fd < 0 and ctypes.get_errno() == 38",  # ENOSYS
        ).replace("    os.close(fd)\n", "")
    )
    result = pytest_run("--netaudit", cwd=pytester.path)
    assert result.ret == pytest.ExitCode.OK, output(result)
    result.stdout.no_fnmatch_line("*audit incomplete*")


def test_pytests_last_line_counts_the_violations_under_q_too(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_egress=ONE_VIOLATION)
    result = pytest_run("--netaudit", "-q", cwd=pytester.path)
    assert result.ret == 1, output(result)
    assert result.outlines[-1].startswith("1 passed, 1 netaudit violation in "), output(result)
