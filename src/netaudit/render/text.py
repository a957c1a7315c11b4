"""The text report, in the shapes of the pytest plugin's documentation.

The documented lines (the headline, ``  [nodeid]``, ``    AF_INET ADDR:PORT (count=N,
pids=[...])`` and the verbose table's rows) are kept byte for byte; what the trace adds (who
made the calls and how they ended, where in the code, where the test is) goes on lines of its
own below them. Each block is rendered by a function of its own.

It bounds itself, whatever the run reached: at most MAX_PER_TEST destinations of one test
and MAX_LISTED in all, each cut ending with "and N more" and where the full list is (the
JSON report, which ``full_list`` names or says how to write).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from ..model import (
    HAZARD_WHAT,
    SESSION,
    AuditResult,
    Destination,
    Finding,
    HazardKind,
    Stored,
)
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
#: Most destinations the by-destination summary looks at for the tests that share them.
MAX_LOOKED_AT = 4096
#: Where the rest is, when a JSON report is written (``full_list`` says more).
IN_JSON = "the full list is in the JSON report"

Locations = Mapping[str, str]

#: What ``<session>`` means, said once per report under its first header.
SESSION_NOTE = "    (outside any test: conftest.py imports, collection, fixtures wider than a test)"
#: The verbose table's address column: rows indent one column less than its header (as
#: documented); a longer address goes on a line of its own.
_ADDRESS_WIDTH = 29


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
        parts.append(verbose_table(result.destinations, locations, more=more))
    parts.append(violations_block(result, locations, explain_session=not verbose, more=more))
    parts.append(by_destination(result.destinations, every=verbose, more=more))
    return "\n\n".join(part for part in parts if part)


def findings_block(result: AuditResult) -> str:
    return "\n".join(findings_lines(result.findings))


def violations_block(
    result: AuditResult,
    locations: Locations | None = None,
    explain_session: bool = True,
    more: str = IN_JSON,
) -> str:
    violations = result.violations
    if not violations:
        return (
            f"netaudit: no violations ({_count(len(result.destinations), 'destination')}"
            f" checked, {_count(result.stats.calls, 'call')})"
        )
    blocked = sum(1 for d in violations if d.blocked)
    refused = f" ({blocked} blocked)" if blocked else ""
    lines = [BAR, f"  netaudit: {_count(len(violations), 'violation')} detected{refused}", BAR]
    groups = _Groups(violations)
    for test, group, hidden in groups:
        lines.append("")
        if test:
            lines += test_heading(test, group, locations, explain_session)
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
    query as ``127.0.0.53:53 DNS A example.com``; the system's resolver as
    ``10.0.0.2:53 (system resolver)``."""
    query = d.query
    if query is not None:
        return f"{d.address} DNS {query[0]} {query[1]}"
    if d.names:
        return f"{d.address} ({', '.join(d.names)})"
    return f"{d.address} (system resolver)" if d.resolver else d.address


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
    """Who made the calls and how they ended, in words, on a line of its own below the
    documented one: ``by python3: connect -> network unreachable``."""
    words: dict[str, int] = {}
    for result, n in d.results:
        word = result_in_words(result, d.syscalls)
        words[word] = words.get(word, 0) + n
    results = ", ".join(w if n == 1 else f"{w} x{n}" for w, n in words.items())
    line = f"by {', '.join(d.programs)}: {'/'.join(d.syscalls)} -> {results}"
    return line + " (after the test ended)" if d.after_test else line


#: Errors as a reader says them; an errno not listed here is shown as strace names it.
_ERRNO_WORDS = {
    "ECONNREFUSED": "refused",
    "ENETUNREACH": "network unreachable",
    "EHOSTUNREACH": "host unreachable",
    "ETIMEDOUT": "timed out",
    "EINPROGRESS": "in progress",
    "EALREADY": "already in progress",
    "EISCONN": "already connected",
    "EAGAIN": "would block",
    "ECONNRESET": "reset",
    "EPIPE": "broken pipe",
    "EACCES": "permission denied",
    "EPERM": "not permitted",
    "ENOENT": "no such socket",
    "EADDRNOTAVAIL": "address not available",
    "EAFNOSUPPORT": "family not supported",
    "EINTR": "interrupted",
    "?": "unfinished",
}


