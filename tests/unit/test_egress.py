"""A notified call decoded from the caller's memory, and written as strace would: every address
comes out as the Endpoint the parser makes of strace's own line for the same bytes."""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from netaudit import egress, seccomp
from netaudit.model import AF_INET, AF_INET6, AF_NETLINK, AF_UNIX, Endpoint, NetCall, Syscall
from netaudit.notation import sockaddr
from netaudit.parse import INVALID, Parser
from netaudit.seccomp import AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, Notification, Unreadable


def endpoint(raw: bytes) -> Endpoint:
    text = egress.sockaddr_text(raw)
    assert text.startswith("{") and text.endswith("}")
    return sockaddr(text[1:-1])


def inet(ip: str, port: int) -> bytes:
    return struct.pack("<H", socket.AF_INET) + struct.pack(">H", port) + socket.inet_aton(ip)


def inet6(ip: str, port: int, flow: int = 0, scope: int = 0) -> bytes:
    packed = ipaddress.IPv6Address(ip).packed
    return (
        struct.pack("<H", socket.AF_INET6)
        + struct.pack(">HI", port, flow)
        + packed
        + (struct.pack("<I", scope))
    )


@given(st.ip_addresses(v=4), st.integers(0, 65535))
def test_an_ipv4_address_reads_back_as_itself(ip: ipaddress.IPv4Address, port: int) -> None:
    assert endpoint(inet(str(ip), port) + bytes(8)) == Endpoint(AF_INET, str(ip), port)


@given(st.ip_addresses(v=6), st.integers(0, 65535), st.integers(0, 2**20), st.integers(0, 9))
def test_an_ipv6_address_reads_back_as_itself_and_v4_mapped_as_ipv4(
    ip: ipaddress.IPv6Address, port: int, flow: int, scope: int
) -> None:
    found = endpoint(inet6(str(ip), port, flow, scope))
    if ip.ipv4_mapped is not None:
        assert found == Endpoint(AF_INET, str(ip.ipv4_mapped), port)
    else:
        assert found == Endpoint(AF_INET6, str(ip), port, str(scope) if scope else "")


@given(st.binary(min_size=1, max_size=106).filter(lambda b: b"\0" not in b), st.booleans())
def test_a_unix_socket_path_or_abstract_name_reads_back_as_its_bytes(
    name: bytes, abstract: bool
) -> None:
    raw = struct.pack("<H", socket.AF_UNIX) + (b"\0" if abstract else b"") + name
    if not abstract:
        raw += b"\0"
    shown = name.decode("utf-8", "backslashreplace")
    assert endpoint(raw) == Endpoint(AF_UNIX, ("@" if abstract else "") + shown)


def test_the_other_families_read_back_as_the_parser_reads_strace() -> None:
    assert endpoint(struct.pack("<H", socket.AF_UNIX)) == Endpoint(AF_UNIX, "")
    netlink = struct.pack("<HHiI", socket.AF_NETLINK, 0, 0, 0)
    assert endpoint(netlink) == Endpoint(AF_NETLINK, "pid=0")
    unknown = endpoint(struct.pack("<H", 0x63) + bytes(14))
    assert unknown.family == "0x63"
    packet = endpoint(struct.pack("<H", socket.AF_PACKET) + bytes(18))
    assert packet.family == "AF_PACKET"
    short = endpoint(struct.pack("<H", socket.AF_INET) + b"\0\x15")
    assert short.family == AF_INET and short.port is None  # never an address a rule allows


class Memory:
    """A caller's memory, laid out as a test says; anything else cannot be read."""

    def __init__(self, **spans: bytes) -> None:
        self.at: dict[int, bytes] = {}
        self.next = 0x1000

    def put(self, data: bytes) -> int:
        address = self.next
        self.at[address] = data
        self.next += 0x1000
        return address

    def read(self, spans: Sequence[tuple[int, int]]) -> list[bytes]:
        out = []
        for address, length in spans:
            base = max((a for a in self.at if a <= address), default=None)
            if base is None or address - base + length > len(self.at[base]):
                raise Unreadable(errno.EFAULT)
            out.append(self.at[base][address - base : address - base + length])
        return out


def calls_of(call: egress.Call | None) -> list[NetCall]:
    """The calls the stream's parser reads from the call's line."""
    assert call is not None
    line = call.line(10, 1795634279.25, "-1 EPERM (Operation not permitted) (BLOCKED)")
    records = list(Parser().records([line]))
    assert all(isinstance(r, NetCall) for r in records)
    return [r for r in records if isinstance(r, NetCall)]


def notification(nr: int, *args: int, arch: int = AUDIT_ARCH_X86_64) -> Notification:
    return Notification(1, 10, nr, arch, (*args, *(0,) * (6 - len(args))))


def test_a_connect_is_read_and_written_as_strace_would() -> None:
    memory = Memory()
    where = memory.put(inet("192.0.2.1", 443) + bytes(8))
    call = egress.decode(notification(seccomp.NR_CONNECT, 5, where, 16), memory.read)
    assert call is not None and call.addresses[0].raw is not None
    (found,) = calls_of(call)
    assert (found.syscall, found.fd, found.dest, found.result) == (
        Syscall.CONNECT, 5, Endpoint(AF_INET, "192.0.2.1", 443), "BLOCKED EPERM"
    )  # fmt: skip


