"""How the plugin is switched on and where its settings come from: the flags, [tool.netaudit]
in the pyproject.toml pytest uses for the run, netaudit.yaml in the current directory, and the
usage errors a bad setting makes before any test runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.runner import pytest_run

pytestmark = pytest.mark.strace

#: One test that reaches a documentation address (UDP connect(): no packet is sent).
SUITE = """
import socket

def test_reaches_out():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect_ex(("192.0.2.10", 53))
"""

HEADER = "netaudit: auditing network egress; allowlist: "
SKIP = "to run the tests without the audit, pass --no-netaudit"
VERBOSE_TITLE = "  netaudit: verbose network event report"
OK_ROW = "AF_INET      192.0.2.10:53                 OK         {rule}"
VIOLATION_ROW = "AF_INET      192.0.2.10:53                 VIOLATION  -"


def allowlist(rule: str) -> str:
    """An allowlist whose one rule, named ``rule``, allows the suite's destination."""
    return f"""\
version: 1
allowlist:
  - name: "{rule}"
    family: AF_INET
    addr: 192.0.2.10
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def lines_of(result: pytest.RunResult) -> str:
    return "\n".join(result.outlines + result.errlines)


def says_netaudit(result: pytest.RunResult) -> bool:
    """Whether netaudit said anything: its header, a report, a warning or an error."""
    return any("netaudit: " in line for line in result.outlines + result.errlines)


# -- activation ---------------------------------------------------------------------------


def test_the_flag_turns_auditing_on_and_shows_the_header(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_egress=SUITE)
    result = pytest_run("--netaudit", cwd=pytester.path)
    assert result.ret == 1, lines_of(result)
    result.stdout.fnmatch_lines(
        [
            f"{HEADER}built-in rules only",
            "netaudit: strace [0-9]* (/*strace, *)",
            "*1 passed*",
        ]
    )
    result.stdout.fnmatch_lines(["  netaudit: 1 violation detected"])


def test_enabled_true_in_pyproject_turns_it_on_without_the_flag(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_egress=SUITE)
    pytester.makepyprojecttoml("[tool.netaudit]\nenabled = true\n")
    result = pytest_run(cwd=pytester.path)
    assert result.ret == 1, lines_of(result)
    result.stdout.fnmatch_lines(
        [f"{HEADER}built-in rules only", "netaudit: strace *", "*1 violation detected*"]
    )


@pytest.mark.parametrize(
    "pyproject",
    [None, "[tool.netaudit]\nenabled = false\nverbose = true\n"],
    ids=["no-config", "enabled-false"],
)
def test_without_the_flag_or_enabled_nothing_is_audited(
    pytester: pytest.Pytester, pyproject: str | None
) -> None:
    pytester.makepyfile(test_egress=SUITE)
    if pyproject is not None:
        pytester.makepyprojecttoml(pyproject)
    result = pytest_run(cwd=pytester.path)
    assert result.ret == 0, lines_of(result)
    result.stdout.fnmatch_lines(["*1 passed*"])
    assert not says_netaudit(result), lines_of(result)


def test_p_no_netaudit_switches_it_off_even_when_enabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_egress=SUITE)
    pytester.makepyprojecttoml("[tool.netaudit]\nenabled = true\n")
    result = pytest_run("-p", "no:netaudit", cwd=pytester.path)
    assert result.ret == 0, lines_of(result)
    result.stdout.fnmatch_lines(["*1 passed*"])
    assert not says_netaudit(result), lines_of(result)


# -- the allowlist's resolution order -----------------------------------------------------


@pytest.mark.parametrize(
    ("present", "chosen"),
    [
        (("flag", "pyproject", "cwd"), "flag"),
        (("pyproject", "cwd"), "pyproject"),
        (("cwd",), "cwd"),
        ((), "built-in"),
    ],
    ids=["flag-first", "pyproject-second", "cwd-third", "built-ins-last"],
)
def test_the_allowlist_resolves_flag_then_pyproject_then_cwd_then_builtins(
    pytester: pytest.Pytester, present: tuple[str, ...], chosen: str
) -> None:
    root = pytester.path
    pytester.makepyfile(test_egress=SUITE)
    args = ["--netaudit", "--netaudit-verbose"]
    if "flag" in present:
        write(root / "flag.yaml", allowlist("from the flag"))
        args += ["--netaudit-allowlist", "flag.yaml"]
    if "pyproject" in present:
        write(root / "policy" / "conf.yaml", allowlist("from pyproject"))
        pytester.makepyprojecttoml('[tool.netaudit]\nallowlist = "policy/conf.yaml"\n')
    if "cwd" in present:
        write(root / "netaudit.yaml", allowlist("from netaudit.yaml"))

    result = pytest_run(*args, cwd=root)

    header, row = {
        "flag": (f"{root / 'flag.yaml'} (command line)", OK_ROW.format(rule="from the flag")),
        "pyproject": (
            f"{root / 'policy' / 'conf.yaml'} ([tool.netaudit] in {root / 'pyproject.toml'})",
            OK_ROW.format(rule="from pyproject"),
        ),
        "cwd": (
            f"{root / 'netaudit.yaml'} (netaudit.yaml in the current directory)",
            OK_ROW.format(rule="from netaudit.yaml"),
        ),
        "built-in": ("built-in rules only", VIOLATION_ROW),
    }[chosen]
    assert result.ret == (1 if chosen == "built-in" else 0), lines_of(result)
    assert f"{HEADER}{header}" in result.outlines
    assert row in result.outlines


@pytest.mark.parametrize(
    "extra", [(), ("--rootdir", "{elsewhere}")], ids=["from-subdirectory", "rootdir-elsewhere"]
)
def test_the_pyproject_allowlist_is_relative_to_that_pyproject(
    pytester: pytest.Pytester, extra: tuple[str, ...]
) -> None:
    root = pytester.path
    sub, elsewhere = root / "sub", root / "elsewhere"
    elsewhere.mkdir()
    write(sub / "test_egress.py", SUITE)
    write(root / "policy" / "conf.yaml", allowlist("from pyproject"))
    # A netaudit.yaml in the current directory, and a policy/ folder there, are not used.
    write(sub / "netaudit.yaml", allowlist("from netaudit.yaml"))
    write(sub / "policy" / "conf.yaml", allowlist("wrong folder"))
    pytester.makepyprojecttoml('[tool.netaudit]\nenabled = true\nallowlist = "policy/conf.yaml"\n')

    args = [arg.format(elsewhere=elsewhere) for arg in extra]
    result = pytest_run("--netaudit-verbose", *args, cwd=sub)

    assert result.ret == 0, lines_of(result)
    assert (
        f"{HEADER}{root / 'policy' / 'conf.yaml'} ([tool.netaudit] in {root / 'pyproject.toml'})"
    ) in result.outlines
    assert OK_ROW.format(rule="from pyproject") in result.outlines


def test_a_pytest_ini_inifile_uses_the_pyproject_beside_it(pytester: pytest.Pytester) -> None:
    root = pytester.path
    pytester.makefile(".ini", pytest="[pytest]\naddopts = -ra\n")
    pytester.makepyprojecttoml(
        '[tool.netaudit]\nenabled = true\nverbose = true\nallowlist = "conf.yaml"\n'
    )
    write(root / "conf.yaml", allowlist("beside pytest.ini"))
    write(root / "tests" / "test_egress.py", SUITE)

    result = pytest_run(cwd=root / "tests")

    assert result.ret == 0, lines_of(result)
    result.stdout.fnmatch_lines(["configfile: pytest.ini"])
    assert OK_ROW.format(rule="beside pytest.ini") in result.outlines


def test_a_pyproject_asking_for_the_audit_that_pytest_does_not_read_is_refused(
    pytester: pytest.Pytester,
) -> None:
    """pytest's inifile is ../pytest.ini: the pyproject.toml in the current directory is not
    part of this run's configuration. It asks for the audit all the same, so the run is
    refused rather than left silently unaudited, and the error says what to do."""
    root = pytester.path
    pytester.makefile(".ini", pytest="[pytest]\naddopts = -ra\n")
    write(root / "tests" / "pyproject.toml", "[tool.netaudit]\nenabled = true\n")
    write(root / "tests" / "test_egress.py", SUITE)

    result = pytest_run(cwd=root / "tests")

    assert result.ret == pytest.ExitCode.USAGE_ERROR, lines_of(result)
    result.stderr.fnmatch_lines(
        [
            f"ERROR: netaudit: {root / 'tests' / 'pyproject.toml'}:2 asks for the audit "
            f"(enabled = true), but pytest reads its configuration from {root / 'pytest.ini'}*"
            "pass --netaudit*--no-netaudit"
        ]
    )
    opted_out = pytest_run("--no-netaudit", cwd=root / "tests")
    assert opted_out.ret == 0, lines_of(opted_out)
    assert not says_netaudit(opted_out), lines_of(opted_out)
    audited = pytest_run("--netaudit", cwd=root / "tests")
    assert audited.ret == 1, lines_of(audited)


# -- verbose, report and suggest_rules -------------------------------------------------


SUGGESTED = ("netaudit: rules that would allow the violations above:", "  addr: 192.0.2.10")


@pytest.mark.parametrize(
    ("args", "pyproject", "lines", "shown"),
    [
        (["--netaudit-verbose"], "verbose = false\n", (VERBOSE_TITLE, VIOLATION_ROW), True),
        ([], "verbose = true\n", (VERBOSE_TITLE, VIOLATION_ROW), True),
        ([], "", (VERBOSE_TITLE, VIOLATION_ROW), False),
        (["--netaudit-suggest-rules"], "", SUGGESTED, True),
        ([], "suggest_rules = true\n", SUGGESTED, True),
        ([], "", SUGGESTED, False),
    ],
    ids=[
        "verbose-flag-beats-pyproject",
        "verbose-pyproject",
        "verbose-default-off",
        "suggest-flag",
        "suggest-pyproject",
        "suggest-default-off",
    ],
)
def test_verbose_and_suggest_rules_resolve_flag_then_pyproject_then_off(
    pytester: pytest.Pytester,
    args: list[str],
    pyproject: str,
    lines: tuple[str, str],
    shown: bool,
) -> None:
    pytester.makepyfile(test_egress=SUITE)
    pytester.makepyprojecttoml(f"[tool.netaudit]\nenabled = true\n{pyproject}")
    result = pytest_run(*args, cwd=pytester.path)
    assert result.ret == 1, lines_of(result)
    for line in lines:
        assert (line in result.outlines) is shown
    result.stdout.fnmatch_lines(["  netaudit: 1 violation detected"])


def test_report_in_pyproject_is_relative_to_it(pytester: pytest.Pytester) -> None:
    root = pytester.path
    (root / "reports").mkdir()
    (root / "sub" / "reports").mkdir(parents=True)
    write(root / "sub" / "test_egress.py", SUITE)
    pytester.makepyprojecttoml(
        '[tool.netaudit]\nenabled = true\nreport = "reports/netaudit.json"\n'
    )
    result = pytest_run(cwd=root / "sub")
    assert result.ret == 1, lines_of(result)
    assert (root / "reports" / "netaudit.json").is_file()
    assert not (root / "sub" / "reports" / "netaudit.json").exists()


def test_the_report_flag_beats_pyproject_and_is_relative_to_the_cwd(
    pytester: pytest.Pytester,
) -> None:
    root = pytester.path
    write(root / "sub" / "test_egress.py", SUITE)
    pytester.makepyprojecttoml('[tool.netaudit]\nenabled = true\nreport = "from-config.json"\n')
    result = pytest_run("--netaudit-report", "from-flag.json", cwd=root / "sub")
    assert result.ret == 1, lines_of(result)
    assert (root / "sub" / "from-flag.json").is_file()
    assert not (root / "from-config.json").exists()


# -- bad settings: a usage error before anything runs -----------------------------------

#: Files that show whether anything of the project ran: its conftest.py, or its test.
RAN = """
import os
from pathlib import Path

