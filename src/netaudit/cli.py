"""The ``netaudit`` command: parses arguments, calls the core, maps errors to exit codes.

This is the only module of the core that writes to the terminal or decides an exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import os
import platform
import shlex
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from . import triage, version
from .audit import audit_lines, audit_log
from .errors import EXIT_INCOMPLETE, EXIT_VIOLATIONS, ConfigError, NetauditError, TraceError
from .model import AuditResult, RunInfo
from .render import github, text
from .render import json as json_report
from .rules import DEFAULT
from .settings import Settings, resolve
from .trace import IO_URING_CHOICES, TracedRun, find_tracer, tampered, traced_syscalls

#: `netaudit analyze` and `netaudit check`: exit codes as documented in docs/cli.md.
EXIT_CLEAN = 0
EXIT_FOUND = 1
EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = _parser()
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
        # A traced command's errors keep run's exit codes; input errors elsewhere are 2.
        return err.exit_code if getattr(args, "cmd", None) else EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("netaudit: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netaudit",
        description="Audit the network egress of a command under strace against an allowlist.",
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run a command under strace and audit its egress",
        description="Run CMD under strace and audit every outbound call of its process tree. "
        "Exit: CMD's own status when it failed, else 100 for violations, 101 for an "
        "incomplete audit, 102 when strace cannot trace here, 103 for an invalid allowlist.",
    )
    _add_report_options(run)
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
        help="report: io_uring use fails the audit (its connects are invisible to strace); "
        "deny: io_uring_setup fails with ENOSYS, so programs fall back to plain sockets "
        "(default: [tool.netaudit] io_uring, else report)",
    )
    run.add_argument(
        "--keep-trace",
        metavar="PATH",
        help="keep strace's log in PATH, to replay it with 'netaudit analyze PATH' "
        "(default: [tool.netaudit] keep_trace, else the log is removed)",
    )
    _add_command_options(run)
    run.set_defaults(handler=_run)

    analyze = commands.add_parser(
        "analyze",
        help="audit an existing strace log",
        description="Judge a strace log (with or without -f, -o or stderr, any timestamp form, "
        "-y/-yy, -x). Exit: 0 clean, 1 violations or an incomplete audit, 2 bad input.",
    )
    analyze.add_argument("log", metavar="LOG", help="the strace output to judge ('-': stdin)")
    _add_report_options(analyze)
    analyze.set_defaults(handler=_analyze)

    check = commands.add_parser(
        "check",
        help="validate an allowlist and list its rules",
        description="Validate an allowlist (resolved as for `run` when none is given) and list "
        "its rules with the built-ins. Exit: 0 valid, 2 invalid.",
    )
    check.add_argument("allowlist", nargs="?", metavar="ALLOWLIST")
    check.set_defaults(handler=_check)

    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of the allowlist file (for editors)",
        description="Print the JSON Schema of the allowlist file, for editors that validate "
        "and complete YAML (docs/allowlist.md, 'Editor support'). Exit: 0.",
    )
    schema.set_defaults(handler=_schema)

    triage = commands.add_parser(
        "triage",
        help="merge saved JSON reports into one list of undeclared destinations",
        description="Merge JSON reports (netaudit run --report, pytest --netaudit-report) into "
        "one reviewable list of undeclared destinations, with their evidence, as allowlist "
        "YAML (evidence in comments) or JSON. Exit: 0 nothing undeclared, 1 undeclared "
        "destinations, 2 an unreadable report or an unknown schema version.",
    )
    triage.add_argument("reports", nargs="+", metavar="REPORT", help="JSON reports")
    _add_review_allowlist(triage, "default: each report's own verdicts")
    triage.add_argument("--format", choices=("yaml", "json"), default="yaml")
    triage.set_defaults(handler=_triage)

    baseline = commands.add_parser(
        "baseline",
        help="write a starting allowlist from a run, every rule marked for review",
        description="Write an allowlist with one rule for each destination a run reached that "
        "the built-in rules (or --allowlist) do not allow, each marked for review. The run is "
        "saved reports (--from) or a command run under strace. Exit: 0 written, 2 bad input; "
        "with a command, its own status when it failed, 101 for an incomplete audit.",
    )
    baseline.add_argument(
        "--from", dest="reports", action="append", default=[], metavar="REPORT",
        help="a JSON report of the run (repeat for several)",
    )  # fmt: skip
    _add_review_allowlist(baseline, "default: resolved as for run")
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


def _add_report_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allowlist", metavar="FILE", help="the allowlist YAML")
    parser.add_argument(
        "--verbose", action="store_true", default=None, help="show every destination"
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--report", metavar="FILE", help="also write the JSON report to FILE")
    parser.add_argument(
        "--suggest-rules",
        action="store_true",
        default=None,
        help="print allowlist rules that would allow what was violated",
    )


def _add_command_options(parser: argparse.ArgumentParser) -> None:
    """The command to run under strace, and which strace: for `run` and `baseline -- CMD`."""
    parser.add_argument("--strace", metavar="PATH", help="the strace to use (default: from PATH)")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD...", help="the command")


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
    started = _now()
    with (
        _sigterm_exits(),
        TracedRun(
            tracer, names=settings.names, io_uring=settings.io_uring, keep=settings.keep_trace
        ) as traced,
    ):
        status = traced.run(command)
        result = audit_log(traced.log_path, allowlist)
        leftovers = traced.leftover_pids
        for warning in traced.warnings:
            print(f"netaudit: warning: {warning}", file=sys.stderr)
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
    problem = tampered(result.stats.foreign)
    if problem:
        print(f"netaudit: audit incomplete: {problem}", file=sys.stderr)
    run = _run_info(started, settings, command=tuple(command), strace=tracer.version, status=status)
    _github(result)
    try:
        _emit(args.format, settings, result, run, sys.stderr)
    except ConfigError as err:  # the report file: it must not hide how the command ended
        print(f"netaudit: error: {err}", file=sys.stderr)
        return status or err.exit_code
    if status != 0:
        return status
    if result.findings or problem:
        return EXIT_INCOMPLETE
    return EXIT_VIOLATIONS if result.violations else 0


def _analyze(args: argparse.Namespace) -> int:
    settings = _settings(args)
    allowlist = settings.allowlist.load()
    if args.log == "-":
        stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape")
        result, log = audit_lines(stdin, allowlist), "<stdin>"
    else:
        result, log = audit_log(args.log, allowlist), str(Path(args.log).resolve())
    if not result.stats.looks_like_strace:  # a wrong file must not pass as a clean trace
        what = "is empty" if result.stats.lines == 0 else "has no line in a form strace writes"
        raise TraceError(f"{log} {what}: nothing was judged")
    run = _run_info(_now(), settings, log=log)
    _emit(args.format, settings, result, run, sys.stdout)
    _github(result)
    return EXIT_CLEAN if result.clean else EXIT_FOUND


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
    return EXIT_CLEAN


def _schema(args: argparse.Namespace) -> int:
    from .allowlist import schema

    sys.stdout.write(schema())
    return EXIT_CLEAN


def _github(result: AuditResult) -> None:
    """Under GitHub Actions: annotations on stdout, where the runner reads workflow commands,
    and the Markdown summary appended to $GITHUB_STEP_SUMMARY."""
    if not github.enabled(os.environ):
        return
    sys.stdout.write(github.error_commands(result))
    sys.stdout.flush()
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
    return EXIT_FOUND if found else EXIT_CLEAN


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
    status = 0
    if args.reports:
        reports = [triage.load_report(path) for path in args.reports]
        source = ", ".join(report.path for report in reports)
    else:
        tracer = find_tracer(args.strace)
        with _sigterm_exits(), TracedRun(tracer) as traced:
            status = traced.run(args.cmd)
            result = audit_log(traced.log_path, allowlist)
        if not result.stats.looks_like_strace:
            raise TraceError("strace wrote no trace: the audit is incomplete")
        for finding in result.findings:
            print(f"netaudit: {finding}", file=sys.stderr)
        if result.findings:
            status = status or EXIT_INCOMPLETE
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
        print(f"netaudit: the command failed (status {status}); the baseline covers what ran",
              file=sys.stderr)  # fmt: skip
    return status


def _settings(args: argparse.Namespace) -> Settings:
    settings = resolve(
        Path.cwd(),
        allowlist=args.allowlist,
        verbose=args.verbose,
        report=args.report,
        suggest_rules=args.suggest_rules,
        names=getattr(args, "names", None),
        io_uring=getattr(args, "io_uring", None),
        keep_trace=getattr(args, "keep_trace", None),
    )
    settings.check_report()  # known before the run, not after it
    return settings


def _emit(fmt: str, settings: Settings, result: AuditResult, run: RunInfo, out: TextIO) -> None:
    """Prints the report, then writes the JSON file; printing comes first so that a failed
    write (a disk that filled up meanwhile) still leaves the findings on screen."""
    if fmt == "json":
        json_report.write_json(result, run, out)
    else:
        more = text.full_list(settings.report, "--report")
        out.write(text.report(result, settings.verbose, more=more) + "\n")
    if settings.suggest_rules and result.violations:
        from .render.suggest import suggest_rules  # loads PyYAML, needed only here

        out.write("netaudit: rules that would allow the violations above:\n")
        out.write(suggest_rules(result.violations))
    out.flush()
    if settings.report is not None:
        try:
            with open(settings.report, "w", encoding="utf-8") as report:
                json_report.write_json(result, run, report)
        except OSError as err:
            raise ConfigError(
                f"cannot write the report: {err.strerror}", str(settings.report)
            ) from err


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
        syscalls=traced_syscalls(settings.names) if command else (),
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
