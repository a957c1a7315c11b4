"""Triage across runs: saved JSON reports (CI shards, xdist runs, many days) merged into one
reviewable list of undeclared destinations with their evidence, and a starting allowlist
(a baseline) for a suite that has none yet.

Reports are read back into the data model and judged with ``audit.judge``, so that a rule
matches here exactly as it does in a run. The YAML output is an allowlist (its rules come
from render.suggest, one exact destination each) with the evidence in comments; the round
trip through our own loader is tested in tests/unit/test_triage.py.
"""

from __future__ import annotations

import collections
import io
import itertools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, Optional, overload

import yaml

from . import spill
from .audit import judge
from .errors import InputError
from .jsonstream import Reader
from .model import Destination, Destinations, Endpoint, Verdict
from .render import json as json_report
from .render.suggest import ExactRule, exact_rule, printable
from .rules import Allowlist, ip_of
from .spill import Grouping, Scratch, collect

#: The schema versions of the JSON report this module reads.
READS = frozenset({1})
TRIAGE_SCHEMA = "netaudit.triage"
TRIAGE_SCHEMA_VERSION = 1
#: The prefix of every rule a baseline writes, until someone has reviewed it.
REVIEW_PREFIX = "REVIEW: "
#: Most tests (and call sites) a comment names before it says how many more there are.
MAX_NAMED = 5
_UNPARSED = "UNPARSED"


class ReportError(InputError):
    """A report that cannot be read: unreadable, not JSON, or not a schema we know."""


@dataclass(frozen=True)
class Report:
    path: str
    #: Kept on disk when there are many (see spill).
    destinations: Destinations


@dataclass(frozen=True)
class Evidence:
    """One undeclared destination across every report that saw it."""

    endpoint: Endpoint | None
    raw: str
    calls: int
    runs: int
    tests: tuple[str, ...]
    programs: tuple[str, ...]
    where: tuple[str, ...] = ()
    #: ipaddress's ``is_global``; None for a destination that is not an IP address.
    routable: bool | None = None
    #: Host names the traced programs resolved to the address (``--names``).
    names: tuple[str, ...] = ()
    #: DNS questions ("A example.com") sent to this destination, a resolver.
    queries: tuple[str, ...] = ()
    #: Calls that block mode refused.
    blocked: int = 0

    def rule(self) -> ExactRule | str | None:
        """The exact rule (a host rule when the name is known), why none can be, or None."""
        return exact_rule(self.endpoint, self.names) if self.endpoint is not None else None

    @property
    def shown(self) -> str:
        if self.endpoint is None:
            return f"{_UNPARSED} {self.raw}"
        return f"{self.endpoint.family} {self.endpoint}"


