"""The allowlist DSL file format, read strictly; see docs/allowlist.md.

Loading reads ``yaml.compose()`` nodes rather than constructed Python values, so that every
error can name its line, duplicate keys are seen, and YAML 1.1 surprises (``yes`` as a boolean,
``010`` as octal, ``1:30`` as base 60) are refused instead of quietly becoming something the
user did not write. What a loaded rule allows lives in rules.py.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import replace

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from . import dns
from .errors import AllowlistError
from .model import AF_INET, AF_INET6, AF_NETLINK, AF_UNIX
from .rules import (
    ANY_IP,
    BUILTIN_NAMES,
    BUILTIN_RULES,
    DEFAULT,
    FAMILIES,
    IP_FAMILY,
    Allowlist,
    IPNetwork,
    Rule,
    compile_glob,
    glob_escape,
    ip_of,
)

__all__ = [
    "BUILTIN_RULES",
    "DEFAULT",
    "FAMILIES",
    "Allowlist",
    "Rule",
    "glob_escape",
    "inline_rules",
    "ip_of",
    "load",
    "loads",
    "schema",
]

_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")

_TOP_KEYS = ("version", "builtins", "allowlist")
_RULE_KEYS = ("name", "family", "host", "addr", "cidr", "port", "path", "abstract", "tests")
_FAMILY_KEYS = {
    AF_INET: ("host", "addr", "cidr", "port"),
    AF_INET6: ("host", "addr", "cidr", "port"),
    AF_UNIX: ("path", "abstract"),
    AF_NETLINK: (),
}
_IP_ONLY = "host, addr, cidr and port are for AF_INET and AF_INET6 rules"
_UNIX_ONLY = "path and abstract are for AF_UNIX rules"
_KEY_USE = {"host": _IP_ONLY, "addr": _IP_ONLY, "cidr": _IP_ONLY, "port": _IP_ONLY}
_KEY_USE.update(path=_UNIX_ONLY, abstract=_UNIX_ONLY)

_TAG = "tag:yaml.org,2002:"
_KINDS = {
    "str": "a string",
    "int": "a number",
    "float": "a floating-point number",
    "bool": "a boolean",
    "timestamp": "a date",
    "binary": "binary data",
}
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_PORT_TEXT = re.compile(r"(0|[1-9][0-9]*)(?:-(0|[1-9][0-9]*))?")
_PORT_EXPECTED = 'a port number, a range "lo-hi" or a list of them'


def load(path: str | os.PathLike[str]) -> Allowlist:
    """Read and check an allowlist file; every problem is an AllowlistError naming the file."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise AllowlistError("no such file; create it or name an existing one", source) from None
    except IsADirectoryError:
        raise AllowlistError("is a directory; name the allowlist file itself", source) from None
    except PermissionError:
        raise AllowlistError("permission denied; make it readable", source) from None
    except OSError as exc:
        raise AllowlistError(f"cannot be read: {exc.strerror or exc}", source) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise AllowlistError("not UTF-8 text; save the file as UTF-8", source, line) from None
    return loads(text, source)