def test_an_unreadable_address_is_its_pointer_and_never_an_address_a_rule_allows() -> None:
    call = egress.decode(notification(seccomp.NR_CONNECT, 5, 0xDEADBEEF, 16), Memory().read)
    (found,) = calls_of(call)
    assert found.dest == Endpoint(INVALID, "0xdeadbeef")


def test_lengths_the_kernel_refuses_are_refused_as_it_would() -> None:
    memory = Memory()
    where = memory.put(inet("192.0.2.1", 443) + bytes(8))
    call = egress.decode(notification(seccomp.NR_CONNECT, 5, where, 200), memory.read)
    assert call is not None and call.invalid == errno.EINVAL
    call = egress.decode(notification(seccomp.NR_SENDTO, 5, 0, 1, 0, where, -1 & 0xFFFFFFFF),
                         memory.read)  # fmt: skip
    assert call is not None and call.invalid == errno.EINVAL


def test_a_send_to_the_connected_peer_has_no_address_to_judge() -> None:
    call = egress.decode(notification(seccomp.NR_SENDTO, 5, 0x10, 1, 0, 0, 0), Memory().read)
    assert call is not None and call.addresses == () and not call.invalid


def msghdr64(name: int, namelen: int) -> bytes:
    return struct.pack("<QiIQQQQiI", name, namelen, 0, 0, 0, 0, 0, 0, 0)


def test_sendmsg_and_sendmmsg_read_each_message_s_own_address() -> None:
    memory = Memory()
    one = memory.put(inet("192.0.2.1", 53) + bytes(8))
    two = memory.put(inet6("2001:db8::1", 53))
    header = memory.put(msghdr64(one, 16))
    (found,) = calls_of(egress.decode(notification(seccomp.NR_SENDMSG, 4, header, 0), memory.read))
    assert found.dest == Endpoint(AF_INET, "192.0.2.1", 53)
    vector = memory.put(
        msghdr64(one, 16) + bytes(8) + msghdr64(0, 0) + bytes(8) + msghdr64(two, 28) + bytes(8)
    )
    call = egress.decode(notification(seccomp.NR_SENDMMSG, 4, vector, 3, 0), memory.read)
    assert [c.dest for c in calls_of(call)] == [
        Endpoint(AF_INET, "192.0.2.1", 53), Endpoint(AF_INET6, "2001:db8::1", 53)
    ]  # fmt: skip


def test_a_message_whose_address_cannot_be_read_is_its_pointer() -> None:
    memory = Memory()
    header = memory.put(msghdr64(0xBAD0000, 16))
    (found,) = calls_of(egress.decode(notification(seccomp.NR_SENDMSG, 4, header, 0), memory.read))
    assert found.dest == Endpoint(INVALID, "0xbad0000")


def test_i386_calls_are_read_directly_and_through_socketcall() -> None:
    memory = Memory()
    target = memory.put(inet("192.0.2.7", 80) + bytes(8))
    direct = egress.decode(
        notification(seccomp.I386_CONNECT, 3, target, 16, arch=AUDIT_ARCH_I386), memory.read
    )
    args = memory.put(struct.pack("<3I", 3, target, 16))
    through = egress.decode(
        notification(seccomp.I386_SOCKETCALL, 3, args, arch=AUDIT_ARCH_I386), memory.read
    )
    assert calls_of(direct) == calls_of(through)
    msghdr32 = memory.put(struct.pack("<7I", target, 16, 0, 0, 0, 0, 0))
    sendmsg = egress.decode(
        notification(seccomp.I386_SENDMSG, 3, msghdr32, 0, arch=AUDIT_ARCH_I386), memory.read
    )
    assert [c.dest for c in calls_of(sendmsg)] == [Endpoint(AF_INET, "192.0.2.7", 80)]


def test_socketcall_arguments_that_cannot_be_read_fail_as_the_kernel_would() -> None:
    call = egress.decode(
        notification(seccomp.I386_SOCKETCALL, 3, 0xBAD, arch=AUDIT_ARCH_I386), Memory().read
    )
    assert call is not None and call.invalid == errno.EFAULT


def test_a_split_call_is_written_as_strace_splits_one() -> None:
    memory = Memory()
    where = memory.put(inet("127.0.0.1", 8080) + bytes(8))
    call = egress.decode(notification(seccomp.NR_CONNECT, 5, where, 16), memory.read)
    assert call is not None
    start = call.line(10, 1.5, "", "TCP", split=True)
    end = egress.resumed(10, 2.5, "connect", egress.result_text(errno.ECONNREFUSED))
    (found,) = [r for r in Parser().records([start, end]) if isinstance(r, NetCall)]
    assert (found.dest, found.result, found.sock, found.line, found.time) == (
        Endpoint(AF_INET, "127.0.0.1", 8080), "ECONNREFUSED", "TCP", 1, 1.5
    )  # fmt: skip
