"""Suggested allowlist rules: a YAML allowlist that allows exactly the violations seen.

Each rule names one destination (an address and port, or one socket name with its glob
characters escaped), so pasting the suggestions in never allows more than was seen; widening
a rule is left to the user. The round trip is tested in tests/unit/test_suggest.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Union

import yaml

from ..model import AF_INET, AF_INET6, AF_NETLINK, AF_UNIX, Destination, Endpoint
from ..rules import glob_escape, ip_of

_HEADER = """\
# Suggested allowlist rules: one for each destination that was not allowed.
# Each rule allows exactly what was seen, one address and port or one socket name;
# a host rule, when the trace saw the address resolved, allows that name's answers.
# Widen a rule (cidr, a port range, a glob) only on purpose. Built-in rules stay on
# unless you add 'builtins: false'. Reference: docs/allowlist.md
"""
#: Said under the rules when one allows the system's resolver.
_RESOLVER = """\
#
# A rule for the system resolver (a nameserver of /etc/resolv.conf, port 53) lets the tests
# it covers look up any name, and a name looked up can carry data out (DNS tunnelling): so it
# is scoped to the tests that used it ('tests'). Remove one if its test should not resolve
# names at all; widen it to every test only on purpose.
"""
_UNIX_UNNAMED = "unnamed: only a rule for all Unix sockets ('family: AF_UNIX' alone) allows it"
_NETLINK = "rules cannot tell netlink sockets apart: only 'family: AF_NETLINK' (all) allows it"
_LONGEST_WHO = 80

#: How a rule is ordered in the output: family rank, then address (or kind) and port/name.
_SortKey = tuple[int, Union[int, str], Union[int, str]]
_Fields = dict[str, Union[str, int]]
#: An exact rule: its sort key, its YAML fields, and how it is shown.
ExactRule = tuple[_SortKey, _Fields, str]


@dataclass
class _Seen:
    """A suggested rule (or the reason there is none) and who made the calls it is about."""

    shown: str
    fields: _Fields = field(default_factory=dict)
    reason: str = ""
    tests: set[str] = field(default_factory=set)
    programs: set[str] = field(default_factory=set)
    #: The system's resolver: its rule is scoped to the tests seen (see _RESOLVER).
    resolver: bool = False

    def add(self, destination: Destination) -> None:
        if destination.test:
            self.tests.add(destination.test)
        self.programs.update(destination.programs)


def suggest_rules(destinations: Iterable[Destination]) -> str:
    """A ``version: 1`` allowlist with one rule per distinct violated endpoint.

    Allowed destinations are skipped. Destinations no rule can express exactly are listed in
    comments at the end, each with the reason.
    """
    rules: dict[tuple[_SortKey, bool], _Seen] = {}
    unexpressible: dict[str, _Seen] = {}
    for destination in destinations:
        if destination.verdict.allowed:
            continue
        endpoint = destination.endpoint
        found = exact_rule(endpoint, destination.names) if endpoint is not None else None
        if isinstance(found, tuple):
            key, fields, shown = found
            resolver = destination.resolver and bool(destination.test)
            if resolver:
                shown = f"system resolver {shown}"
            seen = rules.setdefault((key, resolver), _Seen(shown, fields, resolver=resolver))
            seen.add(destination)
        else:
            reason = found or "strace's line could not be parsed, so no rule can allow it"
            shown = _printable(f"{destination.family} {destination.address}")
            unexpressible.setdefault(shown, _Seen(shown, reason=reason)).add(destination)
    listed = [
        {"name": f"{seen.shown}{_who(seen)}", **seen.fields, **_scope(seen)}
        for _, seen in sorted(rules.items(), key=lambda item: item[0])
    ]
    # allow_unicode=False: PyYAML writes U+0085 and U+2028 raw, and they read back as line
    # breaks; escaped, every path survives the round trip. A huge width keeps names on one line.
    document = yaml.safe_dump(
        {"version": 1, "allowlist": listed}, sort_keys=False, allow_unicode=False, width=1 << 20
    )
    note = _RESOLVER if any(seen.resolver for seen in rules.values()) else ""
    return _HEADER + document + note + _comments(unexpressible)


def _scope(seen: _Seen) -> dict[str, list[str]]:
    """A resolver's rule allows it only to the tests that used it (each matches itself)."""
    return {"tests": sorted(seen.tests)} if seen.resolver else {}