def test_runs():
    Path("test-ran").write_text("ran")
"""
CONFTEST = 'from pathlib import Path\nPath("conftest-imported").write_text("imported")\n'

BAD_YAML = """\
version: 1
allowlist:
  - name: "a"
    family: AF_INET
   port: 53
"""
BAD_RULE = """\
version: 1
allowlist:
  - name: "a"
    family: AF_INET
    port: 99999
"""


@pytest.mark.parametrize(
    ("pyproject", "args", "message"),
    [
        (
            "enabled = true\nverbos = true\n",
            [],
            "{root}/pyproject.toml:3: unknown key 'verbos' in [[]tool.netaudit] (known keys: *)",
        ),
        (
            "enabled = true\nverbose = 'yes'\n",
            [],
            "{root}/pyproject.toml:3: [[]tool.netaudit] verbose must be a boolean*, not 'yes'",
        ),
        (
            "enabled = 1\n",
            [],
            "{root}/pyproject.toml:2: [[]tool.netaudit] enabled must be a boolean*, not 1",
        ),
        (
            "enabled = true\nallowlist = 'missing.yaml'\n",
            [],
            "{root}/pyproject.toml:3: allowlist names {root}/missing.yaml, which does not exist*",
        ),
        ("", ["--netaudit-allowlist", "missing.yaml"], "{root}/missing.yaml: no such file*"),
        ("", ["--netaudit-allowlist", "bad.yaml"], "{root}/bad.yaml:5: invalid YAML: *"),
        (
            "",
            ["--netaudit-allowlist", "rule.yaml"],
            "{root}/rule.yaml:5: port 99999 is out of range*",
        ),
        (
            "enabled = true\nreport = 'blocked/report.json'\n",
            [],
            "{root}/pyproject.toml:3: report = '{root}/blocked/report.json': {root}/blocked is a"
            " file, so the report's folder cannot be made there*",
        ),
        (
            "",
            ["--netaudit-report=blocked/report.json"],
            "{root}/blocked/report.json: {root}/blocked is a file, so the report's folder cannot"
            " be made there*",
        ),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "enabled-not-a-boolean",
        "missing-allowlist-in-pyproject",
        "missing-allowlist-flag",
        "invalid-yaml",
        "invalid-rule",
        "report-folder-blocked-in-pyproject",
        "report-folder-blocked-flag",
    ],
)
def test_a_bad_setting_is_a_usage_error_before_anything_runs(
    pytester: pytest.Pytester, pyproject: str, args: list[str], message: str
) -> None:
    root = pytester.path
    pytester.makepyfile(test_ran=RAN)
    pytester.makeconftest(CONFTEST)
    pytester.makepyprojecttoml(f"[tool.netaudit]\n{pyproject}")
    write(root / "bad.yaml", BAD_YAML)
    write(root / "rule.yaml", BAD_RULE)
    write(root / "blocked", "a file where the report's folder would be\n")

    result = pytest_run("--netaudit", *args, cwd=root)

    assert result.ret == pytest.ExitCode.USAGE_ERROR, lines_of(result)
    result.stderr.fnmatch_lines(
        [f"ERROR: netaudit: {message.format(root=root)}; {SKIP}"]  # every such error says how
    )
    assert not (root / "conftest-imported").exists()
    assert not (root / "test-ran").exists()
    assert not any(line.startswith(HEADER) for line in result.outlines)
    # The advice holds: the same command with --no-netaudit runs.
    assert pytest_run("--netaudit", *args, "--no-netaudit", cwd=root).ret == 0


# -- where the allowlist and the report are found --------------------------------------------


def test_a_run_from_a_subfolder_keeps_the_projects_netaudit_yaml(
    pytester: pytest.Pytester,
) -> None:
    root = pytester.path
    write(root / "pytest.ini", "[pytest]\n")
    write(root / "netaudit.yaml", allowlist("project rule"))
    write(root / "tests" / "sub" / "test_egress.py", SUITE)
    result = pytest_run("--netaudit", "--netaudit-verbose", cwd=root / "tests" / "sub")
    assert result.ret == 0, lines_of(result)
    result.stdout.fnmatch_lines(
        [
            f"{HEADER}{root / 'netaudit.yaml'} (netaudit.yaml in pytest's rootdir; none in the "
            "current directory)",
            "*",
            OK_ROW.format(rule="project rule"),
        ]
    )


def test_the_report_goes_into_folders_made_for_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_egress=SUITE)
    result = pytest_run("--netaudit", "--netaudit-report=out/deep/r.json", cwd=pytester.path)
    assert result.ret == 1, lines_of(result)
    assert (pytester.path / "out" / "deep" / "r.json").is_file(), lines_of(result)


# -- opting out, and where auditing cannot work ------------------------------------------------


def test_p_no_netaudit_runs_unaudited_though_addopts_says_netaudit(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\naddopts = --netaudit --netaudit-verbose --strict-markers\n")
    pytester.makepyfile(
        test_egress="import pytest\n"
        + SUITE
        + "\n@pytest.mark.netaudit(strict=True)\ndef test_marked():\n    pass\n",
    )
    result = pytest_run("-p", "no:netaudit", cwd=pytester.path)
    assert result.ret == 0, lines_of(result)  # the options parse, the marker is known
    result.stdout.fnmatch_lines(
        ["netaudit: not auditing: the plugin is switched off (-p no:netaudit)", "*2 passed*"]
    )
    result.stdout.no_fnmatch_line("*violation*")


def without_strace(tmp: Path, **extra: str) -> dict[str, str]:
    """An environment in which strace cannot be found, outside CI unless ``extra`` says so."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    return {**env, "PATH": str(tmp / "no-strace-here"), **extra}


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["session", "xdist"])
@pytest.mark.parametrize("early", ["1", "0"], ids=["start-hook", "plugin"])
def test_enabled_true_where_strace_cannot_trace_warns_once_and_runs_unaudited(
    pytester: pytest.Pytester, early: str, workers: list[str]
) -> None:
    pytester.makepyfile(test_egress=SUITE)
    pytester.makepyprojecttoml("[tool.netaudit]\nenabled = true\n")
    env = without_strace(pytester.path, NETAUDIT_EARLY_START=early)
    result = pytest_run(*workers, cwd=pytester.path, env=env)
    assert result.ret == 0, lines_of(result)
    warnings = [line for line in result.errlines if line.startswith("netaudit: warning: ")]
    assert len(warnings) == 1, lines_of(result)
    assert "not auditing this run: strace was not found on PATH" in warnings[0]
    assert "enabled = true in " in warnings[0] and "--netaudit or CI=true" in warnings[0]
    result.stdout.fnmatch_lines(["*1 passed*"])
    assert not any("netaudit:" in line for line in result.outlines), lines_of(result)


@pytest.mark.parametrize(
    ("args", "extra"),
    [(["--netaudit"], {}), ([], {"CI": "true"})],
    ids=["flag", "CI"],
)
def test_the_flag_and_ci_fail_closed_where_strace_cannot_trace(
    pytester: pytest.Pytester, args: list[str], extra: dict[str, str]
) -> None:
    pytester.makepyfile(test_egress=SUITE)
    pytester.makepyprojecttoml("[tool.netaudit]\nenabled = true\n")
    result = pytest_run(*args, cwd=pytester.path, env=without_strace(pytester.path, **extra))
    assert result.ret == pytest.ExitCode.USAGE_ERROR, lines_of(result)
    result.stderr.fnmatch_lines(
        ["ERROR: netaudit cannot trace this session: strace was not found on PATH*; "
         "to run the tests without the audit, pass --no-netaudit"]
    )  # fmt: skip
    without = pytest_run(
        *args, "--no-netaudit", cwd=pytester.path, env=without_strace(pytester.path, **extra)
    )
    assert without.ret == 0, lines_of(without)
