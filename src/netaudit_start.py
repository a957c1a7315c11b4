"""netaudit's start hook: an audited ``pytest`` is put under strace before pytest imports
anything.

``netaudit-early.pth`` (installed beside this module) runs ``start()`` as the interpreter
starts, in every Python process of the environment, so it must cost next to nothing when it
has nothing to do. It acts only in a process that runs pytest's command line (the ``pytest``
script or ``python -m pytest``), that is not traced already, and whose command line, pytest
configuration and ``[tool.netaudit]`` ask for the audit. Then this process becomes the
supervisor: it runs the very same command under strace, reports what the session could not,
and exits with the session's status, so no line of pytest, of its plugins or of the project
ever runs here.

A module of its own, outside the ``netaudit`` package, so that a process where the hook does
nothing has imported nothing of netaudit; pytest may not rewrite its asserts
(PYTEST_DONT_REWRITE), as it is imported before pytest could, so pytest does not warn of it.

Whenever the hook cannot tell for sure (an unusual option, a file it cannot read), it stands
aside and the plugin decides from inside pytest, supervising from its first hook if it must
(pytest_plugin.fallback): slower, and just as audited. A host program that calls
``pytest.main()`` is never touched here.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import NamedTuple

#: protocol.ENV_SUPERVISOR: set in a traced session's environment (its value is a secret token).
ENV_SUPERVISOR = "NETAUDIT_SUPERVISOR"

#: netaudit.ENV_UNAUDITED: the pytest this hook runs again unaudited, having said why.
ENV_UNAUDITED = "NETAUDIT_UNAUDITED"

#: Set to 0 to switch the hook off (the plugin then supervises from inside pytest).
ENV_EARLY = "NETAUDIT_EARLY_START"
_PYTEST = ("pytest", "py.test")
#: Python's own options that take a value (the value may also be glued on: -Wd).
_PY_VALUED = frozenset("WX")
#: Options that run no test: no trace is needed (pytest_plugin.options.runs_tests).
_NO_RUN = frozenset(
    {"-h", "--help", "-V", "--version", "--co", "--collect-only", "--collectonly", "--fixtures",
     "--funcargs", "--fixtures-per-test", "--markers", "--setup-plan", "--setupplan"}
)  # fmt: skip
#: Options with which the hook cannot find pytest's configuration as pytest does: it stands
#: aside, and the plugin decides.
_UNSURE = frozenset(
    {"-c", "--config-file", "--inifile", "--rootdir", "-o", "--override-ini", "--pyargs"}
)
#: pytest's own options that take a separate value: what follows them is not a path.
_VALUED = frozenset(
    {"-k", "-m", "-p", "-W", "-r", "--tb", "--maxfail", "--durations", "--durations-min",
     "--junitxml", "--junit-xml", "--junit-prefix", "--basetemp", "--confcutdir", "--ignore",
     "--ignore-glob", "--deselect", "--log-level", "--log-file", "--log-file-level",
     "--log-format", "--log-date-format", "--log-cli-level", "--log-cli-format",
     "--log-cli-date-format", "--log-file-format", "--log-file-date-format",
     "--import-mode", "--capture", "--show-capture", "--color", "--code-highlight",
     "--assert", "--debug", "--verbosity", "--doctest-glob", "--cache-show"}
)  # fmt: skip
#: netaudit's options that take a value.
_NETAUDIT_VALUED = frozenset(
    {"--netaudit-allowlist", "--netaudit-report", "--netaudit-io-uring", "--netaudit-keep-trace",
     "--netaudit-block-errno"}
)  # fmt: skip
#: netaudit.BLOCK_ERRNO_CHOICES (not imported: nothing of netaudit is, until the audit is on).
_BLOCK_ERRNOS = ("EPERM", "ECONNREFUSED", "EACCES", "ENETUNREACH")
#: Files pytest reads its configuration from, in the order it looks for them in a folder.
_CONFIG_FILES = (
    "pytest.toml", ".pytest.toml", "pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini",
    "setup.cfg",
)  # fmt: skip

_started = False


class Plan(NamedTuple):
    """How to trace the session: what strace needs before the session can say it.

    A NamedTuple and paths as strings, not a dataclass and pathlib: this module is imported
    before every pytest start, and those two imports cost the supervisor 30 ms before strace
    starts (docs/performance.md).

    Block mode too: its filter is installed before the command runs, and the supervisor
    judges the session's first calls before the session has said anything (``allowlist``:
    the path the plugin will resolve, None for the built-in rules).
    """

    names: bool = False
    io_uring: str = "deny"  # netaudit.IO_URING_DEFAULT
    #: What asked for the audit when the run may go on unaudited where strace cannot trace
    #: (only ``enabled = true``, outside CI: pytest_plugin.options.lenient); "" otherwise.
    lenient: str = ""
    #: Where to keep the raw trace (an absolute path), when asked to.
    keep_trace: str | None = None
    block: bool = False
    block_errno: str = "EPERM"
    allowlist: str | None = None


class _Unsure(Exception):
    """The hook cannot tell what pytest will do: the plugin decides."""


def start() -> None:
    """Called by the .pth file in every process; supervises and exits, or returns at once."""
    global _started
    if _started:  # a .pth may be read twice (lib and lib64 are one folder in a venv)
        return
    _started = True
    if ENV_SUPERVISOR in os.environ or ENV_UNAUDITED in os.environ:
        return
    if os.environ.get(ENV_EARLY) == "0":
        return
    if not sys.platform.startswith("linux"):
        return
    try:
        argv = _argv()
        args = pytest_args(argv)
        plan = None if args is None else decide(args, os.environ, os.getcwd())
    except Exception:
        return
    if plan is not None:
        _supervise(argv, plan)


def _argv() -> list[str]:
    """The whole command line: sys.argv lacks the interpreter's options, and ``-m``'s module."""
    orig = getattr(sys, "orig_argv", None)
    if orig:
        return list(orig)
    with open("/proc/self/cmdline", "rb") as cmdline:
        raw = cmdline.read()
    return [arg.decode("utf-8", "surrogateescape") for arg in raw.split(b"\0")[:-1]]


def pytest_args(argv: Sequence[str]) -> list[str] | None:
    """pytest's arguments, if ``argv`` runs pytest's command line; else None."""
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "-m" or (arg.startswith("-m") and not arg.startswith("--")):
            module = arg[2:] or (argv[i + 1] if i + 1 < len(argv) else "")
            rest = i + (1 if arg[2:] else 2)
            return list(argv[rest:]) if module in _PYTEST else None
        if arg in ("-c", "-", "-i") or arg.startswith(("-c", "--help", "--version")):
            return None
        if arg.startswith("--"):
            i += 2 if arg == "--check-hash-based-pycs" else 1
            continue
        if arg.startswith("-") and len(arg) > 1:
            flags = arg[1:]
            valued = next((n for n, c in enumerate(flags) if c in _PY_VALUED), None)
            if "c" in flags[: valued if valued is not None else len(flags)]:
                return None
            i += 2 if valued is not None and valued == len(flags) - 1 else 1
            continue
        return list(argv[i + 1 :]) if os.path.basename(arg) in _PYTEST else None
    return None


def decide(args: Sequence[str], env: Mapping[str, str], cwd: str | os.PathLike[str]) -> Plan | None:
    """The plan if this pytest start asks for the audit and will run tests; None when it
    does not, or when the hook cannot tell (the plugin decides then)."""
    cwd = os.fspath(cwd)
    try:
        given = [*shlex.split(env.get("PYTEST_ADDOPTS", "")), *args]
        if not _mentions_netaudit(given, cwd):
            return None
        paths, values = _paths(given)
        found = _locate(paths, cwd)
        if values and _locate([p for p in paths if p not in values], cwd) != found:
            raise _Unsure("a --netaudit-* value moves pytest's rootdir")  # the plugin refuses
        ini = _pytest_section(found[0]) if found[0] is not None else {}
        project = _tool_netaudit(found[1]) if found[1] is not None else {}
        in_ci = env.get("CI", "").lower() in ("true", "1", "yes")
        origin = "" if in_ci else f"enabled = true in {found[1]}"
        kept = project.get("keep_trace")  # relative to its pyproject.toml, as in settings
        base = os.path.dirname(found[1]) if found[1] is not None else None
        keep = _resolve(base, kept) if base is not None and isinstance(kept, str) else None
        tokens = [*_addopts(ini or {}), *given]
        plan = _plan(tokens, project, origin, keep, cwd)
        if plan is not None and plan.block:
            rootdir = os.path.dirname(found[0]) if found[0] is not None else None
            plan = _with_allowlist(plan, tokens, found[1], cwd, rootdir)
        return plan
    except _Unsure:
        return None


def _mentions_netaudit(given: Sequence[str], cwd: str) -> bool:
    """The cheap test first: without the word anywhere, nothing asks for the audit."""
    if any("netaudit" in token for token in given):
        return True
    for folder in _up(cwd):
        for name in _CONFIG_FILES:
            try:
                with open(os.path.join(folder, name), "rb") as config:
                    if b"netaudit" in config.read():
                        return True
            except OSError:
                continue
    return False


def _up(folder: str) -> list[str]:
    """The folder and its parents, nearest first (as ``(path, *path.parents)``)."""
    folders = [folder]
    while os.path.dirname(folders[-1]) != folders[-1]:
        folders.append(os.path.dirname(folders[-1]))
    return folders


def _resolve(base: str, path: str) -> str:
    """``path`` relative to ``base``, absolute, links resolved (as ``Path.resolve``)."""
    return os.path.realpath(os.path.join(base, path))


def _paths(given: Sequence[str]) -> tuple[list[str], list[str]]:
    """What pytest's first parse, which knows only its own options, takes as paths; and which
    of them are values given apart to netaudit's options (``--netaudit-report r.json``)."""
    paths: list[str] = []
    values: list[str] = []
    skip = False
    for i, token in enumerate(given):
        if skip:
            skip = False
        elif token.split("=", 1)[0] in _UNSURE or (token.startswith("-c") and token != "-c"):
            raise _Unsure(token)
        elif token in _VALUED:
            skip = True
        elif not token.startswith("-"):
            paths.append(token)
            if i and given[i - 1].startswith("--netaudit-") and given[i - 1] in _NETAUDIT_VALUED:
                values.append(token)
    return paths, values