def load_report(path: str | os.PathLike[str]) -> Report:
    """A JSON report of ``netaudit run --report`` or ``pytest --netaudit-report``, read as a
    stream: its destinations are kept on disk when there are many (see spill)."""
    source = os.fspath(path)
    head: dict[str, Any] = {}
    destinations: Destinations | None = None
    try:
        with open(source, encoding="utf-8") as file:
            reader = Reader(file)
            if reader.peek() != "{":
                head = {"document": reader.value()}  # JSON, but no report
            else:
                for key in reader.members():
                    if key in ("destinations", "violations") and reader.peek() == "[":
                        items = (_item(source, i, item) for i, item in enumerate(reader.items()))
                        if key == "destinations":
                            destinations = collect(items)
                        else:
                            collections.deque(items, maxlen=0)  # read past: derived data
                    else:
                        head[key] = reader.value()
            reader.end()
    except OSError as err:
        raise ReportError(f"{source}: cannot read the report: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ReportError(f"{source}: not UTF-8 text; is this a netaudit JSON report?") from None
    except json.JSONDecodeError as err:
        raise ReportError(
            f"{source}:{err.lineno}: not JSON ({err.msg}); name a report written by "
            "netaudit run --report or pytest --netaudit-report"
        ) from None
    if head.get("schema") != json_report.SCHEMA:
        raise ReportError(
            f'{source}: not a netaudit report (no "schema": "{json_report.SCHEMA}"); name a '
            "report written by netaudit run --report or pytest --netaudit-report"
        )
    version = head.get("schema_version")
    if version not in READS:
        known = ", ".join(str(v) for v in sorted(READS))
        raise ReportError(
            f"{source}: report schema version {version!r} is not one this netaudit reads "
            f"({known}); triage it with the netaudit version that wrote it, or a newer one"
        )
    if destinations is None:
        raise ReportError(f'{source}: "destinations" is not a list; the report is damaged')
    return Report(source, destinations)


def _item(source: str, index: int, item: Any) -> Destination:
    try:
        return _destination(item)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ReportError(
            f"{source}: destinations[{index}] is damaged ({err!r}); write the report again"
        ) from None


def _destination(item: dict[str, Any]) -> Destination:
    family = item["family"]
    endpoint = None
    if family != _UNPARSED:
        endpoint = Endpoint(str(family), str(item["address"]), item["port"], item["scope_id"] or "")
    return Destination(
        test=str(item["test"]),
        endpoint=endpoint,
        raw=item["raw"] or "",
        verdict=Verdict(None if item["verdict"] == "violation" else str(item["rule"])),
        count=int(item["count"]),
        pids=tuple(int(p) for p in item["pids"]),
        programs=tuple(str(p) for p in item["programs"]),
        syscalls=tuple(str(s) for s in item["syscalls"]),
        results=tuple(sorted((str(r), int(n)) for r, n in item["results"].items())),
        socks=tuple(str(s) for s in item.get("socket_types", ())),
        after_test=bool(item.get("after_test", False)),
        first_time=item.get("first_time"),
        where=tuple(str(w) for w in item.get("where", ())),
        names=tuple(str(n) for n in item.get("names", ())),
    )


def undeclared(reports: Sequence[Report], allowlist: Allowlist | None = None) -> Sequence[Evidence]:
    """Every destination no rule allowed, merged across reports, in the suggested rules' order.

    With ``allowlist``, each report is judged again with it (what it allows is left out);
    without, each report's own verdicts stand. Merged in bounded memory (spill.Grouping):
    when there are many, they are read back from disk at each pass.
    """
    scratch = Scratch()
    grouping: Grouping[_Key, _Merged] = Grouping(_merged, scratch)
    seen = 0
    for index, report in enumerate(reports):
        destinations: Iterable[Destination] = report.destinations
        if allowlist is not None:
            destinations = judge(destinations, allowlist)
        for d in destinations:
            if d.verdict.allowed:
                continue
            e, query = d.endpoint, d.query
            key = (None, "", None, "", d.raw) if e is None else (
                e.family, e.address, e.port, e.scope_id, "")  # fmt: skip
            test = (d.test,) if d.test else ()
            queries = (" ".join(query),) if query is not None else ()
            value = (seen, d.raw, d.count, d.blocked, (index,), test, d.programs, d.where)
            grouping.add(key, (*value, d.names, queries))
            seen += 1
    if not grouping.spilled:
        return [_evidence_of(key, value) for key, value in grouping.grouped(_order_of)]
    path = scratch.new("undeclared")
    count = spill.append(path, grouping.grouped(_order_of))
    grouping.discard()
    return _OnDisk(path, count, scratch)


#: An undeclared destination's key while merging: family (None: unparsed), address, port,
#: scope, and an unparsed line's text.
_Key = tuple[Optional[str], str, Optional[int], str, str]
#: What is merged: first seen, the first one's raw, calls, blocked calls, then report indexes,
#: tests, programs, sites, names, DNS queries, each a sorted tuple.
_Merged = tuple[Any, ...]


def _merged(a: _Merged, b: _Merged) -> _Merged:
    if b[0] < a[0]:
        a, b = b, a
    return (
        a[0],
        a[1],
        a[2] + b[2],
        a[3] + b[3],
        *(x if x == y else tuple(sorted({*x, *y})) for x, y in zip(a[4:], b[4:])),
    )


def _evidence_of(key: _Key, value: _Merged) -> Evidence:
    family, address, port, scope, raw = key
    endpoint = None if family is None else Endpoint(family, address, port, scope)
    _, first_raw, calls, blocked, reports, tests, programs, where, names, queries = value
    return Evidence(
        endpoint,
        first_raw if endpoint is not None else raw,
        calls,
        len(reports),
        tests,
        programs,
        where,
        _routable(endpoint),
        names,
        queries,
        blocked,
    )


def _order_of(item: tuple[_Key, _Merged]) -> tuple[Any, ...]:
    """The suggested rules' order, then first seen: no two are equal."""
    return (*_order(_evidence_of(*item)), item[1][0])


class _OnDisk(Sequence[Evidence]):
    """Undeclared destinations too many for memory, read back from disk at each pass
    (indexing reads from the start: iterate instead)."""

    def __init__(self, path: str, count: int, scratch: Scratch) -> None:
        self._path = path
        self._count = count
        self._scratch = scratch  # kept alive for as long as this is

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Evidence]:
        return (_evidence_of(key, value) for key, value in spill.read(self._path))

    @overload
    def __getitem__(self, index: int) -> Evidence: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Evidence]: ...

    def __getitem__(self, index: int | slice) -> Evidence | Sequence[Evidence]:
        if isinstance(index, slice):
            return list(self)[index]
        if not -self._count <= index < self._count:
            raise IndexError(index)
        return next(itertools.islice(self, index % self._count, None))


