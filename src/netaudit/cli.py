"""The ``netaudit`` command: parses arguments, calls the core, maps errors to exit codes.

This is the only module of the core that writes to the terminal or decides an exit status.
Standard output carries one thing at a time: a command's own output (``run``), or what
netaudit was asked for (a report, an allowlist, a schema); everything else goes to standard
error. The exit statuses are errors.ExitCode, tabled in docs/cli.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import io
import os
import platform
import shlex
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from . import BLOCK_ERRNO_CHOICES, IO_URING_CHOICES, triage, version
from .audit import audit_lines, audit_log
from .errors import ConfigError, ExitCode, InputError, NetauditError, TraceError
from .markers import SESSION
from .model import AuditResult, RunInfo
from .render import github, text
from .render import json as json_report
from .rules import DEFAULT, Allowlist, Rule
from .settings import Settings, resolve, write_report
from .trace import TracedRun, Tracer, find_tracer, tampered, traced_syscalls

#: What `--report -` names: the JSON report on standard output.
STDOUT = "-"


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.handler in (_run, _baseline):
        args.cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not args.cmd and args.handler is _run:
            parser.error("run needs a command: netaudit run [OPTIONS] -- CMD...")
        if args.handler is _baseline and bool(args.cmd) == bool(args.reports):
            parser.error(
                "baseline needs reports or a command (one of them): "
                "netaudit baseline --from REPORT... | netaudit baseline -- CMD..."
            )
    try:
        code: int = args.handler(args)
    except NetauditError as err:
        print(f"netaudit: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("netaudit: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    return code


class _Parser(argparse.ArgumentParser):
    """argparse's own usage errors exit 2; netaudit's exit 4 (ExitCode.USAGE), as pytest's."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


