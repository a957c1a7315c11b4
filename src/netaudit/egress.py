"""A call the block-mode filter sent to the supervisor: where it sends to, read from the
caller's memory, and the line strace would have written for it.

strace cannot see these calls (the filter's answer outranks strace's own, notes on block mode
§1.2), so the supervisor writes them into the stream it reads, in strace's own notation: the
parser, attribution, folding and the reports then treat them as any traced call. The
notation is the subset the parser reads (``notation.sockaddr``): every address comes out as
the Endpoint the parser would have made of strace's line for the same bytes.

Layouts are x86_64's, and i386's for a 32-bit program (``int 0x80``, socketcall included).
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Sequence
from typing import NamedTuple

from . import seccomp
from .seccomp import Notification, Unreadable

#: The most bytes of a socket address the kernel reads (sizeof(struct sockaddr_storage)).
SOCKADDR_MAX = 128
#: The most messages one sendmmsg sends (UIO_MAXIOV).
MMSG_MAX = 1024
AF_UNSPEC, AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 0, 1, 2, 10, 16
#: Families a connect is made on the caller's behalf for: the ones that leave the machine.
ON_BEHALF = (AF_INET, AF_INET6)

#: Reads ``(address, length)`` spans of the caller's memory (seccomp.Memory.read, bound to the
#: caller's process); raises seccomp.Unreadable.
Reader = Callable[[Sequence[tuple[int, int]]], list[bytes]]


class _Abi(NamedTuple):
    pointer: str  # struct format of a pointer
    msghdr: int  # sizeof(struct msghdr)
    mmsghdr: int
    namelen_at: int  # offset of msg_namelen


_ABI64 = _Abi("<Q", 56, 64, 8)
_ABI32 = _Abi("<I", 28, 32, 4)
_NARGS = {"connect": 3, "sendto": 6, "sendmsg": 3, "sendmmsg": 4}
_X86_64 = {
    seccomp.NR_CONNECT: "connect",
    seccomp.NR_SENDTO: "sendto",
    seccomp.NR_SENDMSG: "sendmsg",
    seccomp.NR_SENDMMSG: "sendmmsg",
}
_I386 = {
    seccomp.I386_CONNECT: "connect",
    seccomp.I386_SENDTO: "sendto",
    seccomp.I386_SENDMSG: "sendmsg",
    seccomp.I386_SENDMMSG: "sendmmsg",
}


class Address(NamedTuple):
    """One destination of a call: strace's text for it, and the bytes that were checked
    (None when they could not be read: the text is then the pointer, as strace shows it)."""

    text: str
    raw: bytes | None

    @property
    def family(self) -> int:
        return struct.unpack_from("<H", self.raw)[0] if self.raw and len(self.raw) >= 2 else -1


class Call(NamedTuple):
    """A notified call, decoded. ``addresses`` is empty for a send to the connected peer."""

    syscall: str
    fd: int
    addresses: tuple[Address, ...]
    #: The arguments after the fd, as strace would print them; ``{}`` stands for the address
    #: of a connect or sendto.
    args: str = ""
    #: The errno the kernel would refuse the call with before sending anything, or 0.
    invalid: int = 0

    def line(self, tid: int, time: float, result: str, sock: str = "", split: bool = False) -> str:
        """The call as strace writes it with ``-f -ttt``: ``result`` is what follows ``= ``;
        ``split`` writes the first half of a call that is still running."""
        fd = f"{self.fd}<{sock}:[0]>" if sock else str(self.fd)
        args = self.args
        if "{}" in args:
            args = args.replace("{}", self.addresses[0].text if self.addresses else "NULL", 1)
        if split:
            return f"{tid} {time:.6f} {self.syscall}({fd}, {args} <unfinished ...>\n"
        return f"{tid} {time:.6f} {self.syscall}({fd}, {args}) = {result}\n"


def resumed(tid: int, time: float, syscall: str, result: str) -> str:
    """The second half of a split call."""
    return f"{tid} {time:.6f} <... {syscall} resumed>) = {result}\n"


@functools.cache
def result_text(err: int) -> str:
    """``0``, or ``-1 ENAME (description)`` as strace writes a failure."""
    if not err:
        return "0"
    name = errno.errorcode.get(err, f"E{err}")
    return f"-1 {name} ({os.strerror(err)})"


def decode(notification: Notification, read: Reader) -> Call | None:
    """The call, its addresses read from the caller's memory; None for a call the filter
    does not send (which it never does: the supervisor then lets the kernel decide)."""
    nr, args = notification.nr, notification.args
    if notification.arch == seccomp.AUDIT_ARCH_X86_64:
        name, abi = _X86_64.get(nr), _ABI64
    elif notification.arch == seccomp.AUDIT_ARCH_I386:
        name, abi = _I386.get(nr), _ABI32
        if nr == seccomp.I386_SOCKETCALL:
            name = seccomp.SOCKETCALL.get(args[0] & 0xFFFFFFFF)
            if name is not None:
                unpacked = _socketcall_args(args[1], _NARGS[name], read)
                if unpacked is None:
                    return Call(name, -1, (), invalid=errno.EFAULT)
                args = unpacked
    else:
        return None
    if name is None:
        return None
    fd = int_arg(args[0])
    if name == "connect":
        return _connect(fd, args, read)
    if name == "sendto":
        return _sendto(fd, args, read)
    if name == "sendmsg":
        return _sendmsg(fd, args, abi, read)
    return _sendmmsg(fd, args, abi, read)


def _socketcall_args(pointer: int, count: int, read: Reader) -> tuple[int, ...] | None:
    try:
        (raw,) = read([(pointer & 0xFFFFFFFF, 4 * count)])
    except Unreadable:
        return None
    return struct.unpack(f"<{count}I", raw) + (0,) * (6 - count)


def int_arg(value: int) -> int:
    """A C int argument, from its register."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _address(pointer: int, length: int, read: Reader) -> Address:
    """The address at ``pointer``; its pointer, as strace shows an unreadable one."""
    if pointer == 0:
        return Address("NULL", None)
    try:
        (raw,) = read([(pointer, length)])
    except Unreadable:
        return Address(f"{pointer:#x}", None)
    return Address(sockaddr_text(raw), raw)


