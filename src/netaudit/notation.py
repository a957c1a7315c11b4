"""strace's printed notation: quoted strings, structures, argument lists and socket addresses.

The parser needs these to read a call's arguments; they live apart from it because they know
only how strace prints, not what a log line is. Pure functions, no state, no caches: the
parser caches what they return.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TypeVar

from .model import AF_INET, AF_INET6, AF_NETLINK, AF_UNIX, Endpoint

__all__ = [
    "OCTET", "PORT", "fields", "peer", "sockaddr", "split_args", "string", "unescape",
    "unescape_bytes",
]  # fmt: skip

#: One decimal octet of a dotted IPv4 address, 0-255 without leading zeros.
OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
#: A port as strace prints it: decimal, without leading zeros (any other form is kept as
#: printed, and no IP rule allows it).
PORT = r"(?:0|[1-9][0-9]{0,4})"

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"(?:\.\.\.)?|[\[\]{}()"]|, ', re.S)
_CLOSER = {"(": ")", "[": "]", "{": "}"}
_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.)", re.S)
_SIMPLE_ESCAPES = {b"n": b"\n", b"t": b"\t", b"r": b"\r", b"v": b"\v", b"f": b"\f"}
_S = r'"((?:[^"\\]|\\.)*)"'
_SA_INET = re.compile(
    r"sa_family=AF_INET, sin_port=htons\((" + PORT + r")\), sin_addr=inet_addr\(" + _S + r"\)"
)
_SA_INET6 = re.compile(
    r"sa_family=AF_INET6, sin6_port=htons\((" + PORT + r")\), sin6_flowinfo=htonl\([0-9]+\), "
    r"inet_pton\(AF_INET6, " + _S + r", &sin6_addr\)"
    r"(?:, sin6_scope_id=(?:if_nametoindex\(" + _S + r"\)|([0-9]+)))?"
)
_SA_UNIX = re.compile(r"sa_family=AF_UNIX(?:, sun_path=(@?)" + _S + r"(?:\.\.\.)?)?", re.S)
_SA_NETLINK = re.compile(r"sa_family=AF_NETLINK, nl_pid=(-?[0-9]+), nl_groups=[0-9a-fx]+")
_SA_FAMILY = re.compile(r"sa_family=([A-Za-z0-9_]+)(?: /\*[^*]*\*/)?(?:, |$)")

_IP = TypeVar("_IP", ipaddress.IPv4Address, ipaddress.IPv6Address)


def sockaddr(inner: str) -> Endpoint:
    """Reads the inside of a sockaddr's braces; a form it does not know is kept as printed."""
    m = _SA_INET.fullmatch(inner)
    ip4 = _ip(ipaddress.IPv4Address, m.group(2)) if m else None
    if m and ip4 is not None:
        return Endpoint(AF_INET, str(ip4), int(m.group(1)))
    m = _SA_INET6.fullmatch(inner)
    ip6 = _ip(ipaddress.IPv6Address, m.group(2)) if m else None
    if m and ip6 is not None and ip6.ipv4_mapped is not None:
        return Endpoint(AF_INET, str(ip6.ipv4_mapped), int(m.group(1)))
    if m and ip6 is not None:
        scope = unescape(m.group(3)) if m.group(3) is not None else m.group(4) or ""
        return Endpoint(AF_INET6, str(ip6), int(m.group(1)), "" if scope == "0" else scope)
    m = _SA_UNIX.fullmatch(inner)
    if m is not None:
        path = m.group(1) + unescape(m.group(2)) if m.group(2) is not None else ""
        return Endpoint(AF_UNIX, path)
    m = _SA_NETLINK.fullmatch(inner)
    if m is not None:
        return Endpoint(AF_NETLINK, f"pid={m.group(1)}")
    m = _SA_FAMILY.match(inner)
    if m is None:
        raise ValueError(f"not a sockaddr: {inner!r}")
    return Endpoint(m.group(1), inner)


def _ip(kind: type[_IP], text: str) -> _IP | None:
    """The canonical address, or None where strace printed something else."""
    try:
        return kind(unescape(text))
    except ValueError:
        return None


def string(text: str) -> str:
    """A quoted strace string, decoded; a cut one (``"abc"...``) keeps what is shown."""
    if text.endswith('"...'):
        text = text[:-3]
    if len(text) >= 2 and text.startswith('"') and text.endswith('"'):
        return unescape(text[1:-1])
    return text


def unescape_bytes(text: str) -> bytes:
    """The bytes of a quoted string's inside, as the traced program had them."""
    raw = text.encode("utf-8", "surrogateescape")
    return _ESCAPE.sub(_unescape_one, raw) if b"\\" in raw else raw


_PEER = re.compile(r"(?:UDP|TCP)(?:v6)?:\[.*->(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):([0-9]+)\]")


def peer(decoration: str) -> Endpoint | None:
    """The peer of a connected socket as ``-yy`` shows it (``UDP:[a:p->b:q]``), or None."""
    m = _PEER.fullmatch(decoration)
    if m is None:
        return None
    try:
        ip = ipaddress.ip_address(m.group(1) or m.group(2))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return Endpoint(AF_INET, str(ip.ipv4_mapped), int(m.group(3)))
    return Endpoint(AF_INET6 if ip.version == 6 else AF_INET, str(ip), int(m.group(3)))


def unescape(text: str) -> str:
    r"""Undoes strace's escapes (``\"``, ``\n``, ``\303``, ``\xNN``); bad UTF-8 stays visible."""
    if "\\" not in text:
        return text
    raw = _ESCAPE.sub(_unescape_one, text.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "backslashreplace")


def _unescape_one(m: re.Match[bytes]) -> bytes:
    code = m.group(1)
    if code[:1] == b"x" and len(code) == 3:
        return bytes([int(code[1:], 16)])
    if code[:1].isdigit() and code[:1] not in b"89":
        return bytes([int(code, 8) & 0xFF])
    return _SIMPLE_ESCAPES.get(code, code)


def split_args(text: str) -> list[str] | None:
    """Splits at top-level ``, ``, strings being opaque; None when the brackets do not match."""
    pieces: list[str] = []
    stack: list[str] = []
    start = 0
    for m in _TOKEN.finditer(text):
        token = m.group()
        if token == ", ":
            if not stack:
                pieces.append(text[start : m.start()])
                start = m.end()
        elif token in _CLOSER:
            stack.append(_CLOSER[token])
        elif token == '"' or (len(token) == 1 and (not stack or stack.pop() != token)):
            return None  # a string the line cut short, or a bracket that does not match
    if stack:
        return None
    pieces.append(text[start:])
    return pieces


def fields(struct: str) -> dict[str, str]:
    """The fields of ``{name=value, ...}`` by name."""
    parts = split_args(struct[1:-1]) if struct.startswith("{") and struct.endswith("}") else None
    if parts is None:
        raise ValueError("not a structure")
    return dict(part.split("=", 1) for part in parts if "=" in part)
