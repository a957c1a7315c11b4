"""GitHub Actions output: ``::error`` workflow commands (annotations on the test's file and
line) and a short Markdown summary for ``$GITHUB_STEP_SUMMARY``; see docs/ci.md."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from ..model import AuditResult, Destination
from .text import evidence_line, violation_line

#: The environment variable GitHub Actions sets to "true" in every step.
ENV_ACTIONS = "GITHUB_ACTIONS"
ENV_SUMMARY = "GITHUB_STEP_SUMMARY"
#: Most rows the step summary lists, and annotations made; the rest are counted.
MAX_ROWS = 50


def enabled(environ: Mapping[str, str]) -> bool:
    return environ.get(ENV_ACTIONS) == "true"


def escape_data(text: str) -> str:
    """A workflow command's message: GitHub reads %, CR and LF as escapes."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value: also ':' and ',', which end a property."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def error_commands(result: AuditResult, locations: Mapping[str, str] | None = None) -> str:
    """One ``::error`` line per violation (per test and destination, at most MAX_ROWS and a
    line that counts the rest) and per finding; the file and line are the test's, from
    ``locations`` (nodeid -> "path:line")."""
    where = locations or {}
    lines = []
    for finding in result.findings:
        lines.append(_command({"title": "netaudit: audit incomplete"}, str(finding)))
    violations = result.violations
    for d in itertools.islice(violations, MAX_ROWS):
        properties = _place(where.get(d.test, ""))
        refused = " (blocked)" if d.blocked else ""
        properties["title"] = f"netaudit: {d.family} {d.address} is not allowed{refused}"
        lines.append(_command(properties, _message(d)))
    if len(violations) > MAX_ROWS:
        rest = f"and {len(violations) - MAX_ROWS} more violations; see the job's log"
        lines.append(_command({"title": "netaudit: more violations"}, rest))
    return "".join(line + "\n" for line in lines)


def summary(result: AuditResult, locations: Mapping[str, str] | None = None) -> str:
    """The Markdown for ``$GITHUB_STEP_SUMMARY``: a headline and a table of violations."""
    where = locations or {}
    violations = result.violations
    lines = []
    if result.findings:
        lines.append("### netaudit: audit incomplete")
        lines.append("")
        lines += [f"- {_cell(str(f))}" for f in result.findings]
        lines.append("")
    if not violations:
        checked = len(result.destinations)
        lines.append(f"### netaudit: no violations ({checked} destinations checked)")
        return "\n".join(lines) + "\n"
    noun = "violation" if len(violations) == 1 else "violations"
    lines.append(f"### netaudit: {len(violations)} {noun}")
    lines.append("")
    lines.append("| Test | Destination | Calls | By |")
    lines.append("|---|---|---|---|")
    for d in itertools.islice(violations, MAX_ROWS):
        test = f"`{_cell(d.test)}`" if d.test else "(the command)"
        location = where.get(d.test)
        if location:
            test += f" ({_cell(location)})"
        destination = f"`{_cell(f'{d.family} {d.address}')}`"
        by = _cell(", ".join(d.programs))
        calls = f"{d.count} ({d.blocked} blocked)" if d.blocked else str(d.count)
        lines.append(f"| {test} | {destination} | {calls} | {by} |")
    if len(violations) > MAX_ROWS:
        lines.append("")
        lines.append(f"... and {len(violations) - MAX_ROWS} more; see the job's log.")
    return "\n".join(lines) + "\n"


def _place(location: str) -> dict[str, str]:
    path, _, line = location.rpartition(":")
    if not path or not line.isdigit():
        return {}
    return {"file": path, "line": line}


def _message(d: Destination) -> str:
    head = f"[{d.test}] " if d.test else ""
    return f"{head}{violation_line(d)}\n{evidence_line(d)}"


def _command(properties: Mapping[str, str], message: str) -> str:
    props = ",".join(f"{key}={escape_property(value)}" for key, value in properties.items())
    return f"::error {props}::{escape_data(message)}"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell and inline code."""
    return " ".join(text.replace("|", "\\|").replace("`", "'").split())