def _connect(fd: int, args: Sequence[int], read: Reader) -> Call:
    pointer, length = args[1], int_arg(args[2])
    shown = f"{{}}, {length}"
    if pointer == 0:
        return Call("connect", fd, (Address("NULL", None),), shown)
    if not 2 <= length <= SOCKADDR_MAX:  # the kernel refuses it before reading further
        return Call("connect", fd, (Address(f"{pointer:#x}", None),), shown, errno.EINVAL)
    return Call("connect", fd, (_address(pointer, length, read),), shown)


def _sendto(fd: int, args: Sequence[int], read: Reader) -> Call:
    size, flags, pointer, length = args[2], int_arg(args[3]), args[4], int_arg(args[5])
    shown = f'"", {size}, {flags}, {{}}, {length}'
    if pointer == 0 or length == 0:  # a send to the connected peer (as the parser reads it)
        return Call("sendto", fd, (), shown)
    if not 0 < length <= SOCKADDR_MAX:
        return Call("sendto", fd, (Address(f"{pointer:#x}", None),), shown, errno.EINVAL)
    return Call("sendto", fd, (_address(pointer, length, read),), shown)


def _sendmsg(fd: int, args: Sequence[int], abi: _Abi, read: Reader) -> Call:
    flags = int_arg(args[2])
    headers = _headers(args[1], 1, abi.msghdr, read)
    if headers is None:
        return Call("sendmsg", fd, (Address(f"{args[1]:#x}", None),), f"{args[1]:#x}, {flags}")
    (name,) = _names(headers, abi, read)
    addresses = () if name is None else (name[0],)
    invalid = errno.EINVAL if name is not None and name[1] < 0 else 0
    return Call("sendmsg", fd, addresses, f"{_msghdr(name)}, {flags}", invalid)


def _sendmmsg(fd: int, args: Sequence[int], abi: _Abi, read: Reader) -> Call:
    vlen = args[2] & 0xFFFFFFFF
    tail = f"{vlen}, {int_arg(args[3])}"
    if vlen == 0:
        return Call("sendmmsg", fd, (), f"[], {tail}")
    headers = _headers(args[1], min(vlen, MMSG_MAX), abi.mmsghdr, read)
    if headers is None:
        return Call("sendmmsg", fd, (Address(f"{args[1]:#x}", None),), f"{args[1]:#x}, {tail}")
    names = _names(headers, abi, read)
    parts = ", ".join(f"{{msg_hdr={_msghdr(name)}, msg_len=0}}" for name in names)
    addresses = tuple(name[0] for name in names if name is not None)
    invalid = errno.EINVAL if any(name is not None and name[1] < 0 for name in names) else 0
    return Call("sendmmsg", fd, addresses, f"[{parts}], {tail}", invalid)


def _msghdr(name: tuple[Address, int] | None) -> str:
    if name is None:
        return "{msg_name=NULL, msg_namelen=0}"
    return f"{{msg_name={name[0].text}, msg_namelen={name[1]}}}"


