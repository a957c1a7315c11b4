"""The text report, in the shapes of the pytest plugin's documentation."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from ..model import AuditResult, Destination
from ..rules import Allowlist, Rule

BAR = "=" * 60
#: Most pids a violation line lists before it says how many more there are.
MAX_PIDS = 10


#: Most tests a line of the by-destination summary names.
MAX_TESTS = 5

Locations = Mapping[str, str]


def report(result: AuditResult, verbose: bool = False, locations: Locations | None = None) -> str:
    """The whole text report: findings, the verbose table if asked for, then the violations
    block (or, for a clean run, one line that says so), then which tests reached what."""
    parts = [findings_block(result)] if result.findings else []
    if verbose:
        parts.append(verbose_table(result.destinations, locations))
    parts.append(violations_block(result, locations))
    parts.append(by_destination(result.destinations, every=verbose))
    return "\n\n".join(part for part in parts if part)


def findings_block(result: AuditResult) -> str:
    return "\n".join(f"netaudit: {finding}" for finding in result.findings)


def violations_block(result: AuditResult, locations: Locations | None = None) -> str:
    violations = result.violations
    if not violations:
        return (
            f"netaudit: no violations ({_count(len(result.destinations), 'destination')}"
            f" checked, {result.stats.calls} calls)"
        )
    blocked = sum(1 for d in violations if d.blocked)
    refused = f" ({blocked} blocked)" if blocked else ""
    lines = [BAR, f"  netaudit: {_count(len(violations), 'violation')} detected{refused}", BAR]
    for test, group in _by_test(violations):
        lines.append("")
        if test:
            lines.append(test_header(test, locations))
        for d in group:
            lines.append(f"    {violation_line(d)}")
            lines.append(f"      {evidence_line(d)}")
            lines += [f"      at {site}" for site in d.where]
    lines.append(BAR)
    return "\n".join(lines)


def label(d: Destination) -> str:
    """The address and what the trace knows of it: ``93.184.216.34:443 (example.com)``; a DNS
    query as ``127.0.0.53:53 DNS A example.com``."""
    query = d.query
    if query is not None:
        return f"{d.address} DNS {query[0]} {query[1]}"
    return f"{d.address} ({', '.join(d.names)})" if d.names else d.address


def violation_line(d: Destination) -> str:
    """``AF_INET 93.184.216.34:443 (count=1, pids=[12345])``, as documented for the plugin,
    with the host name after the address when the trace saw it resolved."""
    pids = ", ".join(str(pid) for pid in d.pids[:MAX_PIDS])
    if len(d.pids) > MAX_PIDS:
        pids += f", +{len(d.pids) - MAX_PIDS} more"
    return f"{d.family} {label(d)} (count={d.count}, pids=[{pids}]){blocked_mark(d)}"


def blocked_mark(d: Destination) -> str:
    """`` BLOCKED`` when block mode refused the calls (`` BLOCKED 2 of 3`` for some)."""
    if not d.blocked:
        return ""
    return " BLOCKED" if d.blocked == d.count else f" BLOCKED {d.blocked} of {d.count}"


def evidence_line(d: Destination) -> str:
    """Who made the calls and how they ended, on a line of its own below the documented one."""
    results = ", ".join(r if n == 1 else f"{r} x{n}" for r, n in d.results)
    line = f"by {', '.join(d.programs)}: {'/'.join(d.syscalls)} -> {results}"
    return line + " (after the test ended)" if d.after_test else line


def test_header(test: str, locations: Locations | None = None) -> str:
    """``  [nodeid]``, as documented, followed by the test's ``file:line`` when known."""
    where = (locations or {}).get(test)
    return f"  [{test}] {where}" if where else f"  [{test}]"


def verbose_table(destinations: Iterable[Destination], locations: Locations | None = None) -> str:
    lines = [BAR, "  netaudit: verbose network event report", BAR]
    groups = list(_by_test(destinations))
    if not groups:
        lines += ["", "  (no network calls were traced)"]
    for test, group in groups:
        lines.append("")
        if test:
            lines.append(test_header(test, locations))
        lines.append(f"{'FAMILY':<12} {'ADDR:PORT':<30} {'STATUS':<10} RULE")
        lines.append(f"{'-' * 12} {'-' * 30} {'-' * 10} {'-' * 24}")
        for d in group:
            status = "OK" if d.verdict.allowed else "BLOCKED" if d.blocked else "VIOLATION"
            status = "RESOLVED" if d.kind == "resolved" else status
            # The plugin's documented table indents rows one column less than the header.
            lines.append(f"{d.family:<12} {label(d):<29} {status:<10} {d.verdict.rule or '-'}")
            lines += [f"{'':<12} at {site}" for site in d.where]
    lines.append(BAR)
    return "\n".join(lines)


def by_destination(destinations: Iterable[Destination], every: bool = False) -> str:
    """Each violated destination (or, with ``every``, each destination) and the tests that
    reached it: one line per destination, for a suite where many tests share a culprit."""
    tests: dict[tuple[str, str], dict[str, None]] = {}
    status: dict[tuple[str, str], str] = {}
    for d in destinations:
        if d.test and (every or not d.verdict.allowed):
            where = (d.family, label(d))
            tests.setdefault(where, {}).setdefault(d.test)
            if status.get(where) != "VIOLATION":
                status[where] = "OK" if d.verdict.allowed else "VIOLATION"
    if not tests:
        return ""
    lines = ["  netaudit: destinations and the tests that reached them"]
    for (family, address), names in tests.items():
        shown = ", ".join(list(names)[:MAX_TESTS])
        more = f", +{len(names) - MAX_TESTS} more" if len(names) > MAX_TESTS else ""
        what = _count(len(names), "test")
        lines.append(f"    {family} {address} {status[(family, address)]}: {what}: {shown}{more}")
    return "\n".join(lines)


def _by_test(destinations: Iterable[Destination]) -> Iterator[tuple[str, list[Destination]]]:
    groups: dict[str, list[Destination]] = {}
    for d in destinations:
        groups.setdefault(d.test, []).append(d)
    return iter(groups.items())


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def rules_table(allowlist: Allowlist) -> str:
    """The rules in matching order, each with where it was written."""
    rows = []
    for rule in allowlist.all_rules():
        where = "built-in" if rule.builtin else f"line {rule.line}"
        rows.append(f"  {where:<9} {rule.name:<32} {describe_rule(rule)}")
    if not allowlist.builtins:
        rows.append("  (built-in rules are switched off)")
    scoped = allowlist.scoped()
    if scoped:
        names = ", ".join(repr(rule.name) for rule in scoped)
        rows.append(f"  scoped to some tests (pytest --netaudit only): {names}")
    return "\n".join(rows)


def describe_rule(rule: Rule) -> str:
    what = [rule.family]
    if rule.hosts:
        what.append("host " + ", ".join(rule.hosts))
    if rule.networks:
        what.append(", ".join(str(n) for n in rule.networks))
    if rule.paths:
        what.append("path " + ", ".join(rule.paths))
    if rule.abstract:
        what.append("abstract @" + ", @".join(rule.abstract))
    if rule.ports:
        what.append("port " + ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in rule.ports))
    if len(what) == 1:
        what.append("any destination")
    if rule.tests:
        what.append("only in tests " + ", ".join(rule.tests))
    return " ".join(what)
