"""What a run and its supervisor say to each other, both ends in one module.

A run (a traced pytest process: the session, an xdist worker, a nested ``pytest --netaudit``)
connects to its supervisor's control socket, an abstract AF_UNIX address named after a random
token: no file to clean up, and nothing for the traced tree to find but the token it is given.

The run speaks first and may be anything the traced tree runs, so what it sends is JSON, one
message a line, read defensively. The supervisor is the trusted side: each reply is one
length-prefixed pickle of one of the reply types below, and a run refuses any other type.
Only ``Hello``, ``Ask`` and ``Finish`` are answered; the rest (the table of tests) needs no
reply, so a run writes it with a plain ``write(2)`` and goes on.

The messages are NamedTuples, not dataclasses: both ends import this module as they start, and
a NamedTuple costs a fraction of a frozen dataclass to define (docs/performance.md).
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import struct
from typing import Any, NamedTuple, TypeVar, Union

from . import ENV_RUN, ENV_SUPERVISOR, markers
from .markers import MarkVerb
from .model import Destinations, Finding, TraceStats

__all__ = ["ENV_RUN", "ENV_SUPERVISOR"]  # and the messages below

_HEADER = struct.Struct("!Q")
_CHUNK = 1 << 20
#: The longest message line a supervisor reads; a longer one ends the conversation.
MAX_LINE = 1 << 20


# -- from a run ---------------------------------------------------------------------------


class Hello(NamedTuple):
    """The first message: which run this process drives, and whether it audits at all.

    ``audit`` is False when the run was started traced but its plugin found nothing to audit
    (an opt-out, or options that run no test): the supervisor then expects no report.
    ``settings`` are the run's resolved settings (settings.Settings.to_wire), with which the
    supervisor judges what the run did after its own report, or when it never asked for one.
    """

    run: str
    worker: str = ""
    pid: int = 0
    audit: bool = True
    reason: str = ""
    settings: dict[str, Any] = {}  # noqa: RUF012 - read only, never changed


class TableEntry(NamedTuple):
    """A line of a run's table of tests: the index its markers use, and what it stands for."""

    run: str
    worker: str
    test: int
    nodeid: str
    location: str = ""
    #: The test's netaudit markers, normalised (policy.normalise), if it has any.
    policy: dict[str, Any] | None = None


class Ask(NamedTuple):
    """What one test of the run did so far (asked as the test ends, for live verdicts)."""

    run: str
    worker: str
    test: int


class Finish(NamedTuple):
    """The run's FINISH marker is in the trace: its whole part, please."""

    run: str


class Bye(NamedTuple):
    """Nothing more to say (sent so that batched table lines go out at once)."""


Message = Union[Hello, TableEntry, Ask, Finish, Bye]
_MESSAGES: dict[str, type[Any]] = {
    "hello": Hello,
    "test": TableEntry,
    "ask": Ask,
    "finish": Finish,
    "bye": Bye,
}
_OPS = {kind: op for op, kind in _MESSAGES.items()}


def encode(message: Message) -> bytes:
    """One JSON line. The fields as they are, not dataclasses.asdict's deep copies: a run
    sends a line per test, and asdict cost 4x the rest."""
    return json.dumps({"op": _OPS[type(message)], **message._asdict()}).encode() + b"\n"


def decode(line: bytes) -> Message | None:
    """A message, or None for anything that is not one (a run says this or nothing)."""
    try:
        data = json.loads(line)
        kind = _MESSAGES[data.pop("op")]
        message: Message = kind(**data)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return message if _well_typed(message) else None


#: The type each field of a message must have (a run's JSON may hold anything).
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "run": str, "worker": str, "pid": int, "audit": bool, "reason": str, "settings": dict,
    "test": int, "nodeid": str, "location": str, "policy": (dict, type(None)),
}  # fmt: skip


