"""Property tests of the strace log parser: it never raises, and it never loses or invents a call.

Well-formed lines are built the way strace 6.1 prints them (see tests/fixtures/strace), with
every prefix, timestamp, fd decoration and result form the parser must read.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import NamedTuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netaudit.model import (
    AF_INET,
    AF_INET6,
    AF_NETLINK,
    AF_UNIX,
    Endpoint,
    NetCall,
    Record,
    Syscall,
)
from netaudit.parse import INVALID, Parser, parse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "strace"
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fixture_lines() -> list[str]:
    lines: list[str] = []
    for log in sorted(FIXTURES.glob("*.log")):
        lines += log.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    return lines


LINES = fixture_lines()
#: Fixture lines that make at least one NetCall on their own.
NET_LINES = [line for line in LINES if any(isinstance(r, NetCall) for r in parse([line]))]
#: A sending syscall's name where strace puts one: at the start or after the prefix.
TOKEN = re.compile(r"(?:^|\s|\])(connect|sendto|sendmsg|sendmmsg)\(")
#: What can make a mangled line a documented non-event: a send with no address of its own,
#: or a disconnect.
NON_EVENT = re.compile(r"NULL|AF_UNSPEC|msg_namelen=0\b|0x[0-9a-f]*, 0\)")


def strace_string(data: bytes, hexed: bool) -> str:
    """Quotes bytes as strace does: printable ASCII as is, the rest escaped."""
    if hexed and any(b < 0x20 or b > 0x7E for b in data):
        return '"' + "".join(f"\\x{b:02x}" for b in data) + '"'
    out = []
    for b in data:
        if b in (0x22, 0x5C):
            out.append("\\" + chr(b))
        elif 0x20 <= b <= 0x7E:
            out.append(chr(b))
        else:
            out.append({9: "\\t", 10: "\\n", 13: "\\r"}.get(b, f"\\{b:03o}"))
    return '"' + "".join(out) + '"'


@st.composite
def sockaddrs(draw: st.DrawFn) -> tuple[str, Endpoint]:
    """A sockaddr as strace prints it, with the Endpoint it stands for."""
    port = draw(st.integers(0, 65535))
    kind = draw(st.sampled_from(["inet", "inet6", "unix", "abstract", "unnamed", "netlink", "odd"]))
    if kind == "inet":
        ip4 = draw(st.ip_addresses(v=4))
        text = f'sa_family=AF_INET, sin_port=htons({port}), sin_addr=inet_addr("{ip4}")'
        return "{" + text + "}", Endpoint(AF_INET, str(ip4), port)
    if kind == "inet6":
        ip6 = draw(st.one_of(st.ip_addresses(v=6), st.ip_addresses(v=4)).map(as_ipv6))
        shown = draw(st.sampled_from([str(ip6), ip6.exploded]))
        scope, scope_text = draw(
            st.sampled_from([("", "0"), ("lo", 'if_nametoindex("lo")'), ("99", "99")])
        )
        flow = draw(st.integers(0, 2**20 - 1))
        text = (
            f"sa_family=AF_INET6, sin6_port=htons({port}), sin6_flowinfo=htonl({flow}), "
            f'inet_pton(AF_INET6, "{shown}", &sin6_addr), sin6_scope_id={scope_text}'
        )
        if ip6.ipv4_mapped is not None:
            return "{" + text + "}", Endpoint(AF_INET, str(ip6.ipv4_mapped), port)
        return "{" + text + "}", Endpoint(AF_INET6, str(ip6), port, scope)
    if kind in ("unix", "abstract"):
        path = draw(st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b))
        at = "@" if kind == "abstract" else ""
        text = f"sa_family=AF_UNIX, sun_path={at}{strace_string(path, draw(st.booleans()))}"
        return "{" + text + "}", Endpoint(AF_UNIX, at + path.decode("utf-8", "backslashreplace"))
    if kind == "unnamed":
        return "{sa_family=AF_UNIX}", Endpoint(AF_UNIX, "")
    if kind == "netlink":
        pid = draw(st.integers(0, 2**31))
        return f"{{sa_family=AF_NETLINK, nl_pid={pid}, nl_groups=00000000}}", Endpoint(
            AF_NETLINK, f"pid={pid}"
        )
    data = strace_string(draw(st.binary(max_size=14)), draw(st.booleans()))
    inner = f"sa_family=0x63 /* AF_??? */, sa_data={data}"
    return "{" + inner + "}", Endpoint("0x63", inner)


def as_ipv6(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    """IPv6 as is; IPv4 as the v4-mapped IPv6 address that strace prints for it."""
    return ip if isinstance(ip, ipaddress.IPv6Address) else ipaddress.IPv6Address(f"::ffff:{ip}")


PAYLOADS = st.tuples(st.binary(max_size=40), st.booleans(), st.booleans()).map(
    lambda p: strace_string(p[0], p[1]) + ("..." if p[2] else "")
)
DECORATIONS = st.sampled_from(
    [
        ("", ""),
        ("<socket:[10932]>", "socket"),
        ("<TCP:[9391]>", "TCP"),
        ("<UDP:[127.0.0.1:40603->192.0.2.1:53]>", "UDP"),
        ("<UDPv6:[[::1]:5353->[2001:db8::1]:53]>", "UDPv6"),
        ('<UNIX-STREAM:[28079,"/tmp/a, b]>.sock"]>', "UNIX-STREAM"),
        ('<UNIX-STREAM:[28079,"/x>, y"]>', "UNIX-STREAM"),
    ]
)
RESULTS = st.sampled_from(
    [
        ("0", "0"),
        ("18", "18"),
        ("?", "?"),
        ("-1 ENETUNREACH (Network is unreachable)", "ENETUNREACH"),
        ("-1 EINPROGRESS (Operation now in progress)", "EINPROGRESS"),
        ("? ERESTARTSYS (To be restarted if SA_RESTART is set)", "ERESTARTSYS"),
        ("-1 ENOSYS (Function not implemented) (INJECTED)", "ENOSYS"),
    ]
)


class Call(NamedTuple):
    """A well-formed line in parts, and the NetCall it stands for."""

    start: str  # the pid and timestamp prefix
    name: str
    args: str
    end: str  # from the closing parenthesis on
    call: NetCall

    @property
    def line(self) -> str:
        return f"{self.start}{self.name}({self.args}{self.end}"


@st.composite
def calls(draw: st.DrawFn) -> Call:
    tid = draw(st.integers(1, 4194304))
    prefixes = [("", 0), (f"{tid:<5} ", tid), (f"{tid:<5}  ", tid), (f"[pid {tid:>5}] ", tid)]
    prefix, tid_seen = draw(st.sampled_from(prefixes))
    epoch = draw(st.integers(10**9, 4 * 10**9 - 1)) + draw(st.integers(0, 999999)) / 1e6
    stamp = draw(st.sampled_from(["", "19:17:50 ", "19:17:50.815092 ", f"{epoch:.6f} "]))
    time = float(stamp) if stamp.strip() and ":" not in stamp else None
    fd = draw(st.integers(0, 9999))
    decoration, sock = draw(DECORATIONS)
    text, dest = draw(sockaddrs() | st.just(("0xdeadbeef", Endpoint(INVALID, "0xdeadbeef"))))
    syscall = draw(st.sampled_from(list(Syscall)))
    length = draw(st.integers(1, 128))
    payload = draw(PAYLOADS)
    fds = f"{fd}{decoration}"
    message = (
        f"{{msg_name={text}, msg_namelen={length}, msg_iov=[{{iov_base={payload}, iov_len=3}}],"
        " msg_iovlen=1, msg_controllen=0, msg_flags=0}"
    )
    if syscall is Syscall.CONNECT:
        args = f"{fds}, {text}, {length}"
    elif syscall is Syscall.SENDTO:
        flags = draw(st.sampled_from(["0", "MSG_FASTOPEN", "MSG_NOSIGNAL|MSG_DONTWAIT"]))
        args = f"{fds}, {payload}, 3, {flags}, {text}, {length}"
    elif syscall is Syscall.SENDMSG:
        args = f"{fds}, {message}, 0"
    else:  # several messages to one destination are one NetCall
        count = draw(st.integers(1, 3))
        vector = ", ".join([f"{{msg_hdr={message}, msg_len=3}}"] * count)
        args = f"{fds}, [{vector}], {count}, MSG_NOSIGNAL"
    result_text, result = draw(RESULTS)
    padding = " " * draw(st.integers(1, 12))
    duration = draw(st.sampled_from(["", " <0.000097>"]))
    end = f"){padding}= {result_text}{duration}"
    call = NetCall(syscall, tid_seen, time, fd, dest, result, sock, 1)
    return Call(prefix + stamp, syscall.value, args, end, call)


def net(records: list[Record]) -> list[NetCall]:
    return [r for r in records if isinstance(r, NetCall)]


@FAST
@given(st.lists(st.text(), max_size=20))
def test_arbitrary_text_never_raises(lines: list[str]) -> None:
    parser = Parser()
    list(parser.records(lines))
    assert parser.stats.lines == len(lines)


MUTATION = st.tuples(
    st.integers(0, 10**6),
    st.sampled_from(["insert", "delete", "replace"]),
    st.sampled_from(list('{}[]()",= \\<>.0123456789xE-_:@\n')) | st.characters(),
)


def mutate(line: str, mutations: list[tuple[int, str, str]]) -> str:
    for position, operation, char in mutations:
        i = position % (len(line) + 1)
        if operation == "insert":
            line = line[:i] + char + line[i:]
        elif operation == "delete":
            line = line[:i] + line[i + 1 :]
        else:
            line = line[:i] + char + line[i + 1 :]
    return line


@FAST
@given(st.lists(st.tuples(st.sampled_from(LINES), st.lists(MUTATION, max_size=3)), max_size=12))
def test_mutated_fixture_lines_never_raise(
    lines: list[tuple[str, list[tuple[int, str, str]]]],
) -> None:
    parser = Parser()
    list(parser.records(mutate(line, mutations) for line, mutations in lines))
    assert parser.stats.lines == len(lines)


@FAST
@given(calls(), st.booleans())
def test_a_well_formed_call_yields_exactly_its_destination(call: Call, newline: bool) -> None:
    assert list(parse([call.line + ("\n" if newline else "")])) == [call.call]


@FAST
@given(calls(), calls())
def test_a_split_call_yields_its_destination_at_the_resumed_line(call: Call, other: Call) -> None:
    if call.call.tid in (0, other.call.tid):
        return  # strace splits a call only when another task prints in between
    # sendmmsg prints its vector at the end of the call; the others print all at the start.
    cut = call.args.index(", ") + 2 if call.name == "sendmmsg" else len(call.args)
    lines = [
        f"{call.start}{call.name}({call.args[:cut]} <unfinished ...>",
        other.line,
        f"{call.start}<... {call.name} resumed>{call.args[cut:]}{call.end}",
    ]
    assert net(list(parse(lines))) == [other.call._replace(line=2), call.call]


@FAST
@given(
    st.one_of(st.sampled_from(NET_LINES), calls().map(lambda c: c.line)),
    st.lists(MUTATION, min_size=1, max_size=3),
)
def test_a_mangled_sending_call_still_yields_a_call(
    line: str, mutations: list[tuple[int, str, str]]
) -> None:
    mangled = mutate(line, mutations)
    if TOKEN.search(mangled) is None or NON_EVENT.search(mangled):
        return  # no longer a sending call, or now a documented non-event
    assert net(list(parse([mangled])))