_EXITS = (
    "Exit status: 0 clean, 1 violations, 3 incomplete audit, 4 bad usage or input "
    "(the table: docs/cli.md)."
)
_COMMAND_EXITS = (
    "Exit status: 3 incomplete audit, 1 violations, else the command's own status when it "
    "failed (printed: 'netaudit: the command exited with N'), else 0; 4 bad usage or input, "
    "127/126 the command cannot be run."
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="netaudit",
        description="Audit the network egress of a command under strace against an allowlist.",
        epilog=_EXITS,
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help="one of these (netaudit COMMAND --help: its options)",
    )

    run = commands.add_parser(
        "run",
        help="run a command under strace and audit its egress",
        description="Run CMD under strace and audit every outbound call of its process tree. "
        "The report goes to standard error: standard output is CMD's, unless the JSON report "
        "goes there (--format json, --report -), and CMD's output then goes to standard "
        f"error. {_COMMAND_EXITS}",
    )
    _add_report_options(run, printed="standard error")
    run.add_argument(
        "--names",
        action="store_true",
        default=None,
        help="read DNS answers to name destinations and allow 'host' rules (slower when "
        "the command sends and receives a lot; see docs/performance.md)",
    )
    run.add_argument(
        "--io-uring",
        choices=IO_URING_CHOICES,
        default=None,
        help="deny: io_uring_setup fails with ENOSYS, so programs fall back to plain sockets; "
        "report: io_uring use fails the audit (its connects are invisible to strace) "
        "(default: [tool.netaudit] io_uring, else deny)",
    )
    run.add_argument(
        "--keep-trace",
        metavar="PATH",
        help="keep strace's log in PATH, to replay it with 'netaudit analyze PATH' "
        "(default: [tool.netaudit] keep_trace, else the log is removed)",
    )
    run.add_argument(
        "--block",
        action="store_true",
        default=None,
        help="block mode: every connect, and every send to an address, that the allowlist does "
        "not allow fails before anything is sent (with --block-errno), and is reported "
        "BLOCKED; io_uring is refused (default: [tool.netaudit] block)",
    )
    run.add_argument(
        "--block-errno",
        choices=BLOCK_ERRNO_CHOICES,
        default=None,
        help="how a blocked call fails (default: [tool.netaudit] block_errno, else EPERM: a "
        "PermissionError that no retry loop spins on)",
    )
    _add_command_options(run)
    run.set_defaults(handler=_run)

    analyze = commands.add_parser(
        "analyze",
        help="audit an existing strace log",
        description="Judge a strace log (with or without -f, -o or stderr, any timestamp form, "
        f"-y/-yy, -x). The report goes to standard output. {_EXITS}",
    )
    analyze.add_argument("log", metavar="LOG", help="the strace output to judge ('-': stdin)")
    _add_report_options(analyze, printed="standard output")
    analyze.set_defaults(handler=_analyze)

    check = commands.add_parser(
        "check",
        help="validate an allowlist and list its rules",
        description="Validate an allowlist (resolved as for `run` when none is given) and list "
        "its rules with the built-ins. Exit status: 0 valid, 4 invalid.",
    )
    check.add_argument(
        "allowlist",
        nargs="?",
        metavar="ALLOWLIST",
        help="the allowlist YAML (default: resolved as for run: [tool.netaudit] allowlist, "
        "then netaudit.yaml in the current directory, then the built-ins)",
    )
    check.set_defaults(handler=_check)

    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of the allowlist file (for editors)",
        description="Print the JSON Schema of the allowlist file, for editors that validate "
        "and complete YAML (docs/allowlist.md, 'Editor support'). Exit status: 0.",
    )
    schema.set_defaults(handler=_schema)

    triage = commands.add_parser(
        "triage",
        help="merge saved JSON reports into one list of undeclared destinations",
        description="Merge JSON reports (netaudit run --report, pytest --netaudit-report) into "
        "one reviewable list of undeclared destinations, with their evidence, as allowlist "
        "YAML (evidence in comments) or JSON, on standard output. Exit status: 0 nothing "
        "undeclared, 1 undeclared destinations, 4 an unreadable report, an unknown schema "
        "version or an invalid allowlist.",
    )
    triage.add_argument("reports", nargs="+", metavar="REPORT", help="JSON reports")
    _add_review_allowlist(triage, "default: each report's own verdicts")
    triage.add_argument(
        "--format",
        choices=("yaml", "json"),
        default="yaml",
        help="yaml: an allowlist to review, the evidence in comments (default); json: the "
        "same as a JSON document",
    )
    triage.set_defaults(handler=_triage)

    baseline = commands.add_parser(
        "baseline",
        help="write a starting allowlist from a run, every rule marked for review",
        description="Write an allowlist with one rule for each destination a run reached that "
        "the built-in rules (or --allowlist) do not allow, each marked for review. The run is "
        "saved reports (--from) or a command run under strace; the command's standard output "
        "goes to standard error while the allowlist goes to standard output. Exit status: 0 "
        "written, 4 bad usage or input; with a command, 3 for an incomplete audit, else the "
        "command's own status when it failed.",
    )
    baseline.add_argument(
        "--from", dest="reports", action="append", default=[], metavar="REPORT",
        help="a JSON report of the run (repeat for several)",
    )  # fmt: skip
    _add_review_allowlist(baseline, "default: the built-in rules only")
    baseline.add_argument(
        "-o", "--output", metavar="FILE", help="write the allowlist to FILE (default: stdout)"
    )
    baseline.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    _add_command_options(baseline)
    baseline.set_defaults(handler=_baseline)
    return parser


