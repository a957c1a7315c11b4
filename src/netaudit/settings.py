"""``[tool.netaudit]`` in pyproject.toml and the allowlist resolution order, shared by the
command line and the pytest plugin so both resolve the same way.

Resolution of the allowlist: an explicit path (the flag), then ``allowlist`` in
``[tool.netaudit]`` (relative to that pyproject.toml), then ``netaudit.yaml`` in the current
directory, then (under pytest) ``netaudit.yaml`` in pytest's rootdir, then the built-in rules
only.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union, cast

from . import BLOCK_ERRNO_CHOICES, IO_URING_CHOICES, IO_URING_DEFAULT
from .errors import ConfigError

if TYPE_CHECKING:
    from .rules import Allowlist

DEFAULT_ALLOWLIST = "netaudit.yaml"

#: The keys of [tool.netaudit] and the type each must have.
KEYS: dict[str, type] = {
    "enabled": bool,
    "allowlist": str,
    "verbose": bool,
    "report": str,
    "suggest_rules": bool,
    "junit_failures": bool,
    "names": bool,
    "io_uring": str,
    "block": bool,
    "block_errno": str,
    "fail_tests": bool,
    "keep_trace": str,
}

Value = Union[bool, str]


@dataclass(frozen=True)
class ProjectConfig:
    """The ``[tool.netaudit]`` table of one pyproject.toml; ``path`` None when there is none."""

    path: Path | None = None
    values: tuple[tuple[str, Value], ...] = ()
    #: The line of each key, for errors about what a value names (a missing allowlist).
    lines: tuple[tuple[str, int], ...] = ()

    def get(self, key: str) -> Value | None:
        return dict(self.values).get(key)

    def where(self, key: str) -> tuple[str, int | None] | None:
        """The file and line that set ``key``."""
        if self.path is None or key not in dict(self.values):
            return None
        return str(self.path), dict(self.lines).get(key)

    def path_value(self, key: str) -> Path | None:
        """A path setting, relative to the pyproject.toml that holds it."""
        value = self.get(key)
        if not isinstance(value, str) or self.path is None:
            return None
        return (self.path.parent / value).resolve()


@dataclass(frozen=True)
class AllowlistChoice:
    """Which allowlist a run uses, and the rule of the resolution order that chose it."""

    path: Path | None
    source: str
    #: The pyproject.toml file and line that named it, if one did.
    setting: tuple[str, int | None] | None = None

    def load(self) -> Allowlist:
        if self.path is None:
            from .rules import DEFAULT

            return DEFAULT
        if self.setting is not None and not self.path.exists():
            raise ConfigError(
                f"allowlist names {self.path}, which does not exist; create it or fix the path",
                *self.setting,
            )
        from .allowlist import load  # the YAML loader, only when there is a file to read

        return load(self.path)

    def describe(self) -> str:
        return "built-in rules only" if self.path is None else f"{self.path} ({self.source})"


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml in ``start`` or a directory above it."""
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def load_project_config(pyproject: Path | None) -> ProjectConfig:
    """Reads and checks ``[tool.netaudit]``; unknown keys and wrong types are errors."""
    if pyproject is None:
        return ProjectConfig()
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror}", str(pyproject)) from err
    if "netaudit" not in text:  # most pytest runs of most projects: no TOML to parse
        return ProjectConfig(path=pyproject)
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python < 3.11 only
        import tomli as tomllib
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"invalid TOML: {err}", str(pyproject)) from err
    table: Any = document.get("tool", {}).get("netaudit")
    if table is None:
        return ProjectConfig(path=pyproject)
    if not isinstance(table, dict):
        raise ConfigError("[tool.netaudit] must be a table", str(pyproject), _line_of(text, None))
    values: list[tuple[str, Value]] = []
    lines: list[tuple[str, int]] = []
    for key, value in table.items():
        expected = KEYS.get(key)
        line = _line_of(text, key)
        if expected is None:
            known = ", ".join(KEYS)
            raise ConfigError(
                f"unknown key {key!r} in [tool.netaudit] (known keys: {known})",
                str(pyproject),
                line,
            )
        if not isinstance(value, expected):
            raise ConfigError(
                f"[tool.netaudit] {key} must be a {_type_name(expected)}, not {value!r}",
                str(pyproject),
                line,
            )
        values.append((key, cast(Value, value)))
        if line is not None:
            lines.append((key, line))
    return ProjectConfig(path=pyproject, values=tuple(values), lines=tuple(lines))


