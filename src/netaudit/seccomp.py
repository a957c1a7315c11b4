"""The kernel side of block mode: a seccomp filter that hands a process tree's egress calls to
a supervisor (user notification), and the calls the supervisor answers them with.

The filter (``egress_program``) is installed by the shim, the first program strace runs, just
before it execs the command, so every process and thread of the tree inherits it. It sends
``connect``, ``sendmsg``, ``sendmmsg`` and a ``sendto`` with an address to the supervisor, lets
every other call through (a send on a connected socket costs nothing), and makes
``io_uring_setup`` fail with ENOSYS (a ring's connects are not system calls). The supervisor
holds the filter's listener: it reads each call's addresses from the caller's memory
(``read_memory``), and answers: the errno that blocks it, the kernel's own call (``CONTINUE``),
or the result of a connect it made itself on the caller's socket (``Pidfds.socket_of``), with
the address it checked. Facts and figures: the notes on block mode (blockmode.md).

Only ctypes and the standard library: a pure-Python supervisor costs about what strace's stop
on the same call did (24-27 us). x86_64 only (and its i386 ABI); everything here is Linux.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import struct
import threading
from collections.abc import Sequence
from typing import NamedTuple

# -- the filter ---------------------------------------------------------------------------

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
#: x86_64's x32 ABI: its syscall numbers have this bit set.
X32_BIT = 0x40000000

_RET_ALLOW = 0x7FFF0000
_RET_USER_NOTIF = 0x7FC00000
_RET_ERRNO = 0x00050000

FLAG_NEW_LISTENER = 8
#: Once the supervisor has received a call, only a fatal signal interrupts the caller's wait
#: (5.19+); without it a program that takes many signals can restart a call forever.
FLAG_WAIT_KILLABLE_RECV = 32

#: x86_64 syscall numbers.
NR_CONNECT, NR_SENDTO, NR_SENDMSG, NR_SENDMMSG = 42, 44, 46, 307
NR_IO_URING_SETUP = 425
_NR_SECCOMP, _NR_PIDFD_OPEN, _NR_PIDFD_GETFD = 317, 434, 438
#: i386 numbers: the calls themselves, and socketcall(2) with its call numbers.
I386_CONNECT, I386_SENDTO, I386_SENDMSG, I386_SENDMMSG, I386_SOCKETCALL = 362, 369, 370, 345, 102
SOCKETCALL = {3: "connect", 11: "sendto", 16: "sendmsg", 20: "sendmmsg"}
#: x32's own numbers for the same calls (sendmsg and sendmmsg have compat entries).
_X32_EGRESS = (42, 44, 518, 538, NR_IO_URING_SETUP)

#: BPF opcodes: load a word of seccomp_data, jump if equal / greater or equal, return.
_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_NR, _ARCH = 0, 4


def _arg(index: int, high: bool = False) -> int:
    """Where a syscall argument's low (or high) 32-bit word is in seccomp_data."""
    return 16 + 8 * index + (4 if high else 0)


class _Program:
    """A tiny assembler: jumps name their targets, offsets are worked out at the end."""

    def __init__(self) -> None:
        self.code: list[tuple[int, str | int, str | int, int]] = []
        self.labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def load(self, offset: int) -> None:
        self.code.append((_LD_W_ABS, 0, 0, offset))

    def jump(self, op: int, k: int, yes: str | int = 0, no: str | int = 0) -> None:
        self.code.append((op, yes, no, k))

    def ret(self, action: int) -> None:
        self.code.append((_RET_K, 0, 0, action))

    def assemble(self) -> bytes:
        out = bytearray()
        for at, (code, yes, no, k) in enumerate(self.code):
            jt, jf = (self._offset(at, target) for target in (yes, no))
            out += struct.pack("<HBBI", code, jt, jf, k)
        return bytes(out)

    def _offset(self, at: int, target: str | int) -> int:
        if isinstance(target, int):
            return target
        offset = self.labels[target] - at - 1
        if not 0 <= offset <= 255:
            raise ValueError(f"jump to {target} out of range")
        return offset


