"""What a rule allows and how an endpoint is matched: the rule model and the built-in rules.

No I/O and no YAML here, so that judging a trace needs only this module; reading the DSL file
is allowlist.py's job.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Union

from .model import AF_INET, AF_INET6, AF_NETLINK, AF_UNIX, Endpoint

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

#: The families a rule can name, in the order error messages list them.
FAMILIES = (AF_INET, AF_INET6, AF_UNIX, AF_NETLINK)
#: The family an IP address of each version belongs to.
IP_FAMILY = {4: AF_INET, 6: AF_INET6}
#: The family of a host rule written without one: a name resolves to IPv4 and IPv6 alike.
ANY_IP = "AF_INET/AF_INET6"
#: The verdict's rule for a UDP connect that only sorted DNS answers (model.PROBE).
RESOLVED = "resolved, not connected (UDP probe)"


@dataclass(frozen=True)
class Rule:
    """One way a destination can be allowed. Empty tuples mean "any" for that part.

    Glob patterns (``paths``, ``abstract``) follow docs/allowlist.md: in a path, ``*``, ``?``
    and ``[...]`` never match ``/`` and ``**`` matches anything; an abstract name is flat, so
    there every wildcard matches any character.
    """

    name: str
    family: str
    networks: tuple[IPNetwork, ...] = ()
    ports: tuple[tuple[int, int], ...] = ()
    paths: tuple[str, ...] = ()
    abstract: tuple[str, ...] = ()
    builtin: bool = False
    source: str | None = None
    line: int | None = None
    #: Test scopes: nodeid globs (every wildcard matches any character, ``/`` and ``::``
    #: included), each also matching literally what it names (scope_matches); the rule allows
    #: only events attributed to a matching test; empty for every event.
    tests: tuple[str, ...] = ()
    #: Host names or ``*.suffix`` patterns (lower case): the address must have been the
    #: answer for a matching name in the trace (see docs/allowlist.md).
    hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A rule for a family it cannot narrow would silently allow every destination of it.
        if self.family not in FAMILIES and not (self.family == ANY_IP and self.hosts):
            raise ValueError(f"a rule cannot allow family {self.family!r}")
        ip = self.family in (AF_INET, AF_INET6, ANY_IP)
        if (ip and (self.paths or self.abstract)) or (
            not ip and (self.networks or self.ports or self.hosts)
        ):
            raise ValueError(f"rule {self.name!r} narrows by a key its family does not have")

    def matches(
        self, endpoint: Endpoint, names: frozenset[str] = frozenset(), test: str | None = None
    ) -> bool:
        """True when this rule allows ``endpoint``; v4-mapped IPv6 is judged as the IPv4 it is.

        ``names`` are the host names the trace saw resolve to the endpoint's address; a host
        rule allows nothing else. ``test`` is the nodeid (or ``<session>``) the event is
        attributed to; a rule scoped by ``tests`` allows nothing outside a test session
        (``test`` None or "").
        """
        if self.tests and not (test and self.in_scope(test)):
            return False
        if self.hosts and not any(host_matches(p, n) for p in self.hosts for n in names):
            return False
        if self.family in (AF_INET, AF_INET6, ANY_IP):
            ip = ip_of(endpoint)
            if ip is None or (self.family != ANY_IP and IP_FAMILY[ip.version] != self.family):
                return False
            if self.networks and not any(ip in network for network in self.networks):
                return False
            port = endpoint.port
            return not self.ports or (
                port is not None and any(a <= port <= b for a, b in self.ports)
            )
        if endpoint.family != self.family:
            return False
        if self.family == AF_NETLINK or not (self.paths or self.abstract):
            return True
        address = endpoint.address
        if address.startswith("@"):
            return any(compile_glob(p, in_path=False).fullmatch(address[1:]) for p in self.abstract)
        return bool(address) and any(
            compile_glob(p, in_path=True).fullmatch(address) for p in self.paths
        )

    def in_scope(self, test: str) -> bool:
        """True when ``test`` matches one of the rule's ``tests`` scopes."""
        return any(scope_matches(scope, test) for scope in self.tests)


@dataclass(frozen=True)
class Allowlist:
    """The user's rules in file order, then the built-ins unless switched off."""

    rules: tuple[Rule, ...]
    path: str | None = None
    builtins: bool = True

    def all_rules(self) -> tuple[Rule, ...]:
        """Every rule in matching order."""
        return self.rules + BUILTIN_RULES if self.builtins else self.rules

    def unnamed_hosts(self, names: bool) -> str:
        """A warning when host rules cannot allow anything because names are not traced."""
        hosts = [rule for rule in self.rules if rule.hosts]
        if names or not hosts:
            return ""
        first = hosts[0]
        return (
            f"{len(hosts)} host rule(s) (the first at {first.source}:{first.line}) allow nothing "
            "without DNS names traced: add --names (pytest: --netaudit-names) or "
            "'names = true' under [tool.netaudit]"
        )

    def match(
        self,
        endpoint: Endpoint | None,
        names: frozenset[str] = frozenset(),
        test: str | None = None,
    ) -> Rule | None:
        """The first rule that allows ``endpoint`` for ``test``; None for a violation or an
        unparsed call."""
        if endpoint is None:
            return None
        return next(
            (rule for rule in self.all_rules() if rule.matches(endpoint, names, test)), None
        )

    def scoped(self) -> tuple[Rule, ...]:
        """The rules that apply only to some tests."""
        return tuple(rule for rule in self.rules if rule.tests)

    def unmatched_scopes(self, tests: Iterable[str]) -> tuple[tuple[Rule, str], ...]:
        """Each ``tests`` scope of a rule that matches none of ``tests`` (the nodeids a run
        ran, and ``<session>``): a typo, or a pattern that says something else than meant."""
        ran = tuple(tests)
        return tuple(
            (rule, scope)
            for rule in self.scoped()
            for scope in rule.tests
            if not any(scope_matches(scope, test) for test in ran)
        )