def _locate(paths: Sequence[str], cwd: str) -> tuple[str | None, str | None]:
    """pytest's inifile, and the pyproject.toml whose [tool.netaudit] the plugin reads (the
    inifile itself, or the one beside it), found as pytest finds them (config.findpaths)."""
    dirs = []
    for arg in paths:
        path = os.path.abspath(os.path.join(cwd, arg.split("::")[0]))  # pytest's absolutepath
        if os.path.exists(path):
            dirs.append(path if os.path.isdir(path) else os.path.dirname(path))
    ancestor = os.path.commonpath(dirs) if dirs else cwd
    found_pyproject: str | None = None
    for folder in _up(ancestor):
        for name in _CONFIG_FILES:
            candidate = os.path.join(folder, name)
            if not os.path.isfile(candidate):
                continue
            if name == "pyproject.toml" and found_pyproject is None:
                found_pyproject = candidate
            if _pytest_section(candidate) is not None:
                project = os.path.join(folder, "pyproject.toml")
                return candidate, project if os.path.isfile(project) else None
    return found_pyproject, found_pyproject


def _pytest_section(path: str) -> dict[str, object] | None:
    """The file's pytest configuration, or None when it holds none."""
    name = os.path.basename(path)
    if name.endswith(".toml"):
        document = _toml(path)
        if name != "pyproject.toml":
            table = document.get("pytest")
            return table if isinstance(table, dict) else {}
        tool = document.get("tool", {})
        section = tool.get("pytest") if isinstance(tool, dict) else None
        if not isinstance(section, dict):
            return None
        options = section.get("ini_options", section)
        return options if isinstance(options, dict) else None
    import configparser

    parser = configparser.RawConfigParser(strict=False)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as err:
        raise _Unsure(str(err)) from err
    section = "tool:pytest" if name == "setup.cfg" else "pytest"
    if parser.has_section(section):
        return dict(parser.items(section))
    return {} if name in ("pytest.ini", ".pytest.ini") else None