def egress_program(deny_errno: int) -> bytes:
    """The filter: egress calls to the supervisor, io_uring refused (ENOSYS).

    x86_64: ``connect``, ``sendmsg``, ``sendmmsg`` and ``sendto`` with a non-NULL address
    (both words of the pointer checked) are notified. i386 (``int 0x80``): the same calls,
    directly or through ``socketcall``. x32 egress calls are refused with ``deny_errno``, as
    is every call of an architecture that is neither (none exists on x86_64).
    """
    p = _Program()
    notify, allow, enosys, deny = "notify", "allow", "enosys", "deny"
    p.load(_ARCH)
    p.jump(_JEQ_K, AUDIT_ARCH_X86_64, "x86_64")
    p.jump(_JEQ_K, AUDIT_ARCH_I386, "i386", deny)

    p.label("x86_64")
    p.load(_NR)
    p.jump(_JGE_K, X32_BIT, "x32")
    for nr in (NR_CONNECT, NR_SENDMSG, NR_SENDMMSG):
        p.jump(_JEQ_K, nr, notify)
    p.jump(_JEQ_K, NR_IO_URING_SETUP, enosys)
    p.jump(_JEQ_K, NR_SENDTO, "sendto64", allow)
    p.label("sendto64")
    p.load(_arg(4))
    p.jump(_JEQ_K, 0, 0, notify)
    p.load(_arg(4, high=True))
    p.jump(_JEQ_K, 0, allow, notify)

    p.label("x32")
    for nr in _X32_EGRESS[:-1]:
        p.jump(_JEQ_K, X32_BIT | nr, deny)
    p.jump(_JEQ_K, X32_BIT | NR_IO_URING_SETUP, enosys, allow)

    p.label("i386")
    p.load(_NR)
    for nr in (I386_CONNECT, I386_SENDMSG, I386_SENDMMSG):
        p.jump(_JEQ_K, nr, notify)
    p.jump(_JEQ_K, NR_IO_URING_SETUP, enosys)
    p.jump(_JEQ_K, I386_SENDTO, "sendto32")
    p.jump(_JEQ_K, I386_SOCKETCALL, "socketcall", allow)
    p.label("sendto32")
    p.load(_arg(4))
    p.jump(_JEQ_K, 0, allow, notify)
    p.label("socketcall")
    p.load(_arg(0))
    for call in SOCKETCALL:
        p.jump(_JEQ_K, call, notify)

    p.label(allow)
    p.ret(_RET_ALLOW)
    p.label(notify)
    p.ret(_RET_USER_NOTIF)
    p.label(enosys)
    p.ret(_RET_ERRNO | errno.ENOSYS)
    p.label(deny)
    p.ret(_RET_ERRNO | deny_errno)
    return p.assemble()


# -- what block mode needs of the kernel --------------------------------------------------

#: The oldest kernel block mode runs on: CONTINUE (5.5) and pidfd_getfd (5.6).
MIN_KERNEL = (5, 6)
#: WAIT_KILLABLE_RECV, without which signals can make a notified call restart forever.
KILLABLE_KERNEL = (5, 19)


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """``(major, minor)`` of ``release`` (default: this kernel's); (0, 0) if unreadable."""
    text = platform.release() if release is None else release
    parts = text.split("-", 1)[0].split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return 0, 0


def unsupported(machine: str | None = None, release: str | None = None) -> str:
    """Why block mode cannot run on this machine; "" when it can."""
    machine = platform.machine() if machine is None else machine
    if machine != "x86_64":
        return f"block mode runs on x86_64 machines only (this one is {machine})"
    version = kernel_version(release)
    if version < MIN_KERNEL:
        shown = release or platform.release()
        return (
            f"block mode needs Linux {MIN_KERNEL[0]}.{MIN_KERNEL[1]} or newer (seccomp user "
            f"notification with CONTINUE: 5.5; pidfd_getfd: 5.6); this kernel is {shown}"
        )
    return ""


# -- the listener -------------------------------------------------------------------------

_RECV = 0xC0502100
_SEND = 0xC0182101
_ID_VALID = 0x40082102
_SET_FLAGS = 0x40082104
_FD_SYNC_WAKE_UP = 1
_FLAG_CONTINUE = 1
_GET_NOTIF_SIZES = 3
#: struct seccomp_notif, seccomp_notif_resp and seccomp_data, as this module packs them.
NOTIF_SIZES = (80, 24, 64)
_NOTIF = struct.Struct("<QIIiIQ6Q")
_RESP = struct.Struct("<QqiI")

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class Notification(NamedTuple):
    """One call the filter sent to the supervisor. ``tid`` is the calling thread."""

    id: int
    tid: int
    nr: int
    arch: int
    args: tuple[int, ...]


