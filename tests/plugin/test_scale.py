"""pytest --netaudit with hostile names and at scale: strange test ids (unicode, spaces,
brackets, tabs, 2,000 characters, ids that look like netaudit's own markers), 20,000 tests,
and 500 processes alive at once. Each call must be reported under exactly its own test.

Every suite runs in a process of its own, in the private network namespace; the calls are
UDP ``connect()``s to documentation addresses, which send nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from netaudit.trace import Tracer
from tests.plugin.test_tracing import UDP
from tests.runner import pytest_run

pytestmark = pytest.mark.strace

STRANGE_IDS = [
    "plain",
    "ünïcødé-名前-😀",
    "with spaces  and\ttabs",
    "[brackets]]and[[more",
    "a::b::c",
    "x" * 2000,
    "netaudit:0123456789abcdef:b:1",
    "@netaudit:0123456789abcdef:e",
    "line\nbreak",
    "quote\"and'apostrophe\\backslash",
    "",
]


def report_of(path: Path) -> list[tuple[str, str]]:
    """(test, destination) of each violation in a JSON report."""
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return sorted((d["test"], d["display"]) for d in document["violations"])


@pytest.mark.parametrize("escaping", ["escaped", "raw"])
def test_strange_test_ids_are_reported_exactly(
    pytester: pytest.Pytester, tracer: Tracer, escaping: str
) -> None:
    """pytest escapes non-ASCII ids unless told not to (then tabs and newlines stay raw too):
    either way each call is reported under the very nodeid pytest gave its test."""
    if escaping == "raw":
        pytester.makeini(
            "[pytest]\n"
            "disable_test_id_escaping_and_forfeit_all_rights_to_community_support = true\n"
        )
    pytester.makepyfile(
        test_strange=UDP
        + f"""
import json
import pytest

IDS = {STRANGE_IDS!r}

@pytest.mark.parametrize("n", range(len(IDS)), ids=IDS)
def test_id(n, request):
    udp(f"192.0.2.{{100 + n}}")
    with open("nodeids.jsonl", "a", encoding="utf-8") as out:
        out.write(json.dumps([request.node.nodeid, f"192.0.2.{{100 + n}}:53"]) + "\\n")
"""
    )
    result = pytest_run("--netaudit", "--netaudit-report=r.json", cwd=pytester.path)
    assert result.ret == 1, result.outlines + result.errlines
    result.stdout.fnmatch_lines([f"*{len(STRANGE_IDS)} passed*"])
    lines = (pytester.path / "nodeids.jsonl").read_text(encoding="utf-8").splitlines()
    expected = sorted(tuple(json.loads(line)) for line in lines)
    assert len({test for test, _ in expected}) == len(STRANGE_IDS)
    assert report_of(pytester.path / "r.json") == expected


@pytest.mark.slow
def test_twenty_thousand_tests_each_call_under_its_own_test(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    pytester.makepyfile(
        test_many=UDP
        + """
import pytest

@pytest.mark.parametrize("n", range(20000))
def test_n(n):
    if n in (0, 12345, 19999):
        udp(f"192.0.2.{n % 200 + 1}")
"""
    )
    result = pytest_run("--netaudit", "--netaudit-report=r.json", "-q", cwd=pytester.path)
    assert result.ret == 1, result.outlines[-30:] + result.errlines
    result.stdout.fnmatch_lines(["*20000 passed*"])
    assert report_of(pytester.path / "r.json") == [
        ("test_many.py::test_n[0]", "192.0.2.1:53"),
        ("test_many.py::test_n[12345]", "192.0.2.146:53"),
        ("test_many.py::test_n[19999]", "192.0.2.200:53"),
    ]


def test_five_hundred_processes_alive_at_once_are_each_reported(
    pytester: pytest.Pytester, tracer: Tracer
) -> None:
    pytester.makepyfile(
        test_forks=UDP
        + """
import os

def test_forks_500():
    read, write = os.pipe()
    children = []
    for n in range(500):
        pid = os.fork()
        if pid == 0:
            os.close(write)
            udp("192.0.2.210", 10000 + n)
            os.read(read, 1)  # every child stays until all 500 have called
            os._exit(0)
        children.append(pid)
    os.close(write)
    for pid in children:
        assert os.waitpid(pid, 0)[1] == 0

def test_after():
    udp("192.0.2.211")
"""
    )
    result = pytest_run("--netaudit", "--netaudit-report=r.json", cwd=pytester.path)
    assert result.ret == 1, result.outlines[-30:] + result.errlines
    document: dict[str, Any] = json.loads((pytester.path / "r.json").read_text())
    violations = document["violations"]
    forked = [d for d in violations if d["address"] == "192.0.2.210"]
    assert sorted(d["port"] for d in forked) == list(range(10000, 10500))
    assert {d["test"] for d in forked} == {"test_forks.py::test_forks_500"}
    assert len({pid for d in forked for pid in d["pids"]}) == 500
    assert [(d["test"], d["display"]) for d in violations if d not in forked] == [
        ("test_forks.py::test_after", "192.0.2.211:53")
    ]