def _routable(endpoint: Endpoint | None) -> bool | None:
    ip = ip_of(endpoint) if endpoint is not None else None
    return None if ip is None else ip.is_global


def _order(e: Evidence) -> tuple[int, tuple[object, ...], str]:
    """Rules first, in the suggested rules' order; then what no rule can allow."""
    rule = e.rule()
    if isinstance(rule, tuple):
        return 0, rule[0], ""
    return 1, (), e.shown


# -- output ---------------------------------------------------------------------------------


def to_yaml(
    found: Iterable[Evidence], runs: int, header: Sequence[str], review: bool = False
) -> str:
    """What ``write_yaml`` writes, as a string."""
    out = io.StringIO()
    write_yaml(found, runs, header, out, review)
    return out.getvalue()


def write_yaml(
    found: Iterable[Evidence], runs: int, header: Sequence[str], out: IO[str], review: bool = False
) -> None:
    """An allowlist with one exact rule per destination and its evidence in comments above it,
    written as it goes (``found`` in ``undeclared``'s order: rules first).

    ``review`` (a baseline) prefixes each rule's name with REVIEW_PREFIX and adds a
    ``# review:`` comment: nothing in it has been looked at yet.
    """
    out.write("".join(f"# {line}\n" if line else "#\n" for line in header))
    out.write("version: 1\n")
    started = unexpressible = False
    written: set[str] = set()
    for e in found:
        rule = e.rule()
        comments = _evidence(e, runs)
        if not started:
            out.write("allowlist:\n" if isinstance(rule, tuple) else "allowlist: []\n")
            started = True
        if not isinstance(rule, tuple):
            if not unexpressible:
                out.write("#\n# Undeclared, and no rule can allow exactly these:\n")
                unexpressible = True
            reason = rule or "strace's line could not be parsed, so no rule can allow it"
            out.write("".join(f"#   {line}\n" for line in comments) + f"#     {reason}\n")
            continue
        _, fields, shown = rule
        if shown in written:  # a second address of one host name: its rule is already there
            out.write("".join(f"  # {line}\n" for line in comments))
            out.write(f"  #   allowed by the rule for {printable(shown)}\n")
            continue
        written.add(shown)
        if review:
            comments.append("review: keep this rule only if the destination is expected here")
        name = f"{REVIEW_PREFIX if review else ''}{shown}"
        dumped = yaml.safe_dump(
            [{"name": name, **fields}], sort_keys=False, allow_unicode=False, width=1 << 20
        )
        out.write("".join(f"  # {line}\n" for line in comments))
        out.write("".join(f"  {line}\n" for line in dumped.splitlines()))
    if not started:
        out.write("allowlist: []\n")


