"""Judging and reporting: in the process that reports for a run (the session, or an xdist
controller), at the session's end, through pytest's terminal reporter."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from ..markers import SESSION, MarkVerb
from ..status import INTERNAL_ERROR, with_outcome, worse
from . import statsline
from .boundaries import Boundaries
from .link import Link
from .where import WhereRecorder

if TYPE_CHECKING:
    from ..model import Destination
    from ..outcome import Outcome
    from ..protocol import RunAudit
    from ..rules import Allowlist
    from ..settings import Settings


class Reporter:
    """Registered in the process that reports for the run."""

    def __init__(
        self,
        config: pytest.Config,
        settings: Settings,
        allowlist: Allowlist,
        link: Link,
        where: WhereRecorder,
        boundaries: Boundaries,
    ) -> None:
        self.config = config
        self.settings = settings
        self.allowlist = allowlist
        self.link = link
        self.where = where
        self.boundaries = boundaries
        self.started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.audit: RunAudit | None = None
        self.outcome: Outcome | None = None
        #: Why no outcome could be had (the supervisor did not answer).
        self.problem = ""
        self.nameservers: frozenset[str] = frozenset()

    def pytest_report_header(self) -> list[str]:
        welcome = self.link.welcome
        mode = "seccomp-bpf" if welcome.seccomp_bpf else "plain ptrace (slower)"
        mode += ", DNS names" if self.settings.names else ""
        unnamed = self.allowlist.unnamed_hosts(self.settings.names)
        refused = f"calls the allowlist does not allow fail with {welcome.block_errno}"
        blocking = [f"netaudit: block mode: {refused}"] if welcome.block else []
        return [
            f"netaudit: auditing network egress; allowlist: {self.settings.allowlist.describe()}",
            f"netaudit: strace {welcome.strace_version} ({welcome.strace}, {mode})",
            *blocking,
        ] + ([f"netaudit: warning: {unnamed}"] if unnamed else [])

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Last, so that what other plugins do at the session's finish is in the report."""
        self.where.close()
        self.boundaries.mark(MarkVerb.FINISH)
        from ..outcome import judge_run  # judging is imported when there is a run to judge
        from ..render import github

        try:
            audit = self.audit = self.link.finish()
        except (OSError, ValueError, EOFError) as err:
            self.problem = f"the supervisor did not answer ({err})"
            session.exitstatus = worse(int(session.exitstatus), INTERNAL_ERROR)
            statsline.add(self.config, statsline.parts(None))
            return
        from .. import resolvers

        self.nameservers = resolvers.nameservers()
        outcome = judge_run(audit, self.allowlist, self._annotate)
        status = with_outcome(int(session.exitstatus), outcome.kind)
        if self.settings.report is not None:
            outcome = self._write_report(outcome, status)
        if github.enabled(os.environ):
            outcome = self._step_summary(outcome)
        self.outcome = outcome
        session.exitstatus = with_outcome(int(session.exitstatus), outcome.kind)
        statsline.add(self.config, statsline.parts(outcome))

    def _annotate(self, destinations: Iterable[Destination]) -> Iterable[Destination]:
        """What the run knows that the trace does not: which destinations are the system's
        resolver, and the Python lines behind the calls (and behind the lookups)."""
        from .. import resolvers

        return self.where.attach(resolvers.mark(destinations, self.nameservers))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        from ..outcome import Kind
        from ..render import github, text

        tr = terminalreporter
        if self.outcome is None:
            if self.problem:
                tr.write_line(f"netaudit: audit incomplete: {self.problem}", red=True, bold=True)
            return
        result = self.outcome.result
        for line in self.outcome.problem_lines():
            tr.write_line(line, red=True, bold=True)
        locations = self._locations()
        more = text.full_list(self.settings.report, "--netaudit-report")
        if self.settings.verbose:
            tr.write_line("")
            for line in text.verbose_table(result.destinations, locations, more=more).splitlines():
                tr.write_line(line)
        tr.write_line("")
        violated = self.outcome.kind is Kind.VIOLATIONS or bool(result.violations)
        explain = not self.settings.verbose
        block = text.violations_block(result, locations, explain_session=explain, more=more)
        for line in block.splitlines():
            header = line.startswith((text.BAR, "  netaudit:"))
            tr.write_line(line, red=violated and header, bold=header, green=not violated)
        summary = text.by_destination(result.destinations, self.settings.verbose, more)
        if summary:
            tr.write_line("")
            for line in summary.splitlines():
                tr.write_line(line)
        if github.enabled(os.environ):
            for line in github.error_commands(result, self._github_locations()).splitlines():
                tr.write_line(line)
        if self.audit is not None and self.allowlist.scoped():
            ran = [test for test, _ in self.audit.locations]
            unmatched = self.allowlist.unmatched_scopes([*ran, SESSION])
            for line in text.unmatched_scope_lines(unmatched, len(ran)):
                tr.write_line(line, yellow=True)
        if self.settings.suggest_rules and result.violations:
            from ..render.suggest import suggest_rules  # loads PyYAML, needed only here

            tr.write_line("")
            tr.write_line("netaudit: rules that would allow the violations above:")
            for line in suggest_rules(result.violations).splitlines():
                tr.write_line(line)

    def _locations(self) -> dict[str, str]:
        return dict(self.audit.locations) if self.audit is not None else {}

    def _github_locations(self) -> dict[str, str]:
        """Test locations relative to the checkout ($GITHUB_WORKSPACE), as annotations need."""
        locations = self._locations()
        workspace = os.environ.get("GITHUB_WORKSPACE")
        if not workspace:
            return locations
        root = self.config.rootpath
        return {test: os.path.relpath(root / where, workspace) for test, where in locations.items()}

    def _step_summary(self, outcome: Outcome) -> Outcome:
        from ..render import github

        path = os.environ.get(github.ENV_SUMMARY)
        if not path:
            return outcome
        try:
            with open(path, "a", encoding="utf-8") as summary:
                summary.write(github.summary(outcome.result, self._github_locations()))
        except OSError as err:
            return _failed(outcome, f"cannot write {path}: {err.strerror}")
        return outcome

    def _write_report(self, outcome: Outcome, status: int) -> Outcome:
        from .. import version
        from ..model import RunInfo
        from ..render import json as json_report
        from ..settings import write_report
        from ..trace import traced_syscalls

        assert self.settings.report is not None
        path = self.settings.allowlist.path
        welcome = self.link.welcome
        run = RunInfo(
            started=self.started,
            host=platform.node(),
            netaudit_version=version(),
            command=("pytest", *self.config.invocation_params.args),
            allowlist=None if path is None else str(path),
            strace_version=welcome.strace_version,
            syscalls=traced_syscalls(self.settings.names, self.settings.block),
            exit_status=status,
        )
        try:
            write_report(
                self.settings.report,
                lambda file: json_report.write_json(outcome.result, run, file, self._locations()),
            )
        except OSError as err:
            return _failed(
                outcome, f"cannot write the report {self.settings.report}: {err.strerror}"
            )
        return outcome


def _failed(outcome: Outcome, problem: str) -> Outcome:
    """The audit's own output could not be written: it is incomplete."""
    return replace(outcome, problem=outcome.problem or problem)
