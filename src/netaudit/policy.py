"""Per-test policy: what a ``@pytest.mark.netaudit(allow=[...], strict=...)`` marker adds to
the allowlist for one test (docs/pytest-plugin.md, "Per-test policy").

Pure: the plugin hands in the markers' keyword arguments and gets back a policy, or an
AllowlistError naming the test's file and line. Markers are read where the test runs (an
xdist worker, say) and travel to the judging side in the normalised, JSON-safe form
``normalise`` returns, which ``from_wire`` turns into rules there.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import AllowlistError
from .model import AF_INET, AF_INET6, AF_NETLINK, AF_UNIX
from .rules import Allowlist, Rule

#: The keyword arguments the marker takes.
MARKER_KEYS = ("allow", "strict")
#: How short strings are written, for error messages.
SHORT_FORMS = (
    '"10.0.0.5:5432", "10.0.0.5", "[2001:db8::1]:443", "10.0.0.0/8", "api.example.com:443", '
    '"*.example.com:443", '
    '"AF_UNIX:/run/docker.sock", "AF_UNIX:@name", "AF_UNIX", "AF_NETLINK"'
)

Wire = dict[str, Any]
#: A short string's host part that is meant as a name (host rules need --names); the
#: loader then checks it as it checks a file's ``host``.
_HOST = re.compile(r"[A-Za-z0-9_*-]+(\.[A-Za-z0-9_*-]+)*\.?")


@dataclass(frozen=True)
class TestPolicy:
    """What one test's markers allow beyond the allowlist, and whether built-ins are off."""

    __test__ = False  # not a pytest test class, despite the name

    allow: tuple[Rule, ...] = ()
    strict: bool = False

    def applied_to(self, allowlist: Allowlist) -> Allowlist:
        """The allowlist this test is judged by: the file's rules, then the marker's, then the
        built-ins unless the file or the marker switches them off."""
        return Allowlist(
            rules=allowlist.rules + self.allow,
            path=allowlist.path,
            builtins=allowlist.builtins and not self.strict,
        )


def label(nodeid: str) -> str:
    """How reports name the marker of a test: ``marker on tests/test_x.py::test_y``."""
    return f"marker on {nodeid}"


def normalise(
    markers: Sequence[tuple[Sequence[object], Mapping[str, object]]], source: str, line: int | None
) -> Wire | None:
    """The markers of one test (closest first: function, class, module), checked and merged.

    ``allow`` lists add up across levels; ``strict`` is taken from the closest marker that
    gives it. None when the test has no marker. Every mistake is an AllowlistError at
    ``source:line``.
    """
    if not markers:
        return None
    allow: list[object] = []
    strict: bool | None = None
    for args, kwargs in markers:
        if args:
            raise AllowlistError(
                "the netaudit marker takes keyword arguments only: "
                "netaudit(allow=[...]) or netaudit(strict=True)",
                source,
                line,
            )
        for key in kwargs:
            if key not in MARKER_KEYS:
                raise AllowlistError(
                    f"unknown argument {key!r} to the netaudit marker (it takes allow, strict)",
                    source,
                    line,
                )
        if "strict" in kwargs and strict is None:
            value = kwargs["strict"]
            if not isinstance(value, bool):
                raise AllowlistError(
                    f"strict= of the netaudit marker must be True or False, not {value!r}",
                    source,
                    line,
                )
            strict = value
        if "allow" in kwargs:
            # The same destination allowed at two levels (class and function) is one rule.
            allow += [e for e in _entries(kwargs["allow"], source, line) if e not in allow]
    wire: Wire = {"allow": allow, "strict": bool(strict)}
    from_wire(wire, "", source, line)  # every entry checked now, where the test is known
    return wire


def from_wire(wire: Mapping[str, Any], nodeid: str, source: str, line: int | None) -> TestPolicy:
    """The policy ``normalise`` described, with its rules named after the test's marker."""
    from .allowlist import inline_rules  # PyYAML: loaded only for a test with a marker

    allow = wire.get("allow", [])
    try:
        rules = inline_rules(allow, source, line, label(nodeid)) if allow else ()
    except AllowlistError as err:
        raise AllowlistError(
            f"the netaudit marker's allow: {err.message}", err.path, err.line
        ) from None
    return TestPolicy(allow=rules, strict=bool(wire.get("strict", False)))


def policies(
    wires: Iterable[tuple[str, str]], locations: Mapping[str, str]
) -> dict[str, TestPolicy]:
    """Each test's policy by nodeid, from ``(nodeid, JSON of normalise's result)`` pairs and
    the tests' ``file:line`` locations (which name the marker in errors and in rules)."""
    found: dict[str, TestPolicy] = {}
    for nodeid, text in wires:
        path, _, number = locations.get(nodeid, "").rpartition(":")
        line = int(number) if number.isdigit() else None
        found[nodeid] = from_wire(json.loads(text), nodeid, path or nodeid, line)
    return found


def _entries(value: object, source: str, line: int | None) -> list[object]:
    if not isinstance(value, (list, tuple)):
        raise AllowlistError(
            f"allow= of the netaudit marker must be a list, not {type(value).__name__} "
            f"(write allow=[{value!r}])",
            source,
            line,
        )
    entries: list[object] = []
    for index, entry in enumerate(value, start=1):
        if isinstance(entry, str):
            entries.append(short_rule(entry, index, source, line))
        elif isinstance(entry, Mapping):
            entries.append({key: _plain(v) for key, v in entry.items()})
        else:
            raise AllowlistError(
                f"entry #{index} of the netaudit marker's allow is {type(entry).__name__}; "
                f"write a rule dict or a string such as {SHORT_FORMS}",
                source,
                line,
            )
    return entries


def _plain(value: object) -> object:
    """Tuples as lists, so that the rule reaches the loader (and JSON) as written."""
    return list(value) if isinstance(value, tuple) else value


def short_rule(text: str, index: int, source: str, line: int | None) -> dict[str, object]:
    """A short string as the rule dict it stands for; the loader then checks the values."""
    family, sep, rest = text.partition(":")
    if family in (AF_UNIX, AF_NETLINK):
        if family == AF_NETLINK and sep:
            raise _short(text, index, source, line, "AF_NETLINK takes nothing after it")
        if not rest:
            return {"family": family}
        if rest.startswith("@"):
            return {"family": family, "abstract": rest[1:]}
        return {"family": family, "path": rest}
    host, port = text, ""
    if text.endswith(":") and not text.endswith("::"):
        raise _short(text, index, source, line, "no port after ':'")
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (text[end + 1 :] and not text[end + 1 :].startswith(":")):
            raise _short(text, index, source, line, "an IPv6 address in [...] is not closed")
        host, port = text[1:end], text[end + 2 :]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    key = "cidr" if "/" in host else "addr"
    try:
        version = ipaddress.ip_network(host, strict=False).version
    except ValueError:
        if not _HOST.fullmatch(host) or host.replace(".", "").isdigit():
            raise _short(
                text, index, source, line, f"{host!r} is not an IP address or a host name"
            ) from None
        rule: dict[str, object] = {"host": host}  # the loader checks it as it checks a file's
    else:
        rule = {"family": AF_INET6 if version == 6 else AF_INET, key: host}
    if port:
        rule["port"] = port
    return rule


def _short(text: str, index: int, source: str, line: int | None, why: str) -> AllowlistError:
    return AllowlistError(
        f"entry #{index} of the netaudit marker's allow, {text!r}: {why} "
        f"(short forms: {SHORT_FORMS})",
        source,
        line,
    )
