"""Never a silent unaudited run: the ways pytest itself could switch the audit off unasked.

pytest finds its rootdir and inifile before any plugin's options are known, so the value of
``--netaudit-report r.json`` (given apart from its option) is taken as a path of tests then:
once ``r.json`` exists, the rootdir can move, and with it the pyproject.toml whose
``[tool.netaudit]`` says ``enabled = true``, the nodeids that ``tests:`` rules name, and the
report. And a ``[tool.netaudit]`` that asks for the audit is not read at all when pytest's
configuration is elsewhere (``-c``, a pytest.ini in a subfolder). Both are usage errors that
say what to write instead.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .options import usage_error

if TYPE_CHECKING:
    from ..settings import ProjectConfig

#: netaudit's options that take a value.
VALUED = ("--netaudit-allowlist", "--netaudit-report", "--netaudit-io-uring",
          "--netaudit-keep-trace", "--netaudit-block-errno")  # fmt: skip


def check_values(config: pytest.Config) -> None:
    """A value given apart from its option must not have moved pytest's rootdir."""
    given = [*_env_addopts(), *config.invocation_params.args]
    apart = [
        (option, value)
        for option, value in zip(given, given[1:])
        if option in VALUED and not value.startswith("-")
    ]
    if not apart:
        return
    namespace = config.known_args_namespace
    paths = [str(p) for p in getattr(namespace, "file_or_dir", None) or ()]
    values = [value for _, value in apart]
    without = _setup(config, namespace, paths)
    moved = without is None or _setup(config, namespace, [*paths, *values]) != without
    if without is None:  # pytest's own search is out of reach: a path taken is too many
        moved = any(Path(config.invocation_params.dir, v).exists() for v in values)
    if moved:
        option, value = next((o, v) for o, v in apart if v in values)
        raise usage_error(
            f"pytest took the value of {option} ({value}) as a path of tests, which moves its "
            f"rootdir (now {config.rootpath}) and the configuration it reads: write "
            f"{option}={value}"
        )


def _setup(
    config: pytest.Config, namespace: argparse.Namespace, args: Sequence[str]
) -> tuple[Path, Path | None] | None:
    """pytest's (rootdir, inifile) for these arguments, or None when its search cannot be
    called here (it is pytest's internal API)."""
    try:
        import inspect

        from _pytest.config.findpaths import determine_setup

        accepted = inspect.signature(determine_setup).parameters
        known: dict[str, Any] = {
            "inifile": getattr(namespace, "inifilename", None),
            "override_ini": getattr(namespace, "override_ini", None),
            "args": list(args),
            "rootdir_cmd_arg": getattr(namespace, "rootdir", None) or None,
            "invocation_dir": config.invocation_params.dir,
        }
        found = determine_setup(**{k: v for k, v in known.items() if k in accepted})
    except Exception:
        return None
    return found[0], found[1]


def check_project(config: pytest.Config, project: ProjectConfig | None, enabled: bool) -> None:
    """A ``[tool.netaudit]`` asking for the audit must not be left unread."""
    if enabled:
        return
    read = None if project is None else project.path
    found = _pyproject_above(config.invocation_params.dir)
    while found is not None:
        if found != read and b"netaudit" in _read(found):
            from ..errors import ConfigError
            from ..settings import load_project_config

            try:
                asking = load_project_config(found)
            except ConfigError as err:  # it may ask for the audit: it must be readable
                raise usage_error(str(err)) from err
            if asking.get("enabled") is True:
                line = asking.where("enabled")
                at = f"{found}:{line[1]}" if line and line[1] else str(found)
                raise usage_error(
                    f"{at} asks for the audit (enabled = true), but pytest reads its "
                    f"configuration from {config.inipath or config.rootpath}, so that "
                    f"[tool.netaudit] is not read here: pass --netaudit (and "
                    f"--netaudit-allowlist=PATH), or run pytest where that pyproject.toml "
                    f"is its configuration"
                )
        found = (
            _pyproject_above(found.parent.parent) if found.parent != found.parent.parent else None
        )


def _pyproject_above(start: Path) -> Path | None:
    """The nearest pyproject.toml in ``start`` or a folder above it (settings.find_pyproject,
    without importing the settings for a run that audits nothing)."""
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _env_addopts() -> list[str]:
    import shlex

    return shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))
