"""Per-test policy end to end (markers on functions, classes and modules; rules scoped to
tests; with and without xdist), and the places CI looks: JUnit XML and GitHub Actions."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.runner import pytest_run

pytestmark = pytest.mark.strace

#: Every "external" call is a UDP connect() to a documentation address: no packet is sent.
SUITE = """
import socket

import pytest

pytestmark = pytest.mark.netaudit(allow=["198.51.100.1:53"])


def reach(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect_ex((host, port))


@pytest.mark.netaudit(allow=["192.0.2.10:53", {"name": "v6 api", "family": "AF_INET6",
                                               "cidr": "2001:db8::/32", "port": 443}])
def test_function_marker():
    reach("192.0.2.10", 53)
    reach("2001:db8::7", 443)
    reach("198.51.100.1", 53)


def test_module_marker_only():
    reach("198.51.100.1", 53)
    reach("192.0.2.10", 53)


@pytest.mark.netaudit(strict=True)
def test_strict():
    reach("127.0.0.1", 9)


class TestClass:
    pytestmark = pytest.mark.netaudit(allow=["203.0.113.0/24"])

    def test_class_marker(self):
        reach("203.0.113.5", 1)
        reach("127.0.0.1", 9)


def test_scoped_rule_applies():
    reach("192.0.2.99", 53)


def test_unscoped_here():
    reach("192.0.2.98", 53)
"""

ALLOWLIST = """\
version: 1
allowlist:
  - name: scoped
    family: AF_INET
    cidr: 192.0.2.96/30
    tests: ["*::test_scoped_*"]
"""

MARKER = "(marker on test_policy_suite.py::{})"

#: (test, destination) -> (verdict, rule, allowed_by), as the JSON report must say.
EXPECTED = {
    ("test_function_marker", "192.0.2.10:53"): (
        "allowed",
        "AF_INET 192.0.2.10:53 " + MARKER.format("test_function_marker"),
        "marker",
    ),
    ("test_function_marker", "[2001:db8::7]:443"): (
        "allowed",
        "v6 api " + MARKER.format("test_function_marker"),
        "marker",
    ),
    ("test_function_marker", "198.51.100.1:53"): (
        "allowed",
        "AF_INET 198.51.100.1:53 " + MARKER.format("test_function_marker"),
        "marker",
    ),
    ("test_module_marker_only", "198.51.100.1:53"): (
        "allowed",
        "AF_INET 198.51.100.1:53 " + MARKER.format("test_module_marker_only"),
        "marker",
    ),
    ("test_module_marker_only", "192.0.2.10:53"): ("violation", None, None),
    ("test_strict", "127.0.0.1:9"): ("violation", None, None),
    ("TestClass::test_class_marker", "203.0.113.5:1"): (
        "allowed",
        "AF_INET 203.0.113.0/24 " + MARKER.format("TestClass::test_class_marker"),
        "marker",
    ),
    ("TestClass::test_class_marker", "127.0.0.1:9"): ("allowed", "loopback (IPv4)", "builtin"),
    ("test_scoped_rule_applies", "192.0.2.99:53"): ("allowed", "scoped", "allowlist"),
    ("test_unscoped_here", "192.0.2.98:53"): ("violation", None, None),
}
VIOLATED = ["test_module_marker_only", "test_strict", "test_unscoped_here"]


def write_suite(root: Path) -> None:
    (root / "test_policy_suite.py").write_text(SUITE, encoding="utf-8")
    (root / "netaudit.yaml").write_text(ALLOWLIST, encoding="utf-8")


def verdicts(report_path: Path) -> dict[tuple[str, str], tuple[str, str | None, str | None]]:
    report: dict[str, Any] = json.loads(report_path.read_text(encoding="utf-8"))
    prefix = "test_policy_suite.py::"
    return {
        (d["test"][len(prefix) :], d["display"]): (d["verdict"], d["rule"], d["allowed_by"])
        for d in report["destinations"]
        if d["test"].startswith(prefix)
    }


def output(result: pytest.RunResult) -> str:
    return "\n".join(result.outlines + result.errlines)


SCOPED = """\
version: 1
allowlist:
  - name: the sub folder's
    family: AF_INET
    addr: 192.0.2.40
    tests: ["tests/sub/", "tests/test_p.py::test_p[53]"]
  - name: mistyped
    family: AF_INET
    addr: 192.0.2.41
    tests: "tests/sbu/"
"""

PARAMETRIZED = """
import socket

import pytest


@pytest.mark.parametrize("port", [53, 5])
def test_p(port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect_ex(("192.0.2.40", port))
"""


def test_scopes_name_folders_and_copied_nodeids_and_one_matching_nothing_is_reported(
    pytester: pytest.Pytester,
) -> None:
    root = pytester.path
    (root / "netaudit.yaml").write_text(SCOPED, encoding="utf-8")
    (root / "tests" / "sub").mkdir(parents=True)
    (root / "tests" / "sub" / "test_deep.py").write_text(
        PARAMETRIZED.replace("[53, 5]", "[1]"), encoding="utf-8"
    )
    (root / "tests" / "test_p.py").write_text(PARAMETRIZED, encoding="utf-8")
    result = pytest_run("--netaudit", "--netaudit-report=r.json", cwd=root)
    assert result.ret == 1, output(result)
    report: dict[str, Any] = json.loads((root / "r.json").read_text(encoding="utf-8"))
    seen = {(d["test"], d["verdict"]) for d in report["destinations"]}
    assert seen == {
        ("tests/sub/test_deep.py::test_p[1]", "allowed"),  # the folder's scope
        ("tests/test_p.py::test_p[53]", "allowed"),  # the copied nodeid, brackets and all
        ("tests/test_p.py::test_p[5]", "violation"),
    }
    result.stdout.fnmatch_lines(
        [
            f"netaudit: warning: {root / 'netaudit.yaml'}:7: tests: 'tests/sbu/' of rule "
            "'mistyped' matched none of the 3 tests this run ran (nor <session>)"
        ]
    )


@pytest.mark.parametrize("workers", [None, "2"])
def test_markers_and_scoped_rules_allow_for_their_own_tests(
    pytester: pytest.Pytester, workers: str | None
) -> None:
    write_suite(pytester.path)
    xdist = ["-n", workers] if workers else []
    result = pytest_run(
        "--netaudit",
        "--netaudit-verbose",
        "--strict-markers",
        "--netaudit-report=report.json",
        *xdist,
        cwd=pytester.path,
    )
    assert result.ret == 1, output(result)
    result.stdout.fnmatch_lines(["*6 passed*"])
    assert verdicts(pytester.path / "report.json") == EXPECTED
    # The verbose table names the marker that allowed a call.
    result.stdout.fnmatch_lines(
        [
            "  [[]test_policy_suite.py::TestClass::test_class_marker[]]",
            "FAMILY*",
            "---*",
            "AF_INET      203.0.113.5:1 * OK         AF_INET 203.0.113.0/24 (marker on "
            "test_policy_suite.py::TestClass::test_class_marker)",
        ]
    )
    result.stdout.fnmatch_lines(["  netaudit: 3 violations detected"])


BAD_MARKER = """
import pytest

def test_fine():
    pass

@pytest.mark.netaudit(allow=["10.0.0.5:99999"])
def test_bad():
    pass
"""
#: The line is the test's as pytest reports it: its first decorator's (makepyfile drops the
#: leading blank line).
BAD_MESSAGE = (
    "*netaudit: test_bad_marker.py:6: the netaudit marker's allow: port 99999 is out of range "
    "0-65535 in entry #1 (in test_bad_marker.py::test_bad); to run the tests without the "
    "audit, pass --no-netaudit"
)


def test_a_bad_marker_is_a_usage_error_at_the_tests_line_before_any_test_runs(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_bad_marker=BAD_MARKER)
    result = pytest_run("--netaudit", cwd=pytester.path)
    assert result.ret == 4, output(result)
    result.stderr.fnmatch_lines(["ERROR: " + BAD_MESSAGE[1:]])
    assert not any("passed" in line for line in result.outlines), output(result)


def test_under_xdist_a_bad_marker_is_a_collection_error_at_the_tests_line(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_bad_marker=BAD_MARKER)
    result = pytest_run("--netaudit", "-n", "2", cwd=pytester.path)
    assert result.ret not in (0, 3), output(result)
    result.stdout.fnmatch_lines(["*ERROR collecting test_bad_marker.py*", BAD_MESSAGE])
    assert "INTERNALERROR" not in output(result)
    assert not any(" passed" in line for line in result.outlines), output(result)


def test_the_marker_is_registered_for_strict_markers_with_or_without_auditing(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_marked="import pytest\n\n@pytest.mark.netaudit(strict=True)\ndef test_x():\n    pass\n"
    )
    result = pytest_run("--strict-markers", cwd=pytester.path)
    assert result.ret == 0, output(result)
    result = pytest_run("--markers", cwd=pytester.path)
    result.stdout.fnmatch_lines(["@pytest.mark.netaudit(allow=[[]...[]], strict=False): *"])


# -- JUnit XML ------------------------------------------------------------------------------------


def cases(path: Path) -> dict[str, ET.Element]:
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    return {case.get("name", ""): case for case in suite.iter("testcase")}


def junit_properties(case: ET.Element) -> list[str]:
    return [
        p.get("value", "") for p in case.iter("property") if p.get("name") == "netaudit_violation"
    ]


@pytest.mark.parametrize(
    ("how", "failures"),
    [
        ([], False),
        (["--netaudit-junit-failures"], True),
        (["-n", "2", "--netaudit-junit-failures"], True),
        (["pyproject"], True),
    ],
    ids=["properties-only", "failures", "failures-xdist", "failures-from-pyproject"],
)
def test_junitxml_records_violations_on_their_test_cases(
    pytester: pytest.Pytester, how: list[str], failures: bool
) -> None:
    write_suite(pytester.path)
    if how == ["pyproject"]:
        (pytester.path / "pyproject.toml").write_text("[tool.netaudit]\njunit_failures = true\n")
        how = []
    result = pytest_run("--netaudit", "--junitxml=junit.xml", *how, cwd=pytester.path)
    assert result.ret == 1, output(result)
    # With failures, the test itself fails: the terminal and the file agree.
    result.stdout.re_match_lines([r".*3 failed, 3 passed.*" if failures else r".*6 passed.*"])
    found = cases(pytester.path / "junit.xml")
    for name, case in found.items():
        values = junit_properties(case)
        failed = case.findall("failure")
        if name in VIOLATED:
            (value,) = values
            assert value.startswith("AF_INET ") and "; by python: connect -> " in value, value
            messages = [f.get("message", "") for f in failed]
            assert len(messages) == failures, messages
            assert all(
                m.startswith("netaudit: 1 destination not allowed\n  AF_INET ") for m in messages
            )
        else:
            assert (values, failed) == ([], []), name
    suite = ET.parse(pytester.path / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("6", "3" if failures else "0")


def test_junitxml_does_not_add_a_second_failure_to_a_failed_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_fails="""
import socket

def test_fails_and_reaches_out():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect_ex(("192.0.2.1", 53))
    assert False
"""
    )
    result = pytest_run(
        "--netaudit", "--junitxml=junit.xml", "--netaudit-junit-failures", cwd=pytester.path
    )
    assert result.ret == 1, output(result)
    (case,) = cases(pytester.path / "junit.xml").values()
    assert len(case.findall("failure")) == 1
    assert len(junit_properties(case)) == 1


# -- GitHub Actions -------------------------------------------------------------------------------


def test_under_github_actions_violations_are_annotations_and_a_step_summary(
    pytester: pytest.Pytester,
) -> None:
    write_suite(pytester.path)
    summary = pytester.path / "summary.md"
    env = {
        **os.environ,
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_WORKSPACE": str(pytester.path.parent),
    }
    result = pytest_run("--netaudit", cwd=pytester.path, env=env)
    assert result.ret == 1, output(result)
    source = (pytester.path / "test_policy_suite.py").read_text().splitlines()
    # pytest's location of a decorated test is its first decorator's line.
    strict = next(n for n, line in enumerate(source, 1) if line.startswith("def test_strict")) - 1
    relative = f"{pytester.path.name}/test_policy_suite.py"
    annotations = [line for line in result.outlines if line.startswith("::error")]
    assert len(annotations) == 3, output(result)
    assert (
        f"::error file={relative},line={strict},title=netaudit%3A AF_INET 127.0.0.1%3A9 is not "
        "allowed::[test_policy_suite.py::test_strict] AF_INET 127.0.0.1:9 (count=1, pids=["
    ) in "\n".join(annotations)
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("### netaudit: 3 violations\n"), text
    assert f"| `test_policy_suite.py::test_strict` ({relative}:{strict}) |" in text


def test_outside_github_actions_there_are_no_annotations(pytester: pytest.Pytester) -> None:
    write_suite(pytester.path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    result = pytest_run("--netaudit", cwd=pytester.path, env=env)
    assert result.ret == 1, output(result)
    assert not [line for line in result.outlines if line.startswith("::")]
