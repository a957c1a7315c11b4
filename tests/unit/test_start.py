"""The start hook's decision: which command lines run pytest, and which ask for the audit, read
from the command line, PYTEST_ADDOPTS, pytest's configuration and [tool.netaudit] as pytest and
the plugin read them; anything it cannot tell for sure is left to the plugin (None)."""

from __future__ import annotations

from pathlib import Path

import pytest

import netaudit
import netaudit_start
from netaudit import protocol
from netaudit_start import Plan, decide, pytest_args

PY = "/venv/bin/python"


@pytest.mark.parametrize(
    ("argv", "args"),
    [
        ([PY, "/venv/bin/pytest", "-q", "t.py"], ["-q", "t.py"]),
        ([PY, "/venv/bin/py.test"], []),
        ([PY, "-m", "pytest", "--netaudit"], ["--netaudit"]),
        ([PY, "-mpytest", "-x"], ["-x"]),
        ([PY, "-X", "importtime", "-W", "error", "-m", "pytest", "a"], ["a"]),
        ([PY, "-Xdev", "-Wd", "-I", "-u", "-m", "pytest"], []),
        ([PY, "-OO", "-B", "/venv/bin/pytest", "k"], ["k"]),
        ([PY, "--check-hash-based-pycs", "always", "-m", "pytest"], []),
        ([PY, "-m", "pip", "install", "pytest"], None),
        ([PY, "-c", "import pytest; pytest.main()"], None),
        ([PY, "-Ic", "pass"], None),
        ([PY, "host.py", "pytest"], None),
        ([PY, "/venv/bin/pytest-watch"], None),
        ([PY, "-"], None),
        ([PY, "-i", "-m", "pytest"], None),
        ([PY], None),
    ],
)
def test_which_command_lines_run_pytest(argv: list[str], args: list[str] | None) -> None:
    assert pytest_args(argv) == args


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


ENABLED = "[tool.netaudit]\nenabled = true\n"


@pytest.mark.parametrize(
    ("files", "args", "addopts", "plan"),
    [
        ({}, ["--netaudit"], "", Plan()),
        ({}, [], "--netaudit", Plan()),
        ({}, [], "", None),
        ({"pytest.ini": "[pytest]\naddopts = -ra --netaudit\n"}, [], "", Plan()),
        ({"pytest.ini": "[pytest]\naddopts =\n    -ra\n    --netaudit\n"}, [], "", Plan()),
        (
            {
                "pyproject.toml": "[tool.pytest.ini_options]\n"
                'addopts = "--netaudit --netaudit-names"\n'
            },
            [],
            "",
            Plan(names=True),
        ),
        ({"pyproject.toml": '[tool.pytest]\naddopts = ["--netaudit"]\n'}, [], "", Plan()),
        ({"pyproject.toml": ENABLED}, [], "", Plan()),
        (
            {"pyproject.toml": ENABLED + 'names = true\nio_uring = "deny"\n'},
            [],
            "",
            Plan(names=True, io_uring="deny"),
        ),
        ({"pyproject.toml": ENABLED}, ["--netaudit-io-uring", "deny"], "", Plan(io_uring="deny")),
        ({"pyproject.toml": ENABLED}, ["--netaudit-io-uring=deny"], "", Plan(io_uring="deny")),
        ({"pyproject.toml": ENABLED, "pytest.ini": "[pytest]\n"}, [], "", Plan()),
        ({"tox.ini": "[pytest]\naddopts = --netaudit\n"}, [], "", Plan()),
        ({"tox.ini": "[tox]\n", "pyproject.toml": ENABLED}, [], "", Plan()),
        ({"setup.cfg": "[tool:pytest]\naddopts = --netaudit\n"}, [], "", Plan()),
        ({"setup.cfg": "[metadata]\nname = x\n", "pyproject.toml": ENABLED}, [], "", Plan()),
        # A pytest.ini wins over a pyproject.toml with pytest settings, as in pytest.
        (
            {
                "pytest.ini": "[pytest]\n",
                "pyproject.toml": '[tool.pytest.ini_options]\naddopts = "--netaudit"\n',
            },
            [],
            "",
            None,
        ),
        # Opting out, and options that run no test.
        ({"pyproject.toml": ENABLED}, ["--no-netaudit"], "", None),
        ({}, ["--netaudit", "-p", "no:netaudit"], "", None),
        ({"pytest.ini": "[pytest]\naddopts = -pno:netaudit\n"}, ["--netaudit"], "", None),
        ({"pyproject.toml": ENABLED}, ["--collect-only"], "", None),
        ({}, ["--netaudit", "--co"], "", None),
        ({}, ["--netaudit", "-h"], "", None),
        ({}, ["--netaudit", "--fixtures"], "", None),
        # What the hook cannot read as pytest would: the plugin decides.
        ({}, ["--netaudit", "-c", "other.ini"], "", None),
        ({}, ["--netaudit", "--rootdir=/elsewhere"], "", None),
        ({}, ["--netaudit", "-o", "addopts="], "", None),
        ({"pyproject.toml": ENABLED + 'io_uring = "sometimes"\n'}, [], "", None),
        ({"pyproject.toml": "[tool.netaudit\nenabled = true\n"}, [], "", None),
        # A value given apart that names a file where it moves pytest's rootdir.
        (
            {"pyproject.toml": ENABLED, "elsewhere/r.json": "{}"},
            ["--netaudit-report", "elsewhere/r.json"],
            "",
            Plan(),
        ),
        ({"pyproject.toml": ENABLED}, ["--netaudit-allowlist", "netaudit.yaml"], "", Plan()),
    ],
)
def test_what_asks_for_the_audit(
    tmp_path: Path, files: dict[str, str], args: list[str], addopts: str, plan: Plan | None
) -> None:
    project = write(tmp_path / "project", files)
    env = {"PYTEST_ADDOPTS": addopts} if addopts else {}
    assert unlenient(decide(args, env, project)) == plan