def loads(text: str, source: str = "<string>") -> Allowlist:
    """Check an allowlist given as text; ``source`` names it in errors and in each rule."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(exc.problem or exc.context).split())
        context = f" ({' '.join(exc.context.split())})" if exc.problem and exc.context else ""
        line = mark.line + 1 if mark is not None else None
        raise AllowlistError(f"invalid YAML: {problem}{context}", source, line) from None
    except yaml.YAMLError as exc:
        position = getattr(exc, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else None
        message = " ".join(str(exc).split("\n")[0].split())
        raise AllowlistError(f"invalid YAML: {message}", source, line) from None
    except RecursionError:
        raise AllowlistError(
            "invalid YAML: nested too deeply; an allowlist needs three levels",
            source,
            _deepest_line(text),
        ) from None
    try:
        return _document(root, source)
    except _Invalid as exc:
        raise AllowlistError(exc.message, source, exc.line) from None


def schema() -> str:
    """The JSON Schema of the file, for editors (``netaudit schema``); shipped as package data."""
    from importlib.resources import files

    return files(__package__).joinpath("allowlist.schema.json").read_text(encoding="utf-8")


def inline_rules(
    items: Sequence[object], source: str, line: int | None, label: str
) -> tuple[Rule, ...]:
    """Rules given as Python values (a pytest marker's ``allow``), checked exactly as the file's
    rules are; each rule's name ends with ``(label)`` so that reports tell them from the
    file's. Errors name ``source:line``, the place the values were written."""
    try:
        text = yaml.safe_dump({"version": 1, "allowlist": list(items)}, sort_keys=False)
    except yaml.YAMLError:
        raise AllowlistError(
            "each allowed destination must be a string or a dict of strings and numbers",
            source,
            line,
        ) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        rules = _document(root, source).rules
    except _Invalid as exc:
        # Lines and numbers of the YAML made here would mean nothing to the user.
        message = re.sub(r" \(first at line \d+\)", "", exc.message)
        raise AllowlistError(message.replace("rule #", "entry #"), source, line) from None
    for rule in rules:
        if rule.tests:
            raise AllowlistError(
                f"'tests' in {rule.name!r} does not apply to a marker (it is for this test)",
                source,
                line,
            )
    return tuple(
        replace(rule, name=f"{rule.name} ({label})", source=source, line=line) for rule in rules
    )


def _deepest_line(text: str) -> int:
    """Where flow brackets (or, failing those, indentation) nest deepest: a hint of where a
    document too deep for the parser goes wrong."""
    depth = best = 0
    line = best_line = 1
    for char in text:
        if char == "\n":
            line += 1
        elif char in "[{":
            depth += 1
            if depth > best:
                best, best_line = depth, line
        elif char in "]}":
            depth = max(depth - 1, 0)
    if best:
        return best_line
    indents = [len(row) - len(row.lstrip(" -")) for row in text.splitlines()] or [0]
    return indents.index(max(indents)) + 1


class _Invalid(Exception):
    """A problem found at a node; loads() adds the file name."""

    def __init__(self, node: Node, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.line = _line(node)


def _line(node: Node) -> int | None:
    return node.start_mark.line + 1 if node.start_mark is not None else None


def _is(node: Node, kind: str) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _TAG + kind


def _describe(node: Node) -> str:
    """How a value reads to a user, for "must be X, not Y" messages."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == _TAG + "null":
        return "empty"
    kind = _KINDS.get(node.tag[len(_TAG) :], f"a value tagged {node.tag}")
    return f"{kind} {node.value!r}" if node.value else kind


def _entries(node: MappingNode, where: str) -> dict[str, tuple[Node, Node]]:
    """A mapping's entries by key; refuses keys that are not strings, and duplicates."""
    entries: dict[str, tuple[Node, Node]] = {}
    for key, value in node.value:
        if _is(key, "merge"):
            raise _Invalid(key, f"merge keys ('<<'){where} are not supported; write keys out")
        if not _is(key, "str"):
            raise _Invalid(key, f"a key{where} is {_describe(key)}; keys must be strings")
        if key.value in entries:
            first = _line(entries[key.value][0])
            raise _Invalid(key, f"duplicate key {key.value!r}{where} (first at line {first})")
        entries[key.value] = (key, value)
    return entries


def _refuse_unknown(
    entries: dict[str, tuple[Node, Node]], valid: tuple[str, ...], where: str
) -> None:
    for key, (key_node, _) in entries.items():
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(valid)})"
            raise _Invalid(key_node, f"unknown key {key!r}{where}{hint}")


def _document(root: Node | None, source: str) -> Allowlist:
    if root is None:
        raise AllowlistError("the file is empty; an allowlist starts with 'version: 1'", source)
    if not isinstance(root, MappingNode) or root.tag != _TAG + "map":
        raise _Invalid(
            root,
            f"the top level is {_describe(root)}; an allowlist is a mapping with "
            "'version: 1' and 'allowlist:' (see docs/allowlist.md)",
        )
    entries = _entries(root, " at the top level")
    if "version" not in entries:
        raise _Invalid(root, "missing 'version: 1' at the top level")
    version = entries["version"][1]
    if not _is(version, "int"):
        raise _Invalid(version, f"'version' must be the number 1, not {_describe(version)}")
    if version.value != "1":
        raise _Invalid(
            version, f"unsupported version {version.value}; this netaudit reads version 1"
        )
    _refuse_unknown(entries, _TOP_KEYS, " at the top level")
    builtins = _switch(entries["builtins"][1]) if "builtins" in entries else True
    rules = _rules(entries["allowlist"][1], source) if "allowlist" in entries else ()
    return Allowlist(rules=rules, path=source, builtins=builtins)