class Listener:
    """The supervisor's end of the filter. Closing it makes every later notified call fail
    with ENOSYS: the tree can never go on unjudged."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = bytearray(_NOTIF.size)

    @classmethod
    def take(cls, pid: int, fd: int) -> Listener:
        """The listener that process ``pid`` holds as ``fd`` (the shim that installed it)."""
        pidfd = os.pidfd_open(pid)
        try:
            return cls(pidfd_getfd(pidfd, fd))
        finally:
            os.close(pidfd)

    def wake_synchronously(self) -> bool:
        """Asks the kernel (6.6+) to run the woken caller on this CPU: steadier latency."""
        try:
            fcntl.ioctl(self.fd, _SET_FLAGS, _FD_SYNC_WAKE_UP)
        except OSError:
            return False
        return True

    def receive(self) -> Notification | None:
        """The next call; None when its caller was killed before it could be received."""
        buf = self._buf
        buf[:] = bytes(len(buf))
        try:
            fcntl.ioctl(self.fd, _RECV, buf, True)
        except OSError as err:
            if err.errno in (errno.ENOENT, errno.EINTR):
                return None
            raise
        id_, tid, _flags, nr, arch, _ip, *args = _NOTIF.unpack(buf)
        return Notification(id_, tid, nr, arch, tuple(args))

    def valid(self, id_: int) -> bool:
        """Whether the call is still waiting (its caller alive): what was read of its memory
        was that caller's."""
        try:
            fcntl.ioctl(self.fd, _ID_VALID, struct.pack("<Q", id_))
        except OSError:
            return False
        return True

    def allow(self, id_: int) -> bool:
        """The kernel makes the call itself (it reads the caller's memory again). Like each
        answer, False when the caller was gone (killed): nothing was answered."""
        return self._send(id_, 0, 0, _FLAG_CONTINUE)

    def fail(self, id_: int, err: int) -> bool:
        return self._send(id_, 0, -err, 0)

    def succeed(self, id_: int, value: int = 0) -> bool:
        return self._send(id_, value, 0, 0)

    def _send(self, id_: int, value: int, error: int, flags: int) -> bool:
        try:
            fcntl.ioctl(self.fd, _SEND, _RESP.pack(id_, value, error, flags))
        except OSError as err:
            if err.errno != errno.ENOENT:  # ENOENT: the caller is gone
                raise
            return False
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def notif_sizes() -> tuple[int, int, int]:
    """The kernel's sizes of the three structures (SECCOMP_GET_NOTIF_SIZES)."""
    sizes = (ctypes.c_uint16 * 3)()
    if _syscall(_NR_SECCOMP, _GET_NOTIF_SIZES, 0, sizes) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return sizes[0], sizes[1], sizes[2]


# -- the caller's memory and descriptors --------------------------------------------------


class Unreadable(Exception):
    """The caller's memory could not be read: a bad pointer (EFAULT), or a process this one
    may not read (EPERM: not dumpable, and no CAP_SYS_PTRACE)."""

    def __init__(self, err: int) -> None:
        super().__init__(os.strerror(err))
        self.errno = err