def _tool_netaudit(pyproject: str) -> dict[str, object]:
    if not os.path.isfile(pyproject):
        return {}
    tool = _toml(pyproject).get("tool", {})
    table = tool.get("netaudit", {}) if isinstance(tool, dict) else {}
    return table if isinstance(table, dict) else {}


def _toml(path: str) -> dict[str, object]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python < 3.11 only
        import tomli as tomllib
    try:
        with open(path, encoding="utf-8") as document:
            return tomllib.loads(document.read())
    except (OSError, ValueError) as err:  # the plugin says what is wrong with it
        raise _Unsure(str(err)) from err


def _addopts(ini: Mapping[str, object]) -> list[str]:
    value = ini.get("addopts", [])
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise _Unsure("addopts")


def _plan(
    tokens: Sequence[str],
    project: Mapping[str, object],
    origin: str = "",
    keep: str | None = None,
    cwd: str | None = None,
) -> Plan | None:
    """``origin``: what asked for the audit if only ``enabled = true`` does (see Plan);
    ``keep``: the trace to keep that [tool.netaudit] names, which a flag overrides."""
    flag = opted_out = False
    names = project.get("names") is True
    io_uring = project.get("io_uring", Plan._field_defaults["io_uring"])
    io_uring_given = "io_uring" in project
    block = project.get("block") is True
    block_errno = project.get("block_errno", "EPERM")
    for i, token in enumerate(tokens):
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        option, _, value = token.partition("=")
        if token in _NO_RUN:
            return None
        if token == "--netaudit":
            flag = True
        elif (
            token == "--no-netaudit"
            or token in ("-pno:netaudit", "-p=no:netaudit")
            or (token == "-p" and following == "no:netaudit")
        ):
            opted_out = True
        elif token == "--netaudit-names":
            names = True
        elif option == "--netaudit-io-uring":
            io_uring = value or following
            io_uring_given = True
        elif option == "--netaudit-keep-trace" and (value or following):
            keep = _resolve(cwd or os.getcwd(), value or following)  # as the plugin does
        elif token == "--netaudit-block":
            block = True
        elif option == "--netaudit-block-errno":
            block_errno = value or following
    if opted_out or not (flag or project.get("enabled") is True):
        return None
    if io_uring not in ("report", "deny") or block_errno not in _BLOCK_ERRNOS:
        raise _Unsure("io_uring")  # the plugin says what is wrong with it
    if block and io_uring != "deny" and io_uring_given:
        raise _Unsure("block mode with io_uring report")  # the plugin refuses it
    return Plan(
        names=names,
        io_uring="deny" if block else str(io_uring),
        lenient="" if flag else origin,
        keep_trace=keep,
        block=block,
        block_errno=str(block_errno),
    )


