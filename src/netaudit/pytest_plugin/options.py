"""The plugin's options and how they resolve against ``[tool.netaudit]``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .. import BLOCK_ERRNO_CHOICES, HOW_TO_SKIP, IO_URING_CHOICES

if TYPE_CHECKING:
    from ..rules import Allowlist
    from ..settings import ProjectConfig, Settings

#: The settings and allowlist, once resolved in this process.
SETTINGS = pytest.StashKey[tuple["Settings", "Allowlist"]]()

#: Options that only show information: no test runs, so nothing needs tracing.
_NO_RUN = ("help", "version", "collectonly", "showfixtures", "show_fixtures_per_test",
           "markers", "setupplan")  # fmt: skip


def add_options(parser: pytest.Parser) -> None:
    """Once, whichever of the plugin and its always-loaded part (always.py) comes first."""
    group = parser.getgroup("netaudit", "network egress audit (netaudit)")
    if any("--netaudit" in option.names() for option in group.options):
        return
    group.addoption(
        "--netaudit",
        action="store_true",
        default=False,
        help="audit the network egress of this session under strace",
    )
    group.addoption(
        "--no-netaudit",
        action="store_true",
        default=False,
        help="do not audit this session, whatever --netaudit in addopts or enabled = true "
        "in [tool.netaudit] say",
    )
    group.addoption(
        "--netaudit-allowlist",
        metavar="YAML",
        default=None,
        help="path to the allowlist YAML (default: [tool.netaudit] allowlist, else "
        "netaudit.yaml in the current directory, else in pytest's rootdir, else the built-in "
        "rules only)",
    )
    group.addoption(
        "--netaudit-verbose",
        action="store_true",
        default=None,
        help="show every network event with the rule that allowed it, not only violations",
    )
    group.addoption(
        "--netaudit-report",
        metavar="PATH",
        default=None,
        help="also write the JSON report (per test) to PATH, even when the run is clean",
    )
    group.addoption(
        "--netaudit-names",
        action="store_true",
        default=None,
        help="read DNS answers to name destinations and allow 'host' rules (slower for "
        "suites that send and receive a lot)",
    )
    group.addoption(
        "--netaudit-suggest-rules",
        action="store_true",
        default=None,
        help="print allowlist rules that would allow the violations",
    )
    group.addoption(
        "--netaudit-junit-failures",
        action="store_true",
        default=None,
        help="with --junitxml, also record a failure on each test whose own calls were "
        "violations (they are always recorded as properties)",
    )
    group.addoption(
        "--netaudit-keep-trace",
        metavar="PATH",
        default=None,
        help="keep strace's log in PATH, to replay it with 'netaudit analyze PATH' "
        "(default: [tool.netaudit] keep_trace, else the log is removed)",
    )
    group.addoption(
        "--netaudit-io-uring",
        choices=IO_URING_CHOICES,
        default=None,
        help="deny: io_uring_setup fails with ENOSYS, so programs fall back to plain sockets; "
        "report: io_uring use fails the audit (its connects are invisible to strace) "
        "(default: [tool.netaudit] io_uring, else deny)",
    )
    group.addoption(
        "--netaudit-fail-tests",
        action="store_true",
        default=None,
        help="judge each test's calls as it ends, and fail the test whose own calls were "
        "violations, with them as its failure text (-x, --lf, JUnit and IDEs see it)",
    )
    group.addoption(
        "--netaudit-block",
        action="store_true",
        default=None,
        help="block mode: every connect, and every send to an address, that the allowlist "
        "does not allow for the running test fails before anything is sent, in every process "
        "of the session; implies --netaudit-fail-tests and io_uring deny",
    )
    group.addoption(
        "--netaudit-block-errno",
        choices=BLOCK_ERRNO_CHOICES,
        default=None,
        help="how a blocked call fails (default: [tool.netaudit] block_errno, else EPERM: a "
        "PermissionError that no retry loop spins on)",
    )


def project_config(config: pytest.Config) -> ProjectConfig | None:
    """``[tool.netaudit]`` from the pyproject.toml pytest uses: its inifile when that is a
    pyproject.toml, else the one in its rootdir. None when that file does not mention
    netaudit (most pytest runs: then nothing of the engine is imported), and under
    ``--no-netaudit``, which must work whatever the table says."""
    for namespace in (config.known_args_namespace, config.option):
        if getattr(namespace, "no_netaudit", False):
            return None
    inipath = config.inipath
    if inipath is not None and inipath.name == "pyproject.toml":
        candidate: Path = inipath
    else:
        candidate = config.rootpath / "pyproject.toml"
    try:
        if b"netaudit" not in candidate.read_bytes():
            return None
    except OSError:
        return None  # no such file (an unreadable one is the loader's to report)
    from ..errors import ConfigError
    from ..settings import load_project_config

    try:
        return load_project_config(candidate)
    except ConfigError as err:
        raise usage_error(str(err)) from err


def enabled(options: argparse.Namespace, project: ProjectConfig | None) -> bool:
    if getattr(options, "no_netaudit", False):
        return False
    asked = project is not None and project.get("enabled") is True
    return bool(getattr(options, "netaudit", False)) or asked


def lenient(options: argparse.Namespace, project: ProjectConfig | None) -> str:
    """What asked for the audit when it may be skipped where strace cannot trace: only
    ``enabled = true`` (no ``--netaudit``), outside CI; "" when the run must fail closed."""
    if getattr(options, "netaudit", False) or project is None:
        return ""
    if project.get("enabled") is not True:
        return ""
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        return ""
    where = project.where("enabled")
    return f"enabled = true in {where[0]}:{where[1]}" if where and where[1] else "enabled = true"


def runs_tests(options: argparse.Namespace) -> bool:
    """False for --help, --version, --collect-only and the like: they need no tracing."""
    return not any(getattr(options, name, False) for name in _NO_RUN)


def settings(
    config: pytest.Config, options: argparse.Namespace, project: ProjectConfig | None
) -> tuple[Settings, Allowlist]:
    """Resolved and loaded once per process; a bad setting or allowlist is a usage error
    (exit 4)."""
    from ..errors import ConfigError
    from ..settings import ProjectConfig, resolve

    try:
        resolved = resolve(
            config.invocation_params.dir,
            allowlist=options.netaudit_allowlist,
            verbose=options.netaudit_verbose,
            report=options.netaudit_report,
            suggest_rules=options.netaudit_suggest_rules,
            names=options.netaudit_names,
            config=project or ProjectConfig(),
            junit_failures=options.netaudit_junit_failures,
            io_uring=getattr(options, "netaudit_io_uring", None),
            keep_trace=getattr(options, "netaudit_keep_trace", None),
            rootdir=config.rootpath,
            block=getattr(options, "netaudit_block", None),
            block_errno=getattr(options, "netaudit_block_errno", None),
            fail_tests=getattr(options, "netaudit_fail_tests", None),
        )
        allowlist = resolved.allowlist.load()  # checked now, before any test runs
        resolved.check_report()
    except ConfigError as err:
        raise usage_error(str(err)) from err
    return resolved, allowlist


def usage_error(message: str) -> pytest.UsageError:
    """An error that stops the session, saying how to run it without the audit."""
    return pytest.UsageError(f"netaudit: {message}; {HOW_TO_SKIP}")