def _headers(pointer: int, count: int, size: int, read: Reader) -> list[bytes] | None:
    if pointer == 0:
        return None
    try:
        (raw,) = read([(pointer, count * size)])
    except Unreadable:
        return None
    return [raw[i * size : (i + 1) * size] for i in range(count)]


def _names(headers: Sequence[bytes], abi: _Abi, read: Reader) -> list[tuple[Address, int] | None]:
    """Each message's own address and length (None: to the connected peer), read in one go
    when every one can be; the kernel clamps a long name, and refuses a negative length."""
    wanted = []
    for header in headers:
        (pointer,) = struct.unpack_from(abi.pointer, header)
        (length,) = struct.unpack_from("<i", header, abi.namelen_at)
        wanted.append((pointer, length))
    spans = [(p, min(n, SOCKADDR_MAX)) for p, n in wanted if p and n > 0]
    blobs: list[bytes] | None
    try:
        blobs = read(spans) if spans else []
    except Unreadable:
        blobs = None  # one cannot be read: each is read alone, so that the report says which
    each = iter(blobs or ())
    found: list[tuple[Address, int] | None] = []
    for pointer, length in wanted:
        if pointer == 0 or length == 0:
            found.append(None)
        elif length < 0:
            found.append((Address(f"{pointer:#x}", None), length))
        elif blobs is not None:
            raw = next(each)
            found.append((Address(sockaddr_text(raw), raw), length))
        else:
            found.append((_address(pointer, min(length, SOCKADDR_MAX), read), length))
    return found


# -- strace's notation for a socket address -----------------------------------------------

_FAMILIES = {int(f): f.name for f in socket.AddressFamily}


_TEXTS: dict[bytes, str] = {}


def sockaddr_text(raw: bytes) -> str:
    """A socket address as strace prints it (the forms notation.sockaddr reads); kept per
    address, as calls repeat."""
    text = _TEXTS.get(raw)
    if text is None:
        if len(_TEXTS) >= 4096:
            _TEXTS.clear()
        text = _TEXTS[raw] = _sockaddr_text(raw)
    return text


def _sockaddr_text(raw: bytes) -> str:
    if len(raw) < 2:
        return "{sa_family=AF_UNSPEC}" if not raw else f"{{sa_family={raw[0]:#x} /* AF_??? */}}"
    (family,) = struct.unpack_from("<H", raw)
    if family == AF_INET and len(raw) >= 8:
        port = struct.unpack_from(">H", raw, 2)[0]
        ip4 = ipaddress.IPv4Address(raw[4:8])
        return f'{{sa_family=AF_INET, sin_port=htons({port}), sin_addr=inet_addr("{ip4}")}}'
    if family == AF_INET6 and len(raw) >= 24:
        port, flow = struct.unpack_from(">HI", raw, 2)
        ip6 = ipaddress.IPv6Address(raw[8:24])
        scope = f", sin6_scope_id={struct.unpack_from('<I', raw, 24)[0]}" if len(raw) >= 28 else ""
        return (
            f"{{sa_family=AF_INET6, sin6_port=htons({port}), sin6_flowinfo=htonl({flow}), "
            f'inet_pton(AF_INET6, "{ip6}", &sin6_addr){scope}}}'
        )
    if family == AF_UNIX:
        path = raw[2:]
        if not path:
            return "{sa_family=AF_UNIX}"
        if path[:1] == b"\0":
            return f'{{sa_family=AF_UNIX, sun_path=@"{_quote(path[1:])}"}}'
        named = path.split(b"\0", 1)[0]
        return f'{{sa_family=AF_UNIX, sun_path="{_quote(named)}"}}'
    if family == AF_NETLINK and len(raw) >= 12:
        pid, groups = struct.unpack_from("<iI", raw, 4)
        return f"{{sa_family=AF_NETLINK, nl_pid={pid}, nl_groups={groups:08x}}}"
    name = _FAMILIES.get(family)
    shown = name if name is not None and family != AF_UNSPEC else None
    if family == AF_UNSPEC:
        shown = "AF_UNSPEC"
    label = shown or f"{family:#x} /* AF_??? */"
    return f'{{sa_family={label}, sa_data="{_quote(raw[2:])}"}}'


def _quote(data: bytes) -> str:
    r"""A quoted string's inside as strace -x writes it: printable ASCII as is (``"`` and
    ``\`` escaped), every other byte as ``\xNN``."""
    out = []
    for byte in data:
        if byte in (0x22, 0x5C):
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)