def _with_allowlist(
    plan: Plan, tokens: Sequence[str], pyproject: str | None, cwd: str, rootdir: str | None
) -> Plan:
    """The allowlist the plugin will resolve, resolved by the same code (netaudit.settings:
    imported only for block mode, which judges calls before the session starts)."""
    from pathlib import Path

    from netaudit.errors import ConfigError
    from netaudit.settings import ProjectConfig, load_project_config, resolve_allowlist

    flag = None
    for i, token in enumerate(tokens):
        option, sep, value = token.partition("=")
        if option == "--netaudit-allowlist":
            flag = value if sep else (tokens[i + 1] if i + 1 < len(tokens) else None)
    try:
        config = load_project_config(Path(pyproject)) if pyproject else ProjectConfig()
        root = Path(rootdir) if rootdir is not None else None
        path = resolve_allowlist(flag, config, Path(cwd), root).path
    except ConfigError as err:
        raise _Unsure(str(err)) from err  # the plugin says what is wrong with it
    return plan._replace(allowlist=None if path is None else str(path))


def _supervise(argv: Sequence[str], plan: Plan) -> None:
    """Runs the same command under strace and exits with the session's status. Whatever
    happens, this process never goes on to run pytest itself, untraced.

    Where strace cannot trace and the plan is lenient, the command is run again unaudited
    instead (an exec, with ENV_UNAUDITED: a fresh interpreter, in which no module of netaudit
    was imported before pytest could mark it for assertion rewriting).
    """
    import contextlib  # here: launch imports it anyway, a process the hook passes never does

    status = 3
    command = [sys.executable, *argv[1:]]
    unaudited = False
    try:
        from netaudit.launch import run_session
        from netaudit.supervisor import BlockPlan

        found = run_session(
            command,
            cwd=os.getcwd(),
            env=os.environ,
            names=plan.names,
            io_uring=plan.io_uring,
            lenient=plan.lenient,
            keep_trace=plan.keep_trace,
            block=BlockPlan(plan.block_errno, plan.allowlist) if plan.block else None,
        )
        unaudited = found is None
        status = 3 if found is None else found
    except KeyboardInterrupt:
        status = 130
    except BaseException as exc:
        print(f"netaudit: error: the supervisor failed: {exc!r}", file=sys.stderr)
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        if unaudited:
            os.environ[ENV_UNAUDITED] = "1"
            with contextlib.suppress(OSError):
                os.execv(sys.executable, command)
        os._exit(status)