def _evidence(e: Evidence, runs: int) -> list[str]:
    calls = "1 call" if e.calls == 1 else f"{e.calls} calls"
    calls += f" ({e.blocked} blocked)" if e.blocked else ""
    routable = {True: "globally routable", False: "not globally routable", None: "not IP"}
    lines = [f"{printable(e.shown)}: {calls} in {e.runs} of {runs} runs; {routable[e.routable]}"]
    if e.tests:
        lines.append(f"  tests: {_named(e.tests)}")
    if e.programs:
        lines.append(f"  programs: {_named(e.programs)}")
    if e.names:
        lines.append(f"  resolved from: {_named(e.names)}")
    if e.queries:
        lines.append(f"  DNS queries: {_named(e.queries)}")
    for site in e.where[:MAX_NAMED]:
        lines.append(f"  at {printable(site)}")
    if len(e.where) > MAX_NAMED:
        lines.append(f"  at +{len(e.where) - MAX_NAMED} more places")
    return lines


def _named(names: Sequence[str]) -> str:
    shown = ", ".join(printable(n) for n in names[:MAX_NAMED])
    return shown + (f", +{len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else "")


def to_json(found: Iterable[Evidence], reports: Sequence[str]) -> str:
    """What ``write_json`` writes, as a string."""
    out = io.StringIO()
    write_json(found, reports, out)
    return out.getvalue()


def write_json(found: Iterable[Evidence], reports: Sequence[str], out: IO[str]) -> None:
    """The triage as a JSON document (the evidence, and each destination's exact rule),
    written as it goes; the same text as ``json.dumps(document, indent=1)``."""
    head = {
        "schema": TRIAGE_SCHEMA,
        "schema_version": TRIAGE_SCHEMA_VERSION,
        "reports": list(reports),
    }
    out.write("{\n")
    for key, value in head.items():
        out.write(f" {json.dumps(key)}: {_nested(value, 1)},\n")
    out.write(' "undeclared": [')
    separator = "\n  "
    for e in found:
        out.write(separator + _nested(_triaged(e), 2))
        separator = ",\n  "
    out.write("]\n}\n" if separator == "\n  " else "\n ]\n}\n")


def _nested(value: object, depth: int) -> str:
    """``value`` as ``json.dumps(..., indent=1)`` writes it ``depth`` levels down."""
    return json.dumps(value, indent=1).replace("\n", "\n" + " " * depth)


def _triaged(e: Evidence) -> dict[str, Any]:
    rule = e.rule()
    return {
        "family": e.endpoint.family if e.endpoint is not None else _UNPARSED,
        "address": e.endpoint.address if e.endpoint is not None else None,
        "port": e.endpoint.port if e.endpoint is not None else None,
        "scope_id": e.endpoint.scope_id or None if e.endpoint is not None else None,
        "display": str(e.endpoint) if e.endpoint is not None else e.raw,
        "raw": e.raw or None,
        "calls": e.calls,
        "blocked": e.blocked,
        "runs": e.runs,
        "tests": list(e.tests),
        "programs": list(e.programs),
        "where": list(e.where),
        "names": list(e.names),
        "queries": list(e.queries),
        "globally_routable": e.routable,
        "rule": dict(rule[1]) if isinstance(rule, tuple) else None,
        "no_rule": None if isinstance(rule, tuple) else rule or "strace's line could not be parsed",
    }


def triage_header(found: Sequence[Evidence], reports: Sequence[str]) -> list[str]:
    what = (
        "1 undeclared destination" if len(found) == 1 else f"{len(found)} undeclared destinations"
    )
    runs = "1 report" if len(reports) == 1 else f"{len(reports)} reports"
    return [
        f"netaudit triage: {what} in {runs}: {', '.join(printable(r) for r in reports)}",
        "Each rule allows exactly one destination; the comment above it says how many calls,",
        "in how many runs, from which tests, programs and lines, and whether the address is",
        "globally routable. Keep what you mean to allow. Reference: docs/allowlist.md",
        "",
    ]


def baseline_header(source: str) -> list[str]:
    return [
        f"netaudit baseline: a starting allowlist from {printable(source)}.",
        f"Nothing here has been reviewed: every rule's name starts with {REVIEW_PREFIX.strip()!r}",
        "and has a '# review:' comment. Check each destination, delete the rules you do not",
        "mean to allow (and fix what made those calls), then drop the prefix from the rest.",
        "Built-in rules (loopback, Unix sockets, Netlink) stay on. Reference: docs/cli.md",
        "",
    ]