def unlenient(plan: Plan | None) -> Plan | None:
    """The plan without what says whether it may run unaudited (tested on its own below)."""
    return None if plan is None else plan._replace(lenient="")


@pytest.mark.parametrize(
    ("args", "env", "lenient"),
    [
        ([], {}, True),  # only enabled = true asked: a developer without strace may run
        (["--netaudit"], {}, False),  # asked for on the command line: fails closed
        ([], {"PYTEST_ADDOPTS": "--netaudit"}, False),
        ([], {"CI": "true"}, False),  # CI: fails closed
    ],
)
def test_only_enabled_true_outside_ci_may_run_unaudited_where_strace_cannot(
    tmp_path: Path, args: list[str], env: dict[str, str], lenient: bool
) -> None:
    pyproject = write(tmp_path, {"pyproject.toml": ENABLED}) / "pyproject.toml"
    plan = decide(args, env, tmp_path)
    assert plan is not None
    assert plan.lenient == (f"enabled = true in {pyproject}" if lenient else "")


def test_a_value_given_apart_that_moves_the_rootdir_is_left_to_the_plugin(tmp_path: Path) -> None:
    project = write(tmp_path / "project", {"pyproject.toml": ENABLED})
    write(tmp_path / "elsewhere", {"pytest.ini": "[pytest]\n", "r.json": "{}"})
    report = str(tmp_path / "elsewhere" / "r.json")
    assert decide(["--netaudit-report", report], {}, project) is None
    assert unlenient(decide([f"--netaudit-report={report}"], {}, project)) == Plan()


def test_the_project_is_found_from_a_folder_inside_it(tmp_path: Path) -> None:
    write(tmp_path, {"pyproject.toml": ENABLED + "names = true\n", "tests/sub/test_x.py": ""})
    assert unlenient(decide([], {}, tmp_path / "tests" / "sub")) == Plan(names=True)
    assert unlenient(decide(["tests/sub/test_x.py::test_a"], {}, tmp_path)) == Plan(names=True)


def test_paths_of_tests_lead_to_their_project(tmp_path: Path) -> None:
    write(tmp_path / "a", {"pyproject.toml": "[tool.netaudit]\nenabled = false\n"})
    write(tmp_path / "b", {"pytest.ini": "[pytest]\naddopts = --netaudit\n", "t/test_x.py": ""})
    assert decide([str(tmp_path / "b" / "t")], {}, tmp_path / "a") == Plan()


def test_the_hook_and_the_protocol_agree_on_the_environment_variables() -> None:
    assert netaudit_start.ENV_SUPERVISOR == protocol.ENV_SUPERVISOR
    assert netaudit_start.ENV_UNAUDITED == netaudit.ENV_UNAUDITED


def test_the_hook_stands_aside_in_a_traced_process_and_when_switched_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    called: list[object] = []
    monkeypatch.setattr(netaudit_start, "_supervise", lambda *a: called.append(a))
    monkeypatch.setattr(netaudit_start, "_argv", lambda: [PY, "-m", "pytest", "--netaudit"])
    for env in (
        {protocol.ENV_SUPERVISOR: "token"},
        {netaudit_start.ENV_EARLY: "0"},
        {netaudit.ENV_UNAUDITED: "1"},  # the pytest it runs again unaudited
    ):
        monkeypatch.setattr(netaudit_start, "_started", False)
        with monkeypatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            netaudit_start.start()
    assert called == []
    monkeypatch.setattr(netaudit_start, "_started", False)
    monkeypatch.delenv(protocol.ENV_SUPERVISOR, raising=False)
    monkeypatch.delenv(netaudit_start.ENV_EARLY, raising=False)
    netaudit_start.start()
    netaudit_start.start()  # the .pth read twice: once is all
    assert len(called) == 1


def test_the_trace_to_keep_is_resolved_as_the_plugin_resolves_it(tmp_path: Path) -> None:
    project = write(tmp_path / "project", {"pyproject.toml": ENABLED + 'keep_trace = "t/x.log"\n'})
    inside = project / "sub"
    inside.mkdir()
    assert keep([], inside) == str(project / "t" / "x.log")
    assert keep(["--netaudit-keep-trace", "mine.log"], inside) == str(inside / "mine.log")
    assert keep(["--netaudit-keep-trace=mine.log"], inside) == str(inside / "mine.log")


def keep(argv: list[str], cwd: Path) -> str | None:
    plan = decide(argv, {}, cwd)
    assert plan is not None
    return plan.keep_trace