def _switch(node: Node) -> bool:
    """``true`` or ``false`` only: YAML 1.1's yes/no/on/off are too easy to misread."""
    if not (_is(node, "bool") and node.value.lower() in ("true", "false")):
        found = repr(node.value) if _is(node, "bool") else _describe(node)
        raise _Invalid(node, f"'builtins' must be true or false, not {found}")
    return bool(node.value.lower() == "true")


def _rules(items: Node, source: str) -> tuple[Rule, ...]:
    if not isinstance(items, SequenceNode) or items.tag != _TAG + "seq":
        raise _Invalid(items, f"'allowlist' must be a list of rules, not {_describe(items)}")
    rules: list[Rule] = []
    first_line: dict[str, int | None] = {}
    for index, item in enumerate(items.value, start=1):
        rule = _rule(item, index, source)
        at = _name_node(item) or item
        # Reports show only the name, so two rules with one name could not be told apart.
        if rule.name in BUILTIN_NAMES:
            raise _Invalid(
                at, f"rule name {rule.name!r} is taken by a built-in rule; choose another"
            )
        if rule.name in first_line:
            where = f"first at line {first_line[rule.name]}"
            raise _Invalid(at, f"duplicate rule name {rule.name!r} ({where}); names must differ")
        first_line[rule.name] = rule.line
        rules.append(rule)
    return tuple(rules)


def _name_node(node: MappingNode) -> Node | None:
    """The rule's name value when it is a usable string, looked up before the rule is checked."""
    pairs: list[tuple[Node, Node]] = node.value
    for key, value in pairs:
        if _is(key, "str") and key.value == "name" and _is(value, "str") and value.value:
            return value
    return None


def _label(node: MappingNode, index: int) -> str:
    """How errors refer to a rule: by its name when it has a usable one, else by position."""
    name = _name_node(node)
    return f"rule {name.value!r}" if name is not None else f"rule #{index}"


def _rule(node: Node, index: int, source: str) -> Rule:
    if not isinstance(node, MappingNode) or node.tag != _TAG + "map":
        raise _Invalid(node, f"rule #{index} must be a mapping of keys, not {_describe(node)}")
    label = _label(node, index)
    where = f" in {label}"
    entries = _entries(node, where)
    _refuse_unknown(entries, _RULE_KEYS, where)
    name = _name(entries["name"][1], where) if "name" in entries else None
    if "family" not in entries and "host" not in entries:
        raise _Invalid(node, f"missing 'family'{where} (one of {', '.join(FAMILIES)})")
    if "family" in entries:
        family = _string(entries["family"][1], "family", "a family name", where)
    else:  # a host rule: the name's IPv4 and IPv6 addresses alike
        family = AF_INET
    if family not in FAMILIES:
        raise _Invalid(
            entries["family"][1],
            f"unknown family {family!r}{where} (a rule can name {', '.join(FAMILIES)})",
        )
    for key, (key_node, _) in entries.items():
        if key in _KEY_USE and key not in _FAMILY_KEYS[family]:
            raise _Invalid(key_node, f"{key!r} does not apply to {family}{where} ({_KEY_USE[key]})")
    for first, second in (
        ("host", "addr"),
        ("host", "cidr"),
        ("addr", "cidr"),
        ("path", "abstract"),
    ):
        if first in entries and second in entries:
            raise _Invalid(entries[second][0], f"both {first!r} and {second!r}{where}; use one")
    values = {key: value for key, (_, value) in entries.items()}
    networks: tuple[IPNetwork, ...] = ()
    shown = "*"
    if "addr" in values:
        networks, shown = _addr(values["addr"], family, where)
    elif "cidr" in values:
        networks, shown = _cidr(values["cidr"], family, where)
    ports = _ports(values["port"], where) if "port" in values else ()
    paths = _pattern(values["path"], "path", where) if "path" in values else ()
    abstract = _pattern(values["abstract"], "abstract", where) if "abstract" in values else ()
    tests = _tests(values["tests"], where) if "tests" in values else ()
    hosts = _host(values["host"], where) if "host" in values else ()
    if "host" in values and "family" not in values:
        family = ANY_IP
    if name is None:
        name = _derived_name(family, shown, ports, paths, abstract, hosts)
        if tests:
            name += " for " + ", ".join(tests)
    return Rule(
        name,
        family,
        networks,
        ports,
        paths,
        abstract,
        source=source,
        line=_line(node),
        tests=tests,
        hosts=hosts,
    )


