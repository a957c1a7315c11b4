"""The text report, in the shapes of the pytest plugin's documentation.

It bounds itself, whatever the run reached: at most MAX_PER_TEST destinations of one test
and MAX_LISTED in all, each cut ending with "and N more" and where the full list is (the
JSON report, which ``full_list`` names or says how to write).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from ..model import AuditResult, Destination, Stored
from ..rules import Allowlist, Rule

BAR = "=" * 60
#: Most pids a violation line lists before it says how many more there are.
MAX_PIDS = 10


#: Most tests a line of the by-destination summary names.
MAX_TESTS = 5
#: Most destinations listed for one test, and in all (violations, the verbose table, the
#: by-destination summary each); the rest are counted.
MAX_PER_TEST = 20
MAX_LISTED = 100
#: Where the rest is, when a JSON report is written (``full_list`` says more).
IN_JSON = "the full list is in the JSON report"

Locations = Mapping[str, str]


def full_list(report: object | None, option: str) -> str:
    """What a cut list ends with: the JSON report that holds the rest, or how to write one
    (``option`` is the flag that does: ``--report`` or ``--netaudit-report``)."""
    if report is not None:
        return f"{IN_JSON} ({report})"
    return f"{IN_JSON}: write one with {option} PATH"


def report(
    result: AuditResult,
    verbose: bool = False,
    locations: Locations | None = None,
    more: str = IN_JSON,
) -> str:
    """The whole text report: findings, the verbose table if asked for, then the violations
    block (or, for a clean run, one line that says so), then which tests reached what."""
    parts = [findings_block(result)] if result.findings else []
    if verbose:
        parts.append(verbose_table(result.destinations, locations, more))
    parts.append(violations_block(result, locations, more))
    parts.append(by_destination(result.destinations, every=verbose, more=more))
    return "\n\n".join(part for part in parts if part)


def findings_block(result: AuditResult) -> str:
    return "\n".join(f"netaudit: {finding}" for finding in result.findings)


def violations_block(
    result: AuditResult, locations: Locations | None = None, more: str = IN_JSON
) -> str:
    violations = result.violations
    if not violations:
        return (
            f"netaudit: no violations ({_count(len(result.destinations), 'destination')}"
            f" checked, {result.stats.calls} calls)"
        )
    lines = [BAR, f"  netaudit: {_count(len(violations), 'violation')} detected", BAR]
    groups = _Groups(violations)
    for test, group, hidden in groups:
        lines.append("")
        if test:
            lines.append(test_header(test, locations))
        for d in group:
            lines.append(f"    {violation_line(d)}")
            lines.append(f"      {evidence_line(d)}")
            lines += [f"      at {site}" for site in d.where]
        if hidden:
            lines.append(f"    and {hidden} more; {more}")
    lines += groups.rest(more)
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
    return f"{d.family} {label(d)} (count={d.count}, pids=[{pids}])"


def evidence_line(d: Destination) -> str:
    """Who made the calls and how they ended, on a line of its own below the documented one."""
    results = ", ".join(r if n == 1 else f"{r} x{n}" for r, n in d.results)
    line = f"by {', '.join(d.programs)}: {'/'.join(d.syscalls)} -> {results}"
    return line + " (after the test ended)" if d.after_test else line


def test_header(test: str, locations: Locations | None = None) -> str:
    """``  [nodeid]``, as documented, followed by the test's ``file:line`` when known."""
    where = (locations or {}).get(test)
    return f"  [{test}] {where}" if where else f"  [{test}]"