def _well_typed(message: Message) -> bool:
    return all(
        isinstance(value, _FIELD_TYPES[name])
        for name, value in message._asdict().items()
        if name in _FIELD_TYPES
    )


# -- from the supervisor ------------------------------------------------------------------


class Welcome(NamedTuple):
    """The answer to Hello: who traces the run (the run checks it is that strace's tracee)."""

    strace_pid: int | None
    strace: str
    strace_version: str
    seccomp_bpf: bool
    strace_cpu: int | None = None
    #: How strace was started: with DNS payloads (names), and what it does about io_uring.
    names: bool = False
    io_uring: str = "report"
    #: Block mode: whether the command runs under the filter, how refused calls fail, and
    #: the allowlist the supervisor judges them by (the run checks it is its own).
    block: bool = False
    block_errno: str = ""
    allowlist: str | None = None


class RunAudit(NamedTuple):
    """What a run (or one test of it) did, folded but not judged: the run judges it with its
    own allowlist."""

    #: Kept on disk, in the supervisor's private directory, when there are many (spill.py):
    #: pickled as its path, which the run reads before the session ends.
    destinations: Destinations
    findings: tuple[Finding, ...] = ()
    stats: TraceStats = TraceStats()
    #: nodeid -> "file:line" of each test the run named.
    locations: tuple[tuple[str, str], ...] = ()
    #: Why the audit of this run is incomplete; "" when it is complete.
    problem: str = ""
    #: nodeid -> the JSON of its netaudit markers (policy.normalise), for tests that have any.
    policies: tuple[tuple[str, str], ...] = ()


Reply = Union[Welcome, RunAudit]
_R = TypeVar("_R", Welcome, RunAudit)


def reply(reply: Reply) -> bytes:
    data = pickle.dumps(reply)
    return _HEADER.pack(len(data)) + data


# -- the run's end of the line ------------------------------------------------------------


class Channel:
    """A run's connection to its supervisor.

    Messages go out with ``write(2)``, not ``send(2)``: sendto is traced, and each would cost
    a ptrace stop. A test may close every descriptor (os.closerange) and reuse the number;
    the channel notices, and never writes into a file of the test's.
    """

    def __init__(self, token: str, timeout: float = 10.0) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(markers.address(token, MarkVerb.CONTROL))
        except OSError:
            sock.close()
            raise
        sock.settimeout(None)
        self._sock = sock
        self._identity = _identity(sock.fileno())
        self._outbox: list[bytes] = []
        self._pending = 0

    def send(self, message: Message, *, batch: bool = False) -> None:
        """Batched messages wait until 8 KiB have gathered or an unbatched one goes out."""
        data = encode(message)
        self._outbox.append(data)
        self._pending += len(data)
        if batch and self._pending < 8192:
            return
        self.flush()

    def flush(self) -> None:
        if not self._outbox:
            return
        data = b"".join(self._outbox)
        self._outbox.clear()
        self._pending = 0
        fd = self._sock.fileno()
        if fd < 0 or _identity(fd) != self._identity:
            raise ConnectionError("a test closed the connection to the supervisor")
        while data:
            data = data[os.write(fd, data) :]

    def request(self, message: Hello | Ask | Finish, expect: type[_R]) -> _R:
        """Sends ``message`` (with whatever is batched) and reads the one reply it gets."""
        self.send(message)
        (size,) = _HEADER.unpack(self._read(_HEADER.size))
        answer = pickle.loads(self._read(size))
        if not isinstance(answer, expect):
            raise ValueError(f"the supervisor answered a {type(answer).__name__}, not a {expect}")
        return answer

    def _read(self, size: int) -> bytes:
        parts, left = [], size
        while left:
            part = self._sock.recv(min(left, _CHUNK))
            if not part:
                raise ConnectionError("the supervisor closed the connection")
            parts.append(part)
            left -= len(part)
        return b"".join(parts)

    def close(self) -> None:
        self._sock.close()


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino
