"""How a run ended, for the audit: clean, violations, or incomplete; and why.

Written once for every place that judges a run: the command line (``netaudit run``,
``analyze``), the plugin's session and the supervisor's account of what a session did after
its own report. Each maps the kind to its own exit status.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .audit import judge
from .errors import AllowlistError
from .model import AuditResult, Destination
from .policy import policies
from .protocol import RunAudit
from .rules import Allowlist


class Kind(str, enum.Enum):
    CLEAN = "clean"
    VIOLATIONS = "violations"
    #: The audit could not be completed: a problem with the trace, or a finding (io_uring...).
    INCOMPLETE = "incomplete"


@dataclass(frozen=True)
class Outcome:
    result: AuditResult
    #: Why the audit is incomplete besides the findings; "" when nothing went wrong.
    problem: str = ""

    @property
    def kind(self) -> Kind:
        if self.problem or self.result.findings:
            return Kind.INCOMPLETE
        return Kind.VIOLATIONS if self.result.violations else Kind.CLEAN

    def problem_lines(self) -> list[str]:
        """What made the audit incomplete, one line each, as every front end prints it."""
        from .render.text import findings_lines

        lines = [f"netaudit: audit incomplete: {self.problem}"] if self.problem else []
        return lines + findings_lines(self.result.findings)


def judge_run(
    audit: RunAudit,
    allowlist: Allowlist,
    where: Callable[[Iterable[Destination]], Iterable[Destination]] | None = None,
) -> Outcome:
    """The run's part of the trace judged with its allowlist and its tests' own markers.

    ``where`` adds what the run knows that the trace does not (the Python lines behind calls).
    """
    problem = audit.problem
    try:
        tests = policies(audit.policies, dict(audit.locations))
    except AllowlistError as err:  # checked where the test ran: only a bug gets here
        problem = problem or f"a test's netaudit marker cannot be read: {err}"
        tests = {}
    destinations: Iterable[Destination] = audit.destinations
    if where is not None:
        destinations = where(destinations)
    result = AuditResult(judge(destinations, allowlist, tests), audit.findings, audit.stats)
    return Outcome(result, problem)