BUILTIN_RULES: tuple[Rule, ...] = (
    # 0.0.0.0 and :: as a destination reach the local host (notes/strace.md §a.1).
    Rule(
        "loopback (IPv4)",
        AF_INET,
        networks=(ipaddress.IPv4Network("127.0.0.0/8"), ipaddress.IPv4Network("0.0.0.0/32")),
        builtin=True,
    ),
    Rule(
        "loopback (IPv6)",
        AF_INET6,
        networks=(ipaddress.IPv6Network("::1/128"), ipaddress.IPv6Network("::/128")),
        builtin=True,
    ),
    Rule("Unix sockets", AF_UNIX, builtin=True),
    Rule("Netlink", AF_NETLINK, builtin=True),
)

DEFAULT = Allowlist(rules=())
#: Names a user's rule may not take: reports show only the name.
BUILTIN_NAMES = frozenset(rule.name for rule in BUILTIN_RULES) | {RESOLVED}


def ip_of(endpoint: Endpoint) -> IPAddress | None:
    """The IP address an AF_INET/AF_INET6 endpoint goes to, with v4-mapped IPv6 as IPv4.

    None when the endpoint is of another family or its address is not a well-formed IP.
    """
    return _ip_of(endpoint.family, endpoint.address)


def scope_matches(scope: str, test: str) -> bool:
    """Whether a ``tests`` scope covers the test ``test`` (a nodeid, or ``<session>``).

    Literally first: the test it names exactly (a copied nodeid, ``[...]`` parameters and
    all), and everything under a folder, file, class or function it names (``tests/sub/``,
    ``tests/sub``, ``tests/x.py``, ``tests/x.py::TestC``, ``tests/x.py::test_p`` for each of
    its parameters). Then as a glob, in which every wildcard matches any character.
    """
    if test.startswith(scope):
        rest = test[len(scope) :]
        if not rest or scope.endswith(("/", "::")) or rest.startswith(("/", "::", "[")):
            return True
    return bool(compile_glob(scope, in_path=False).fullmatch(test))


def host_matches(pattern: str, name: str) -> bool:
    """``name`` is ``pattern``, or ends in ``.suffix`` for ``*.suffix`` (one label or more)."""
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and len(name) > len(pattern) - 1
    return name == pattern


def glob_escape(text: str) -> str:
    """A path or abstract-name pattern that matches exactly ``text`` and nothing else."""
    escaped = re.sub(r"[*?\[]", lambda m: f"[{m.group()}]", text)
    return "[@]" + escaped[1:] if escaped.startswith("@") else escaped


@functools.lru_cache(maxsize=4096)
def _ip_of(family: str, address: str) -> IPAddress | None:
    """The address an IP endpoint goes to, or None when the endpoint is not a well-formed one."""
    if family not in (AF_INET, AF_INET6) or "%" in address:
        return None
    ip: IPAddress
    try:  # the C library reads the usual forms 4x faster than ipaddress, and agrees on them
        packed = socket.inet_pton(socket.AF_INET if family == AF_INET else socket.AF_INET6, address)
        ip = ipaddress.IPv4Address(packed) if len(packed) == 4 else ipaddress.IPv6Address(packed)
    except (OSError, ValueError):
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip if IP_FAMILY[ip.version] == family else None


@functools.lru_cache(maxsize=1024)
def compile_glob(pattern: str, in_path: bool) -> re.Pattern[str]:
    """Compile a glob; raises ValueError for an unclosed ``[`` or a backwards range."""
    one = "[^/]" if in_path else "."
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            stars = len(pattern[i:]) - len(pattern[i:].lstrip("*"))
            parts.append("[^/]*" if in_path and stars == 1 else ".*")
            i += stars
        elif char == "?":
            parts.append(one)
            i += 1
        elif char == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] != "!" else i + 3)
            if end < 0:
                raise ValueError("'[' is not closed (write '[[]' for a literal '[')")
            parts.append(("(?!/)" if in_path else "") + _char_class(pattern[i + 1 : end]))
            i = end + 1
        else:
            parts.append(re.escape(char))
            i += 1
    return re.compile("".join(parts), re.DOTALL)


def _char_class(body: str) -> str:
    """Translate the inside of a ``[...]`` glob class into a regex class."""
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    items: list[str] = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            low, high = body[i], body[i + 2]
            if low > high:
                raise ValueError(f"range '{low}-{high}' in '[...]' runs backwards")
            items.append(f"{re.escape(low)}-{re.escape(high)}")
            i += 3
        else:
            items.append(re.escape(body[i]))
            i += 1
    return ("[^" if negate else "[") + "".join(items) + "]"