def resolve_allowlist(
    flag: str | None, config: ProjectConfig, cwd: Path, rootdir: Path | None = None
) -> AllowlistChoice:
    """Applies the resolution order; the file itself is checked when it is loaded.

    ``rootdir`` is pytest's: a suite run from a subfolder (``cd tests/sub && pytest``) keeps
    the project's netaudit.yaml, so verdicts do not change with where one stands.
    """
    if flag is not None:
        return AllowlistChoice((cwd / flag).resolve(), "command line")
    configured = config.path_value("allowlist")
    if configured is not None:
        return AllowlistChoice(
            configured, f"[tool.netaudit] in {config.path}", config.where("allowlist")
        )
    default = cwd / DEFAULT_ALLOWLIST
    if default.is_file():
        return AllowlistChoice(default.resolve(), "netaudit.yaml in the current directory")
    if rootdir is not None and (rootdir / DEFAULT_ALLOWLIST).is_file():
        why = "netaudit.yaml in pytest's rootdir; none in the current directory"
        return AllowlistChoice((rootdir / DEFAULT_ALLOWLIST).resolve(), why)
    return AllowlistChoice(None, "built-in")


def check_report_path(
    report: Path, setting: tuple[str, int | None] | None = None, what: str = "report"
) -> None:
    """A report path (or another file the run writes: ``what`` names its setting) that cannot
    be written is an error before the run, not after it. Missing folders are not:
    ``write_report`` makes them, as ``--junitxml`` does.

    ``setting`` is the pyproject.toml file and line that named it, when one did: the error
    then points there, at the mistake, and names the path in its message.
    """
    folder = report.parent
    noun = what.replace("_", " ")
    existing = next((f for f in (folder, *folder.parents) if f.exists()), folder)
    problem = ""
    if report.is_dir():
        problem = f"the {noun} path is a folder; give a file name"
    elif not existing.is_dir():
        problem = f"{existing} is a file, so the {noun}'s folder cannot be made there"
    elif not os.access(report if report.exists() else existing, os.W_OK):
        problem = f"the {noun} cannot be written here (permission denied)"
    if problem and setting is not None:
        raise ConfigError(f"{what} = {str(report)!r}: {problem}", *setting)
    if problem:
        raise ConfigError(problem, str(report))


def write_report(report: Path, write: Callable[[IO[str]], None]) -> None:
    """Writes a report as ``write`` writes it to the open file (as a stream: a report can be
    big), making its missing folders first (raises OSError)."""
    report.parent.mkdir(parents=True, exist_ok=True)
    with open(report, "w", encoding="utf-8") as file:
        write(file)