def verbose_table(
    destinations: Iterable[Destination], locations: Locations | None = None, more: str = IN_JSON
) -> str:
    lines = [BAR, "  netaudit: verbose network event report", BAR]
    groups = _Groups(destinations)
    for test, group, hidden in groups:
        lines.append("")
        if test:
            lines.append(test_header(test, locations))
        lines.append(f"{'FAMILY':<12} {'ADDR:PORT':<30} {'STATUS':<10} RULE")
        lines.append(f"{'-' * 12} {'-' * 30} {'-' * 10} {'-' * 24}")
        for d in group:
            status = "OK" if d.verdict.allowed else "VIOLATION"
            status = "RESOLVED" if d.kind == "resolved" else status
            # The plugin's documented table indents rows one column less than the header.
            lines.append(f"{d.family:<12} {label(d):<29} {status:<10} {d.verdict.rule or '-'}")
            lines += [f"{'':<12} at {site}" for site in d.where]
        if hidden:
            lines.append(f"and {hidden} more; {more}")
    if not groups.seen:
        lines += ["", "  (no network calls were traced)"]
    lines += groups.rest(more)
    lines.append(BAR)
    return "\n".join(lines)


def by_destination(
    destinations: Iterable[Destination], every: bool = False, more: str = IN_JSON
) -> str:
    """Each violated destination (or, with ``every``, each destination) and the tests that
    reached it: one line per destination, for a suite where many tests share a culprit.

    At most MAX_LISTED destinations are listed; what the others were reached by is counted.
    """
    tests: dict[tuple[str, str], dict[str, None]] = {}
    status: dict[tuple[str, str], str] = {}
    hidden = 0
    if isinstance(destinations, Stored) and not any(destinations.per_test()):
        return ""  # no test reached anything (netaudit run, analyze): nothing to read
    for d in destinations:
        if d.test and (every or not d.verdict.allowed):
            where = (d.family, label(d))
            if where not in tests and len(tests) >= MAX_LISTED:
                hidden += 1
                continue
            tests.setdefault(where, {}).setdefault(d.test)
            if status.get(where) != "VIOLATION":
                status[where] = "OK" if d.verdict.allowed else "VIOLATION"
    if not tests:
        return ""
    lines = ["  netaudit: destinations and the tests that reached them"]
    for (family, address), names in tests.items():
        shown = ", ".join(list(names)[:MAX_TESTS])
        more_tests = f", +{len(names) - MAX_TESTS} more" if len(names) > MAX_TESTS else ""
        what = _count(len(names), "test")
        lines.append(
            f"    {family} {address} {status[(family, address)]}: {what}: {shown}{more_tests}"
        )
    if hidden:
        lines.append(f"    and {hidden} more (test, destination) pairs; {more}")
    return "\n".join(lines)


class _Groups:
    """Destinations by test, in first-seen order, read in one pass and cut short: at most
    MAX_PER_TEST of a test and MAX_LISTED in all are kept; the rest are counted."""

    def __init__(self, destinations: Iterable[Destination]) -> None:
        self._groups: dict[str, tuple[list[Destination], list[int]]] = {}
        # Kept on disk, they say how many each test has: reading stops once all are listed.
        known = destinations.per_test() if isinstance(destinations, Stored) else None
        most = MAX_LISTED
        if known is not None:
            most = min(most, sum(min(count, MAX_PER_TEST) for count in known.values()))
        listed = 0
        for d in destinations:
            group = self._groups.get(d.test)
            if group is None:
                group = self._groups[d.test] = ([], [0])
            group[1][0] += 1
            if len(group[0]) < MAX_PER_TEST and listed < most:
                group[0].append(d)
                listed += 1
            elif known is not None and listed >= most:
                break  # all that can be listed is
        for test, count in (known or {}).items():
            group = self._groups.setdefault(test, ([], [0]))
            group[1][0] = count

    @property
    def seen(self) -> bool:
        return bool(self._groups)

    def __iter__(self) -> Iterator[tuple[str, list[Destination], int]]:
        """Each test with something listed: the listed destinations and how many are not."""
        for test, (listed, (count,)) in self._groups.items():
            if listed:
                yield test, listed, count - len(listed)

    def rest(self, more: str) -> list[str]:
        """A line for the tests that have nothing listed, if any."""
        unlisted = [count for listed, (count,) in self._groups.values() if not listed]
        if not unlisted:
            return []
        return ["", f"  and {sum(unlisted)} more in {_count(len(unlisted), 'more test')}; {more}"]


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