class _Version(argparse.Action):
    """--version, with the version looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"netaudit {version()}")
        parser.exit()


def _add_report_options(parser: argparse.ArgumentParser, printed: str) -> None:
    parser.add_argument("--allowlist", metavar="FILE", help="the allowlist YAML")
    parser.add_argument(
        "--verbose", action="store_true", default=None, help="show every destination"
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help=f"text: the report for people, on {printed} (default); json: the JSON report "
        "instead, on standard output",
    )
    parser.add_argument(
        "--report",
        metavar="FILE",
        help="also write the JSON report to FILE; '-' writes it to standard output (the text "
        "report then goes to standard error)",
    )
    parser.add_argument(
        "--suggest-rules",
        action="store_true",
        default=None,
        help="print allowlist rules that would allow what was violated (with the text report)",
    )


def _add_command_options(parser: argparse.ArgumentParser) -> None:
    """The command to run under strace, and which strace: for `run` and `baseline -- CMD`."""
    parser.add_argument("--strace", metavar="PATH", help="the strace to use (default: from PATH)")
    parser.add_argument(
        "cmd", nargs=argparse.REMAINDER, metavar="-- CMD...", help="the command to run, after --"
    )


def _add_review_allowlist(parser: argparse.ArgumentParser, note: str) -> None:
    """--allowlist for `triage` and `baseline`, which list only what it does not allow."""
    parser.add_argument(
        "--allowlist", metavar="FILE", help=f"leave out what this allowlist allows ({note})"
    )


def _run(args: argparse.Namespace) -> int:
    command: list[str] = args.cmd
    settings = _settings(args)
    allowlist = settings.allowlist.load()
    tracer = find_tracer(args.strace)
    for warning in (*tracer.warnings, allowlist.unnamed_hosts(settings.names)):
        if warning:
            print(f"netaudit: warning: {warning}", file=sys.stderr)
    out = _Output.of(args, people=sys.stderr)
    started = _now()
    if settings.block:
        status, result, traced, problem = _run_blocking(tracer, settings, command, out)
    else:
        with (
            _sigterm_exits(),
            TracedRun(
                tracer, names=settings.names, io_uring=settings.io_uring, keep=settings.keep_trace
            ) as traced,
        ):
            with _command_stdout_to_stderr(out.json_to_stdout):
                status = traced.run(command)
            result = audit_log(traced.log_path, allowlist)
            for warning in traced.warnings:
                print(f"netaudit: warning: {warning}", file=sys.stderr)
        problem = tampered(result.stats.foreign)
    leftovers = traced.leftover_pids
    if traced.kept is not None:
        kept = shlex.quote(traced.kept)
        print(f"netaudit: the trace is kept; replay it with: netaudit analyze {kept}",
              file=sys.stderr)  # fmt: skip
    elif traced.keep_error:
        print(f"netaudit: warning: {traced.keep_error}", file=sys.stderr)
    if not result.stats.looks_like_strace and traced.interrupted is None:
        # Every traced run logs at least its first exec, unless it was stopped before that.
        raise TraceError("strace wrote no trace: the audit is incomplete")
    if leftovers:
        pids = ", ".join(str(pid) for pid in leftovers)
        print(
            f"netaudit: the command left processes running; they were ended: {pids}",
            file=sys.stderr,
        )
    if traced.interrupted is not None:
        print(
            f"netaudit: the run was interrupted ({signal.Signals(traced.interrupted).name}); "
            "the report covers what ran until then",
            file=sys.stderr,
        )
    if problem:
        print(f"netaudit: audit incomplete: {problem}", file=sys.stderr)
    run = _run_info(started, settings, command=tuple(command), strace=tracer.version, status=status)
    _github(result, out.people)
    verdict: int = _verdict(result, incomplete=bool(problem))
    try:
        _emit(out, settings, result, run)
    except ConfigError as err:  # the report file: it must not hide how the command ended
        print(f"netaudit: error: {err}", file=sys.stderr)
        verdict = verdict or err.exit_code
    if traced.interrupted is not None and status:
        verdict = ExitCode.OK  # an interruption's status is never replaced, as pytest's 2
    return _with_command_status(verdict, status)


def _run_blocking(
    tracer: Tracer, settings: Settings, command: list[str], out: _Output
) -> tuple[int, AuditResult, TracedRun, str]:
    """``run --block``: the command under the block-mode filter, each call judged as it is
    made by a supervisor that follows the trace (what it refused is in the trace it keeps)."""
    from .outcome import judge_run
    from .supervisor import BlockPlan, Supervisor

    path = settings.allowlist.path
    plan = BlockPlan(settings.block_errno, None if path is None else str(path))
    supervisor = Supervisor(
        tracer,
        "",
        names=settings.names,
        io_uring=settings.io_uring,
        block=plan,
        keep_trace=settings.keep_trace,
    )
    with _sigterm_exits(), _command_stdout_to_stderr(out.json_to_stdout):
        status = supervisor.run(command, env=os.environ, cwd=os.getcwd())
    for warning in (*supervisor.traced.warnings, *supervisor.warnings):
        print(f"netaudit: warning: {warning}", file=sys.stderr)
    audit, _ = supervisor.leftovers()
    outcome = judge_run(audit, settings.allowlist.load())
    return status, outcome.result, supervisor.traced, outcome.problem


def _verdict(result: AuditResult, incomplete: bool = False) -> ExitCode:
    """An incomplete audit outweighs violations, as under pytest --netaudit."""
    if incomplete or result.findings:
        return ExitCode.INCOMPLETE
    return ExitCode.VIOLATIONS if result.violations else ExitCode.OK


def _with_command_status(verdict: int, status: int) -> int:
    """netaudit's own verdict first; the command's failing status when there is none.

    The command's status is always said, so that a 1 or 3 that came from the command, or a
    command's failure hidden by a verdict, can be told from the output alone.
    """
    if status:
        said = f"netaudit: the command exited with {status}{_signal_note(status)}"
        if verdict:
            said += f"; netaudit exits {verdict} {_BECAUSE[ExitCode(verdict)]}"
        print(said, file=sys.stderr)
    return verdict or status


_BECAUSE = {
    ExitCode.VIOLATIONS: "for the violations",
    ExitCode.INCOMPLETE: "as the audit is incomplete",
    ExitCode.USAGE: "for the error above",
}


def _signal_note(status: int) -> str:
    """' (killed by SIGKILL)' for 137, as a shell reports a death by signal."""
    try:
        return f" (killed by {signal.Signals(status - 128).name})" if status > 128 else ""
    except ValueError:
        return ""


def _analyze(args: argparse.Namespace) -> int:
    settings = _settings(args)
    allowlist = settings.allowlist.load()
    out = _Output.of(args, people=sys.stdout)
    try:
        if args.log == "-":
            stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape")
            result, log = audit_lines(stdin, allowlist), "<stdin>"
        else:
            result, log = audit_log(args.log, allowlist), str(Path(args.log).resolve())
    except TraceError as err:  # the log is the user's input here, not a trace of ours
        raise InputError(str(err)) from err
    if not result.stats.looks_like_strace:  # a wrong file must not pass as a clean trace
        what = "is empty" if result.stats.lines == 0 else "has no line in a form strace writes"
        raise InputError(f"{log} {what}: nothing was judged")
    run = _run_info(_now(), settings, log=log)
    _emit(out, settings, result, run)
    _github(result, out.people)
    return _verdict(result)


def _check(args: argparse.Namespace) -> int:
    choice = resolve(Path.cwd(), allowlist=args.allowlist).allowlist
    allowlist = choice.load()
    print(f"{choice.describe()}: valid")
    print(text.rules_table(allowlist))
    unreviewed = [rule for rule in allowlist.rules if rule.name.startswith(triage.REVIEW_PREFIX)]
    if unreviewed:
        first = unreviewed[0]
        print(
            f"netaudit: warning: {len(unreviewed)} rule(s) of a baseline not reviewed yet "
            f"(the first at {first.source}:{first.line}): keep each only if its destination "
            f"is expected, then drop {triage.REVIEW_PREFIX.strip()!r} from its name",
            file=sys.stderr,
        )
    for rule, scope, folder in _scopes_naming_nothing(allowlist, choice.path):
        print(
            f"netaudit: warning: {rule.source}:{rule.line}: tests: {scope!r} names no file or "
            f"folder under {folder} (nodeids are relative to pytest's rootdir): it would match "
            "no test",
            file=sys.stderr,
        )
    return ExitCode.OK


def _scopes_naming_nothing(allowlist: Allowlist, path: Path | None) -> list[tuple[Rule, str, Path]]:
    """``tests`` scopes written as a path (no wildcard) whose file or folder is neither beside
    the allowlist nor in the current directory: a typo that pytest would never match."""
    folders = [Path.cwd()] + ([path.parent] if path is not None else [])
    found = []
    for rule in allowlist.scoped():
        for scope in rule.tests:
            named = scope.partition("::")[0].rstrip("/")
            if not named or scope == SESSION or any(c in named for c in "*?["):
                continue
            if not any((folder / named).exists() for folder in folders):
                found.append((rule, scope, folders[-1]))
    return found


def _schema(args: argparse.Namespace) -> int:
    from .allowlist import schema

    sys.stdout.write(schema())
    return ExitCode.OK


def _github(result: AuditResult, people: TextIO) -> None:
    """Under GitHub Actions: annotations with the text report (the runner reads workflow
    commands on standard output and standard error alike, and standard output may hold the
    command's output or the JSON report), and the Markdown summary appended to
    $GITHUB_STEP_SUMMARY."""
    if not github.enabled(os.environ):
        return
    people.write(github.error_commands(result))
    people.flush()
    path = os.environ.get(github.ENV_SUMMARY)
    if path:
        try:
            with open(path, "a", encoding="utf-8") as summary:
                summary.write(github.summary(result))
        except OSError as err:
            print(f"netaudit: warning: cannot write {path}: {err.strerror}", file=sys.stderr)


def _triage(args: argparse.Namespace) -> int:
    allowlist = None
    if args.allowlist is not None:
        allowlist = resolve(Path.cwd(), allowlist=args.allowlist).allowlist.load()
    reports = [triage.load_report(path) for path in args.reports]
    found = triage.undeclared(reports, allowlist)
    paths = [report.path for report in reports]
    if args.format == "json":
        triage.write_json(found, paths, sys.stdout)
    else:
        header = triage.triage_header(found, paths)
        triage.write_yaml(found, len(reports), header, sys.stdout)
    return ExitCode.VIOLATIONS if found else ExitCode.OK


def _baseline(args: argparse.Namespace) -> int:
    """From reports, or from a command traced here as ``netaudit run`` would.

    Only the built-ins, or --allowlist, leave destinations out: a netaudit.yaml found by the
    usual resolution may be the very file being rewritten with --force, which would empty it.
    """
    allowlist = DEFAULT
    if args.allowlist is not None:
        allowlist = resolve(Path.cwd(), allowlist=args.allowlist).allowlist.load()
    output = Path(args.output) if args.output is not None else None
    if output is not None and output.exists() and not args.force:
        raise ConfigError("exists; name a new file, or add --force to overwrite it", str(output))
    status, verdict = 0, ExitCode.OK
    if args.reports:
        reports = [triage.load_report(path) for path in args.reports]
        source = ", ".join(report.path for report in reports)
    else:
        tracer = find_tracer(args.strace)
        with _sigterm_exits(), TracedRun(tracer) as traced:
            with _command_stdout_to_stderr(output is None):
                status = traced.run(args.cmd)
            result = audit_log(traced.log_path, allowlist)
        if not result.stats.looks_like_strace:
            raise TraceError("strace wrote no trace: the audit is incomplete")
        for finding in result.findings:
            print(f"netaudit: {finding}", file=sys.stderr)
        if result.findings:
            verdict = ExitCode.INCOMPLETE
        reports = [triage.Report("<command>", result.destinations)]
        source = shlex.join(args.cmd)
    found = triage.undeclared(reports, allowlist)
    header = triage.baseline_header(source)
    if output is None:
        triage.write_yaml(found, len(reports), header, sys.stdout, review=True)
    else:
        try:
            with open(output, "w", encoding="utf-8") as file:
                triage.write_yaml(found, len(reports), header, file, review=True)
        except OSError as err:
            raise ConfigError(f"cannot write the baseline: {err.strerror}", str(output)) from err
        print(f"netaudit: wrote {output}: {len(found)} rules to review", file=sys.stderr)
    if status:
        print("netaudit: the baseline covers what ran until the command failed", file=sys.stderr)
    return _with_command_status(verdict, status)


def _settings(args: argparse.Namespace) -> Settings:
    settings = resolve(
        Path.cwd(),
        allowlist=args.allowlist,
        verbose=args.verbose,
        report=None if args.report == STDOUT else args.report,
        suggest_rules=args.suggest_rules,
        names=getattr(args, "names", None),
        io_uring=getattr(args, "io_uring", None),
        block=getattr(args, "block", None),
        block_errno=getattr(args, "block_errno", None),
        keep_trace=getattr(args, "keep_trace", None),
    )
    if args.report == STDOUT:  # the flag wins over a report file named in pyproject.toml
        settings = dataclasses.replace(settings, report=None, report_setting=None)
    settings.check_report()  # known before the run, not after it
    return settings


@dataclasses.dataclass(frozen=True)
class _Output:
    """Where each part of a report goes."""

    #: The text report, suggested rules and annotations: what people read.
    people: TextIO
    #: The text report is printed (--format text).
    text: bool
    #: The JSON report is printed on standard output (--format json, or --report -).
    json_to_stdout: bool

    @classmethod
    def of(cls, args: argparse.Namespace, people: TextIO) -> _Output:
        """``people``: the text report's stream when standard output is not taken by the
        JSON report (run: standard error, as standard output is the command's)."""
        json_to_stdout = args.format == "json" or args.report == STDOUT
        return cls(sys.stderr if json_to_stdout else people, args.format == "text", json_to_stdout)


def _emit(out: _Output, settings: Settings, result: AuditResult, run: RunInfo) -> None:
    """Prints the report, then writes the JSON file; printing comes first so that a failed
    write (a disk that filled up meanwhile) still leaves the findings on screen."""
    if out.text:
        where: object = settings.report
        if where is None and out.json_to_stdout:
            where = "standard output"
        more = text.full_list(where, "--report")
        out.people.write(text.report(result, settings.verbose, more=more) + "\n")
    if settings.suggest_rules and result.violations:
        from .render.suggest import suggest_rules  # loads PyYAML, needed only here

        out.people.write("netaudit: rules that would allow the violations above:\n")
        out.people.write(suggest_rules(result.violations))
    out.people.flush()
    if out.json_to_stdout:
        json_report.write_json(result, run, sys.stdout)
        sys.stdout.flush()
    if settings.report is not None:
        try:
            write_report(settings.report, lambda file: json_report.write_json(result, run, file))
        except OSError as err:
            raise ConfigError(
                f"cannot write the report: {err.strerror}", str(settings.report)
            ) from err


@contextlib.contextmanager
def _command_stdout_to_stderr(move: bool) -> Iterator[None]:
    """While the traced command runs, its standard output goes to standard error, so that
    netaudit's own standard output carries only what netaudit writes there (the JSON report,
    the allowlist). Nothing moves when either stream is closed."""
    saved: int | None = None
    if move:
        sys.stdout.flush()
        with contextlib.suppress(OSError):
            saved = os.dup(1)
            os.dup2(2, 1)
    try:
        yield
    finally:
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def _run_info(
    started: str,
    settings: Settings,
    *,
    command: tuple[str, ...] = (),
    log: str | None = None,
    strace: str | None = None,
    status: int | None = None,
) -> RunInfo:
    return RunInfo(
        started=started,
        host=platform.node(),
        netaudit_version=version(),
        command=command,
        log=log,
        allowlist=None if settings.allowlist.path is None else str(settings.allowlist.path),
        strace_version=strace,
        syscalls=traced_syscalls(settings.names, settings.block) if command else (),
        exit_status=status,
    )


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM outside the traced command unwinds like Ctrl-C, so the temp dir is removed."""

    def exit_now(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