def _line_of(text: str, key: str | None) -> int | None:
    """The line of ``key`` inside [tool.netaudit] (or of the table header when key is None)."""
    inside = False
    header = re.compile(r"^\s*\[\s*tool\s*\.\s*netaudit\s*\]")
    for number, line in enumerate(text.splitlines(), start=1):
        if header.match(line):
            if key is None:
                return number
            inside = True
        elif inside and line.lstrip().startswith("["):
            inside = False
        elif (
            inside and key is not None and re.match(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=", line)
        ):
            return number
    return None


def _type_name(expected: type) -> str:
    return {bool: "boolean (true or false)", str: "string"}.get(expected, expected.__name__)


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know, resolved once: flags first, then [tool.netaudit]."""

    allowlist: AllowlistChoice
    verbose: bool = False
    report: Path | None = None
    suggest_rules: bool = False
    #: Trace DNS answers to name destinations and allow host rules (docs/performance.md).
    names: bool = False
    #: The pyproject.toml file and line that named ``report``, if one did.
    report_setting: tuple[str, int | None] | None = None
    #: With --junitxml: a failure entry on each test whose own calls were violations.
    junit_failures: bool = False
    #: io_uring: "deny" it (ENOSYS), or "report" its use as an incomplete audit.
    io_uring: str = IO_URING_DEFAULT
    #: Where to keep the raw strace log, to replay it with ``netaudit analyze``.
    keep_trace: Path | None = None
    keep_trace_setting: tuple[str, int | None] | None = None
    #: Block mode: every call the allowlist does not allow fails before anything is sent,
    #: with ``block_errno`` (docs/pytest-plugin.md, "Block mode"). Implies ``fail_tests`` and
    #: io_uring "deny".
    block: bool = False
    block_errno: str = "EPERM"
    #: Each test's calls judged as it ends, and the test failed for its violations.
    fail_tests: bool = False

    def check_report(self) -> None:
        """The files the run will write (the report, the kept trace) can be written."""
        if self.report is not None:
            check_report_path(self.report, self.report_setting)
        if self.keep_trace is not None:
            check_report_path(self.keep_trace, self.keep_trace_setting, "keep_trace")

    def to_wire(self) -> dict[str, Any]:
        """What a supervisor needs to judge a run's calls after the run's own report."""
        path = self.allowlist.path
        return {
            "allowlist": None if path is None else str(path),
            "verbose": self.verbose,
            "block": self.block,
            "block_errno": self.block_errno,
        }

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Settings:
        path = wire.get("allowlist")
        choice = AllowlistChoice(Path(path), "the session's") if isinstance(path, str) else None
        errno = wire.get("block_errno")
        return cls(
            allowlist=choice or AllowlistChoice(None, "built-in"),
            verbose=wire.get("verbose") is True,
            block=wire.get("block") is True,
            block_errno=errno if errno in BLOCK_ERRNO_CHOICES else "EPERM",
        )


def resolve(
    cwd: Path,
    *,
    allowlist: str | None = None,
    verbose: bool | None = None,
    report: str | None = None,
    suggest_rules: bool | None = None,
    names: bool | None = None,
    config: ProjectConfig | None = None,
    junit_failures: bool | None = None,
    io_uring: str | None = None,
    keep_trace: str | None = None,
    rootdir: Path | None = None,
    block: bool | None = None,
    block_errno: str | None = None,
    fail_tests: bool | None = None,
) -> Settings:
    """Resolves flags (None = not given) against ``config`` (default: the nearest pyproject);
    ``rootdir`` is pytest's, where the plugin also looks for netaudit.yaml."""
    if config is None:
        config = load_project_config(find_pyproject(cwd))
    blocking = block if block is not None else bool(config.get("block"))
    return Settings(
        allowlist=resolve_allowlist(allowlist, config, cwd, rootdir),
        verbose=verbose if verbose is not None else bool(config.get("verbose")),
        report=(cwd / report).resolve() if report else config.path_value("report"),
        report_setting=None if report else config.where("report"),
        suggest_rules=(
            suggest_rules if suggest_rules is not None else bool(config.get("suggest_rules"))
        ),
        junit_failures=(
            junit_failures if junit_failures is not None else bool(config.get("junit_failures"))
        ),
        names=names if names is not None else bool(config.get("names")),
        io_uring=_blocking_io_uring(io_uring, config)
        if blocking
        else (io_uring if io_uring is not None else _io_uring(config)),
        keep_trace=(cwd / keep_trace).resolve() if keep_trace else config.path_value("keep_trace"),
        keep_trace_setting=None if keep_trace else config.where("keep_trace"),
        block=blocking,
        block_errno=block_errno if block_errno is not None else _block_errno(config),
        fail_tests=blocking
        or (fail_tests if fail_tests is not None else bool(config.get("fail_tests"))),
    )


def _blocking_io_uring(flag: str | None, config: ProjectConfig) -> str:
    """Block mode refuses io_uring (a ring's connects are no system calls to judge): "deny",
    and an explicit "report" is a contradiction to say, not to settle silently."""
    value = flag if flag is not None else config.get("io_uring")
    if value == "report":
        where = (None, None) if flag is not None else config.where("io_uring") or (None, None)
        raise ConfigError(
            "block mode refuses io_uring (io_uring_setup fails with ENOSYS): io_uring "
            "'report' contradicts it; leave io_uring unset, or set it to 'deny'",
            *where,
        )
    return "deny"


def _block_errno(config: ProjectConfig) -> str:
    value = config.get("block_errno")
    if value is None:
        return "EPERM"
    if value not in BLOCK_ERRNO_CHOICES:
        choices = ", ".join(BLOCK_ERRNO_CHOICES)
        raise ConfigError(
            f"[tool.netaudit] block_errno must be one of {choices}, not {value!r}",
            *(config.where("block_errno") or (None, None)),
        )
    return str(value)


def _io_uring(config: ProjectConfig) -> str:
    value = config.get("io_uring")
    if value is None:
        return IO_URING_DEFAULT
    if value not in IO_URING_CHOICES:
        choices = " or ".join(repr(choice) for choice in IO_URING_CHOICES)
        raise ConfigError(
            f"[tool.netaudit] io_uring must be {choices}, not {value!r}",
            *(config.where("io_uring") or (None, None)),
        )
    return str(value)