def _tests(node: Node, where: str) -> tuple[str, ...]:
    """Nodeid globs: a string or a non-empty list of them."""
    items = node.value if isinstance(node, SequenceNode) and node.tag == _TAG + "seq" else [node]
    if not items:
        raise _Invalid(node, f"'tests' is an empty list{where} (leave it out for every test)")
    globs: list[str] = []
    for item in items:
        glob = _string(item, "tests", "a nodeid glob or a list of them", where)
        try:
            compile_glob(glob, in_path=False)
        except ValueError as exc:
            raise _Invalid(item, f"bad glob {glob!r} in 'tests'{where}: {exc}") from None
        globs.append(glob)
    return tuple(globs)


def _host(node: Node, where: str) -> tuple[str, ...]:
    """A host name, or ``*.`` and a domain for any name under it; kept in lower case."""
    text = _string(node, "host", "a host name like api.example.com", where)
    name = text.lower()
    name = name[:-1] if name.endswith(".") else name
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        pass
    else:
        raise _Invalid(node, f"host {text!r} is an IP address{where} (use addr for an address)")
    bare = name[2:] if name.startswith("*.") else name
    if "*" in bare:
        raise _Invalid(
            node,
            f"host {text!r} has a '*' that is not its first label{where} "
            "(a wildcard host is '*.' and a domain, like '*.s3.amazonaws.com')",
        )
    if ":" in bare or "/" in bare:
        raise _Invalid(node, f"host {text!r} is not a host name{where} (put a port in 'port')")
    if not dns.is_name(bare):
        raise _Invalid(
            node,
            f"host {text!r} is not a host name{where} (letters, digits, '-' and '_' in "
            "dot-separated labels of at most 63, 253 in all)",
        )
    return (name,)


def _string(node: Node, key: str, expected: str, where: str) -> str:
    """A non-empty string value; anything YAML typed otherwise is refused, not converted."""
    if not _is(node, "str"):
        raise _Invalid(node, f"{key!r} must be {expected}, not {_describe(node)}{where}")
    if not node.value:
        raise _Invalid(node, f"{key!r} is an empty string{where}")
    text: str = node.value
    return text


def _name(node: Node, where: str) -> str:
    name = _string(node, "name", "a string (quote it)", where)
    if not name.isprintable():
        raise _Invalid(node, f"'name' {name!r} holds a control character{where}")
    return name


def _addr(node: Node, family: str, where: str) -> tuple[tuple[IPNetwork, ...], str]:
    text = _string(node, "addr", "an IP address (quote IPv6 addresses)", where)
    if "%" in text:
        raise _Invalid(node, f"addr {text!r} has a scope id{where} (leave '%...' out)")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        hint = " (addr is one address; write a network as cidr)" if "/" in text else ""
        raise _Invalid(node, f"invalid IP address {text!r}{where}{hint}") from None
    network = ipaddress.ip_network(ip)
    _check_family(node, network, family, "addr", text, where)
    return (network,), str(ip)


def _cidr(node: Node, family: str, where: str) -> tuple[tuple[IPNetwork, ...], str]:
    text = _string(node, "cidr", "a network like 10.0.2.0/24", where)
    if "/" not in text:
        raise _Invalid(
            node, f"cidr {text!r} has no prefix length{where} (use addr for one address)"
        )
    try:
        network = ipaddress.ip_network(text)
    except ValueError:
        try:
            wider = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise _Invalid(node, f"invalid network {text!r}{where}") from None
        raise _Invalid(
            node, f"cidr {text!r} has host bits set{where} (did you mean {wider}?)"
        ) from None
    _check_family(node, network, family, "cidr", text, where)
    return (network,), str(network)