def _host_rule(names: tuple[str, ...], endpoint: Endpoint) -> tuple[_SortKey, _Fields, str] | None:
    """A rule for the name the address was resolved from: the address may change, the name
    stays. The shortest name is the one asked for; longer ones are usually CDN aliases."""
    if endpoint.port is None:
        return None
    name = min(names, key=lambda n: (len(n), n))
    fields: _Fields = {"host": name, "port": endpoint.port}
    return (-1, name, endpoint.port), fields, f"host {name}:{endpoint.port}"


def _rule_for(endpoint: Endpoint) -> tuple[_SortKey, _Fields, str] | str:
    """The exact rule for ``endpoint`` (its sort key, fields and display text), or why not."""
    family = endpoint.family
    if family in (AF_INET, AF_INET6):
        ip = ip_of(endpoint)
        if ip is None:
            return f"{endpoint.address!r} is not a well-formed {family} address"
        if endpoint.port is None:
            return "no port was recorded, and a rule without a port allows every port"
        host = str(ip) if ip.version == 4 else f"[{ip}]"
        rule_family = AF_INET if ip.version == 4 else AF_INET6
        key: _SortKey = (0 if ip.version == 4 else 1, int(ip), endpoint.port)
        fields: _Fields = {"family": rule_family, "addr": str(ip), "port": endpoint.port}
        return key, fields, f"{rule_family} {host}:{endpoint.port}"
    if family == AF_UNIX:
        address = endpoint.address
        if not address:
            return _UNIX_UNNAMED
        if address == "@":
            return "an empty abstract name cannot be written in a rule"
        if address.startswith("@"):
            fields = {"family": AF_UNIX, "abstract": glob_escape(address[1:])}
            return (2, 1, address), fields, f"{AF_UNIX} {_printable(address)}"
        fields = {"family": AF_UNIX, "path": glob_escape(address)}
        return (2, 0, address), fields, f"{AF_UNIX} {_printable(address)}"
    if family == AF_NETLINK:
        return _NETLINK
    return f"no rule can allow family {_printable(family)}"


def _who(seen: _Seen) -> str:
    """' (seen from X and N more)': the tests when there are any, else the programs."""
    names = sorted(seen.tests or seen.programs)
    if not names:
        return ""
    first = _printable(names[0])
    if len(first) > _LONGEST_WHO:
        first = first[: _LONGEST_WHO - 3] + "..."
    more = f" and {len(names) - 1} more" if len(names) > 1 else ""
    return f" (seen from {first}{more})"


def _comments(unexpressible: dict[str, _Seen]) -> str:
    if not unexpressible:
        return ""
    lines = ["#", "# Not allowed, and no rule can allow exactly these:"]
    for shown, seen in sorted(unexpressible.items()):
        lines += [f"#   {shown}{_who(seen)}", f"#     {seen.reason}"]
    return "\n".join(lines) + "\n"


def _printable(text: str) -> str:
    """``text`` on one line, safe in a YAML comment or rule name, and still distinct.

    Backslashes are doubled so that no two texts escape to the same result.
    """
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


def exact_rule(endpoint: Endpoint, names: tuple[str, ...] = ()) -> ExactRule | str:
    """The rule that allows exactly ``endpoint`` (sort key, YAML fields, display), or why no
    rule can: the one source of exact rules, shared with triage and baselines. A host rule
    when the trace saw ``names`` resolve to the address, as for the suggested rules."""
    found = _rule_for(endpoint)
    if names and isinstance(found, tuple):
        return _host_rule(names, endpoint) or found
    return found


def printable(text: str) -> str:
    """``text`` made safe for a YAML comment or a rule name (see ``_printable``)."""
    return _printable(text)
