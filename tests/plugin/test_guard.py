"""Never a silent unaudited run: when pytest itself would switch the audit off unasked, the run is
refused with a message that says what to write instead; when the user opted out, it is not.

pytest reads its command line before it knows netaudit's options, so the value of
``--netaudit-report r.json`` is a path of tests to it then: once ``r.json`` exists (the second
run), pytest's rootdir can move, and with it the pyproject.toml that says ``enabled = true``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netaudit.trace import Tracer
from tests.plugin.test_settings import SUITE, lines_of, says_netaudit, write
from tests.runner import pytest_run

pytestmark = pytest.mark.strace

ENABLED = "[tool.netaudit]\nenabled = true\n"


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    """A project that asks for the audit, and a folder elsewhere with a report in it already
    (pytest takes its own configuration from there once it takes the report as a path)."""
    root = pytester.path
    write(root / "project" / "pyproject.toml", ENABLED)
    write(root / "project" / "test_egress.py", SUITE)
    write(root / "elsewhere" / "tox.ini", "[pytest]\n")
    write(root / "elsewhere" / "r.json", "{}")
    return root / "project"


@pytest.mark.parametrize("flag", [[], ["--netaudit"]], ids=["enabled", "flag"])
def test_a_value_given_apart_that_moves_the_rootdir_is_refused_with_the_equals_form(
    project: Path, tracer: Tracer, flag: list[str]
) -> None:
    report = project.parent / "elsewhere" / "r.json"
    result = pytest_run(*flag, "--netaudit-report", str(report), cwd=project)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, lines_of(result)
    result.stderr.fnmatch_lines(
        [f"ERROR: netaudit: pytest took the value of --netaudit-report ({report}) as a path of "
         f"tests, which moves its rootdir*write --netaudit-report={report}; to run the tests "
         "without the audit, pass --no-netaudit"]
    )  # fmt: skip
    assert json.loads(report.read_text()) == {}  # nothing ran: the old report stands


@pytest.mark.parametrize("start", [{}, {"NETAUDIT_EARLY_START": "0"}], ids=["hook", "fallback"])
def test_the_equals_form_audits_and_writes_the_report(
    project: Path, tracer: Tracer, start: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in start.items():
        monkeypatch.setenv(name, value)
    report = project.parent / "elsewhere" / "r.json"
    result = pytest_run(f"--netaudit-report={report}", cwd=project)
    assert result.ret == 1, lines_of(result)
    assert json.loads(report.read_text())["summary"]["violations"] == 1


def test_a_value_given_apart_that_moves_nothing_works_as_the_spec_writes_it(
    project: Path, tracer: Tracer
) -> None:
    rule = "  - family: AF_INET\n    addr: 192.0.2.10\n"
    write(project / "netaudit.yaml", "version: 1\nallowlist:\n" + rule)
    result = pytest_run("--netaudit", "--netaudit-allowlist", "netaudit.yaml", cwd=project)
    assert result.ret == 0, lines_of(result)
    result.stdout.fnmatch_lines(["netaudit: auditing network egress; allowlist: *netaudit.yaml*"])


def test_opting_out_is_not_refused(project: Path, tracer: Tracer) -> None:
    result = pytest_run("--no-netaudit", cwd=project)
    assert result.ret == 0, lines_of(result)
    assert not says_netaudit(result), lines_of(result)


def test_a_session_that_never_starts_its_audit_fails(
    project: Path, tracer: Tracer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With plugin autoloading off, pytest does not load netaudit's plugin: the start hook
    traced the session all the same, and the session's silence fails the run."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytest_run(cwd=project)
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR, lines_of(result)
    result.stdout.fnmatch_lines(
        ["netaudit: audit incomplete: the session never started its audit: pytest did not load "
         "netaudit's plugin*-p netaudit*--no-netaudit"]
    )  # fmt: skip
    loaded = pytest_run("-p", "netaudit", cwd=project)
    assert loaded.ret == 1, lines_of(loaded)  # audited: the violation