def _check_family(
    node: Node, network: IPNetwork, family: str, key: str, text: str, where: str
) -> None:
    """The address must be of the rule's family, and not one the audit never sees as such."""
    what = f"{key} {text!r}"
    right = IP_FAMILY[network.version]
    if right != family:
        raise _Invalid(
            node, f"{what} is IPv{network.version} but the family is {family}{where} (use {right})"
        )
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_V4_MAPPED):
        mapped = network.network_address.ipv4_mapped
        v4 = ipaddress.IPv4Network((str(mapped), network.prefixlen - 96))
        shown = v4.network_address if v4.prefixlen == 32 else v4
        hint = f"such calls are audited as AF_INET: write family AF_INET, {key} {shown}"
        raise _Invalid(node, f"{what} is IPv4-mapped{where} ({hint})")


def _ports(node: Node, where: str) -> tuple[tuple[int, int], ...]:
    if isinstance(node, SequenceNode) and node.tag == _TAG + "seq":
        if not node.value:
            raise _Invalid(node, f"'port' is an empty list{where} (leave it out for any port)")
        return tuple(_port_range(item, where) for item in node.value)
    return (_port_range(node, where),)


def _port_range(node: Node, where: str) -> tuple[int, int]:
    if _is(node, "int"):
        text: str = node.value
        if text.startswith("-") and _DECIMAL.fullmatch(text[1:]):
            raise _Invalid(node, f"port {text} is negative{where} (ports are 0-65535)")
        if not _DECIMAL.fullmatch(text):
            read = yaml.safe_load(text)
            hint = f"YAML would read it as {read}; write ports in plain decimal"
            raise _Invalid(node, f"port {text} is not a plain decimal number{where} ({hint})")
        low = high = int(text)
    elif _is(node, "str"):
        text = node.value
        match = _PORT_TEXT.fullmatch(text)
        if match is None:
            raise _Invalid(node, f"invalid port {text!r}{where} ({_PORT_EXPECTED})")
        low = int(match.group(1))
        high = int(match.group(2) or low)
    else:
        raise _Invalid(node, f"'port' must be {_PORT_EXPECTED}, not {_describe(node)}{where}")
    if high > 65535:
        raise _Invalid(node, f"port {high} is out of range 0-65535{where}")
    if low > high:
        raise _Invalid(node, f"port range {text!r} runs backwards{where} (write '{high}-{low}')")
    return low, high


def _pattern(node: Node, key: str, where: str) -> tuple[str, ...]:
    in_path = key == "path"
    pattern = _string(node, key, "a string" + (" (a path or glob)" if in_path else ""), where)
    if pattern.startswith("@"):
        hint = "use 'abstract' for abstract names" if in_path else "write the name without it"
        raise _Invalid(
            node, f"{key} {pattern!r} starts with '@'{where} ({hint}; '[@]' is a literal @)"
        )
    try:
        compile_glob(pattern, in_path)
    except ValueError as exc:
        raise _Invalid(node, f"bad glob {pattern!r}{where}: {exc}") from None
    return (pattern,)


def _derived_name(
    family: str,
    shown: str,
    ports: tuple[tuple[int, int], ...],
    paths: tuple[str, ...],
    abstract: tuple[str, ...],
    hosts: tuple[str, ...] = (),
) -> str:
    """The name of a rule written without one, built from what it allows."""
    if hosts:
        listed = ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ports)
        where = f"host {hosts[0]}" + (f":{listed}" if listed else "")
        return where if family == ANY_IP else f"{family} {where}"
    if family in (AF_INET, AF_INET6):
        if not ports:
            return f"{family} {shown if shown != '*' else '(any)'}"
        host = f"[{shown}]" if family == AF_INET6 and shown != "*" else shown
        listed = ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ports)
        return f"{family} {host}:{listed}"
    if paths:
        return f"{family} {paths[0]}"
    if abstract:
        return f"{family} @{abstract[0]}"
    return f"{family} (any)"