def result_in_words(result: str, syscalls: Sequence[str]) -> str:
    """``connected``, ``sent``, ``refused``, ``network unreachable``...: what a call's result
    (a number, or strace's errno name) means for the calls it ended."""
    if result.isdigit():
        if "connect" not in syscalls:
            return "sent"
        return "connected" if len(syscalls) == 1 else "succeeded"
    return _ERRNO_WORDS.get(result, result)


def test_header(test: str) -> str:
    """``  [nodeid]``, exactly as documented."""
    return f"  [{test}]"


def test_heading(
    test: str,
    group: Iterable[Destination],
    locations: Locations | None = None,
    explain_session: bool = True,
) -> list[str]:
    """The header of a test's group, and below it, on a line of its own, where the test is
    defined, unless an ``at`` line of the group already names the test's own frame; under
    ``<session>``, what that is (when ``explain_session``)."""
    lines = [test_header(test)]
    if test == SESSION:
        return [*lines, SESSION_NOTE] if explain_session else lines
    where = (locations or {}).get(test)
    if where and not _frame_shown(test, where, group):
        lines.append(f"    defined at {where}")
    return lines


def _frame_shown(test: str, where: str, group: Iterable[Destination]) -> bool:
    """Whether an ``at`` line names a line of the test function in its file."""
    path = where.rpartition(":")[0]
    function = test.partition("[")[0].rpartition("::")[2]  # parameters may hold "::"
    return any(
        site.startswith(f"{path}:") and f" in {function}" in site.partition(" > ")[0]
        for d in group
        for site in d.where
    )


def verbose_table(
    destinations: Iterable[Destination],
    locations: Locations | None = None,
    explain_session: bool = True,
    more: str = IN_JSON,
) -> str:
    lines = [BAR, "  netaudit: verbose network event report", BAR]
    groups = _Groups(destinations)
    if not groups.seen:
        lines += ["", "  (no network calls were traced)"]
    for test, group, hidden in groups:
        lines.append("")
        if test:
            lines += test_heading(test, group, locations, explain_session)
        lines.append(f"{'FAMILY':<12} {'ADDR:PORT':<30} {'STATUS':<10} RULE")
        lines.append(f"{'-' * 12} {'-' * 30} {'-' * 10} {'-' * 24}")
        for d in group:
            lines += table_rows(d)
        if hidden:
            lines.append(f"and {hidden} more; {more}")
    lines += groups.rest(more)
    lines.append(BAR)
    return "\n".join(lines)


def table_rows(d: Destination) -> list[str]:
    """A destination's row of the verbose table, in the documented columns; an address too
    long for its column (a deep Unix socket path) has a line of its own, and the row goes on
    below it, in the same columns."""
    status = "OK" if d.verdict.allowed else "BLOCKED" if d.blocked else "VIOLATION"
    status = "RESOLVED" if d.kind == "resolved" else status
    shown = label(d)
    tail = f"{status:<10} {d.verdict.rule or '-'}"
    if len(shown) <= _ADDRESS_WIDTH:
        rows = [f"{d.family:<12} {shown:<{_ADDRESS_WIDTH}} {tail}"]
    else:
        rows = [f"{d.family:<12} {shown}", f"{'':<12} {'':<{_ADDRESS_WIDTH}} {tail}"]
    return rows + [f"{'':<12} at {site}" for site in d.where]