class Memory:
    """The memory of the processes that call, read through ``/proc/PID/mem``: one pread per
    span (measured 3.6 us here; process_vm_readv through ctypes took 12 us, and made the
    caller's whole round trip two to four times slower). A descriptor per process is kept
    while it lives; one whose process exec'd or ended reads nothing, and is opened again."""

    MOST = 64

    def __init__(self) -> None:
        self._open: dict[int, int] = {}

    def read(self, tgid: int, spans: Sequence[tuple[int, int]]) -> list[bytes]:
        """Each ``(address, length)``; a span that cannot be read whole raises Unreadable."""
        return [self.read_one(tgid, address, length) for address, length in spans]

    def read_one(self, tgid: int, address: int, length: int) -> bytes:
        for attempt in range(2):
            fd = self._fd(tgid)
            try:
                data = os.pread(fd, length, address) if length else b""
            except OverflowError:
                raise Unreadable(errno.EFAULT) from None
            except OSError as err:
                code = err.errno if err.errno and err.errno != errno.EIO else errno.EFAULT
                raise Unreadable(code) from err
            if len(data) == length:
                return data
            if data or attempt:
                break
            self._drop(tgid)  # another process now, or none: read it afresh
        raise Unreadable(errno.EFAULT)

    def _fd(self, tgid: int) -> int:
        fd = self._open.get(tgid)
        if fd is None:
            if len(self._open) >= self.MOST:
                self._drop(next(iter(self._open)))
            try:
                fd = os.open(f"/proc/{tgid}/mem", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as err:
                raise Unreadable(err.errno or errno.EPERM) from err
            self._open[tgid] = fd
        return fd

    def _drop(self, tgid: int) -> None:
        fd = self._open.pop(tgid, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for tgid in list(self._open):
            self._drop(tgid)


def pidfd_getfd(pidfd: int, fd: int) -> int:
    got = _syscall(_NR_PIDFD_GETFD, pidfd, fd, 0)
    if got < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(got)


#: pidfd_open's flag for a pidfd of one thread (6.9+): its descriptor table, not the leader's.
_PIDFD_THREAD = os.O_EXCL


class Pidfds:
    """pidfds of the threads that call, reused while they live (a few are kept open)."""

    MOST = 64

    def __init__(self) -> None:
        self._open: dict[int, int] = {}
        self._threads = True

    def socket_of(self, tid: int, tgid: int, fd: int) -> int:
        """A descriptor of this process for the open file that ``fd`` is in thread ``tid``
        (the caller's socket itself, not a copy: a connect on it is the caller's connect)."""
        for attempt in range(2):
            pidfd = self._pidfd(tid, tgid)
            try:
                return pidfd_getfd(pidfd, fd)
            except OSError as err:
                if err.errno != errno.ESRCH or attempt:
                    raise
                self._drop(tid)  # a thread that ended, and a new one with its number
        raise AssertionError("unreachable")

    def _pidfd(self, tid: int, tgid: int) -> int:
        pidfd = self._open.get(tid)
        if pidfd is not None:
            return pidfd
        if len(self._open) >= self.MOST:
            self._drop(next(iter(self._open)))
        if self._threads:
            try:
                pidfd = os.pidfd_open(tid, _PIDFD_THREAD)
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                self._threads = False  # before 6.9: the thread group's table, the usual case
        if pidfd is None:
            pidfd = os.pidfd_open(tgid)
        self._open[tid] = pidfd
        return pidfd

    def _drop(self, tid: int) -> None:
        pidfd = self._open.pop(tid, None)
        if pidfd is not None:
            os.close(pidfd)

    def close(self) -> None:
        for tid in list(self._open):
            self._drop(tid)


_connect = _libc.connect
_connect.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)


def connect(fd: int, address: bytes) -> int:
    """connect(2) with these exact bytes; 0 or the errno."""
    if _connect(fd, address, len(address)) == 0:
        return 0
    return ctypes.get_errno()


_getsockopt = _libc.getsockopt
_shutdown = _libc.shutdown
_SOL_SOCKET, _SO_TYPE, _SO_DOMAIN = 1, 3, 39


_getsockopt.argtypes = (
    ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p
)  # fmt: skip
_OPTION = threading.local()


def _sockopt(fd: int, option: int) -> int:
    """An integer option of a socket, read with getsockopt: never through a Python socket
    object, which could change the caller's socket (a default timeout makes it non-blocking)."""
    held = getattr(_OPTION, "held", None)
    if held is None:
        held = _OPTION.held = (ctypes.c_int(), ctypes.c_uint32(4))
    value, size = held
    size.value = 4
    if _getsockopt(fd, _SOL_SOCKET, option, ctypes.addressof(value), ctypes.addressof(size)):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return value.value


def socket_type(fd: int) -> int:
    return _sockopt(fd, _SO_TYPE)


def socket_family(fd: int) -> int:
    return _sockopt(fd, _SO_DOMAIN)


def shutdown(fd: int) -> None:
    """Cuts a socket short (a connect waiting on it returns)."""
    _shutdown(fd, 2)


def thread_group(tid: int) -> tuple[int, int] | None:
    """``(tgid, ppid)`` of a thread, from /proc; None if it is gone."""
    try:
        with open(f"/proc/{tid}/status", "rb") as status:
            text = status.read()
    except OSError:
        return None
    tgid = ppid = -1
    for line in text.splitlines():
        if line.startswith(b"Tgid:"):
            tgid = int(line.split()[1])
        elif line.startswith(b"PPid:"):
            ppid = int(line.split()[1])
            break
    return (tgid, ppid) if tgid > 0 else None