def by_destination(
    destinations: Iterable[Destination], every: bool = False, more: str = IN_JSON
) -> str:
    """Which tests reached each destination, one line per destination: by default only the
    violated destinations that more than one test reached (the violations block shows each
    violation already: this says what it cannot, that many tests share a culprit); with
    ``every``, every destination.

    It looks at the first MAX_LOOKED_AT destinations and lists at most MAX_LISTED; what it
    leaves out is counted.
    """
    tests: dict[tuple[str, str], dict[str, None]] = {}
    status: dict[tuple[str, str], str] = {}
    unseen = 0
    if isinstance(destinations, Stored) and not any(destinations.per_test()):
        return ""  # no test reached anything (netaudit run, analyze): nothing to read
    for d in destinations:
        if d.test and (every or not d.verdict.allowed):
            where = (d.family, label(d))
            if where not in tests and len(tests) >= MAX_LOOKED_AT:
                unseen += 1
                continue
            tests.setdefault(where, {}).setdefault(d.test)
            if status.get(where) != "VIOLATION":
                status[where] = "OK" if d.verdict.allowed else "VIOLATION"
    shared = [(where, names) for where, names in tests.items() if every or len(names) > 1]
    if not shared and not unseen:
        return ""
    lines = ["  netaudit: destinations and the tests that reached them"]
    for (family, address), names in shared[:MAX_LISTED]:
        shown = ", ".join(list(names)[:MAX_TESTS])
        others = f", +{len(names) - MAX_TESTS} more" if len(names) > MAX_TESTS else ""
        what = _count(len(names), "test")
        lines.append(f"    {family} {address} {status[(family, address)]}: {what}: {shown}{others}")
    if len(shared) > MAX_LISTED:
        lines.append(f"    and {len(shared) - MAX_LISTED} more destinations; {more}")
    if unseen:
        lines.append(f"    and {unseen} more (test, destination) pairs not looked at; {more}")
    return "\n".join(lines)


#: What to do about each hazard.
_REMEDIES = {
    HazardKind.IO_URING: (
        'calls submitted through a ring are invisible to strace; with io_uring = "deny" '
        "(the default) io_uring_setup fails and programs fall back to plain sockets, which "
        "are judged"
    ),
    HazardKind.CLONE_UNTRACED: (
        "nothing that child did was traced; run that program outside the audited command"
    ),
    HazardKind.SECCOMP_NOTIFY: (
        "calls the filter catches are answered by another process and never reach strace; "
        "run that program without its sandbox when audited"
    ),
    HazardKind.SECCOMP_REFUSED: (
        "the program's own sandbox could not be installed, so it may have failed or run "
        "differently; run that program without its sandbox, or audit without --netaudit-block"
    ),
    HazardKind.RAW_PACKET: (
        "its frames carry no address to judge; run that program outside the audited command"
    ),
}


def findings_lines(findings: Iterable[Finding]) -> list[str]:
    """One line per kind of finding: by which processes, in which tests, and what to do."""
    kinds: dict[HazardKind, list[Finding]] = {}
    for finding in findings:
        kinds.setdefault(finding.kind, []).append(finding)
    lines = []
    for kind, found in kinds.items():
        what, remedy = HAZARD_WHAT[kind], _REMEDIES[kind]
        pids = sorted({f.pid for f in found})
        programs = ", ".join(sorted({f.program for f in found}))
        who = f"pid {pids[0]}" if len(pids) == 1 else f"{len(pids)} processes"
        lines.append(
            f"netaudit: audit incomplete: {what} by {who} ({programs})"
            f"{_in_tests([f.test for f in found])}: {remedy}"
        )
    return lines


def _in_tests(tests: Sequence[str]) -> str:
    named = [t for t in dict.fromkeys(tests) if t and t != SESSION]
    parts = []
    if named:
        shown = ", ".join(named[:MAX_TESTS])
        more = f", +{len(named) - MAX_TESTS} more" if len(named) > MAX_TESTS else ""
        parts.append(f"in {_count(len(named), 'test')} ({shown}{more})")
    if SESSION in tests:
        parts.append("outside any test (<session>)")
    return " " + " and ".join(parts) if parts else ""


def unmatched_scope_lines(unmatched: Iterable[tuple[Rule, str]], tests: int) -> list[str]:
    """A warning per ``tests`` scope that matched no test of the run, at the rule's line."""
    lines = []
    for rule, scope in unmatched:
        where = f"{rule.source}:{rule.line}: " if rule.source and rule.line else ""
        lines.append(
            f"netaudit: warning: {where}tests: {scope!r} of rule {rule.name!r} matched none of "
            f"the {_count(tests, 'test')} this run ran (nor <session>)"
        )
    return lines


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
