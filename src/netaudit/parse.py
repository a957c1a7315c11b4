"""Streaming strace log parser: log lines in, network calls and process events out.

A log can hold a million calls, so the common complete line ``PID EPOCH name(args) = result``
takes a fast path: its decoded call is cached by text, because destinations repeat. Every other
form goes through a careful path. A line that names a sending syscall always yields a NetCall,
unparsed (``dest=None``) if need be, unless it is a documented non-event: a send without an
address (but on a UDP socket whose peer -yy shows: that is a send to the peer), or a connect
to AF_UNSPEC (a disconnect). How strace prints strings, structures and socket addresses is
read by ``notation``; this module knows lines, pids and calls.

DNS, when the log shows payloads: each question a send to port 53 carries is a NetCall of its
own (``raw`` is model.DNS_QUERY and the question), and each answer a recvfrom/recvmsg got from
port 53 is a Resolved record (decoded by ``dns``).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable, Iterator
from typing import NamedTuple, Optional, TypeVar

from . import dns, markers
from .model import (
    AF_INET,
    AF_INET6,
    AF_UNIX,
    AF_UNSPEC,
    BLOCKED,
    DNS_QUERY,
    Endpoint,
    Exec,
    Hazard,
    HazardKind,
    Mark,
    NetCall,
    Record,
    Resolved,
    Spawn,
    Started,
    Syscall,
    TraceStats,
)
from .notation import OCTET, PORT, fields, peer, sockaddr, split_args, string, unescape_bytes

__all__ = ["INVALID", "UNSEEN", "Parser", "parse"]

#: The family of a destination given as a NULL or bad pointer: an attempt, shown as such.
INVALID = "INVALID"

_NET = {s.value: s for s in Syscall}
#: How many arguments follow the fd; "sendto-rest" is sendto after its payload.
_NARGS = {"connect": 2, "sendto": 5, "sendto-rest": 4, "sendmsg": 2, "sendmmsg": 3}
_SPAWN = frozenset({"clone", "clone3", "fork", "vfork"})
_EXEC = frozenset({"execve", "execveat"})
#: Receiving calls: read only for DNS answers (traced with ``names``, see trace.py).
_RECV = frozenset({"recvfrom", "recvmsg"})
_WATCHED = frozenset(_NET) | _SPAWN | _EXEC | _RECV | {"io_uring_setup", "seccomp", "bind"}
#: How a call's line shows port 53: an address argument, or a peer in a -yy decoration.
_PORT_53 = ("htons(53)", ":53]>")
_IOV = re.compile(r'iov_base=("(?:[^"\\]|\\.)*")')
#: How many entries each cache keeps; it is emptied when full, so memory stays bounded (a log
#: of many destinations misses nearly always: the lines it keeps cost it only memory).
_CACHE_MAX = 32768
_LINES_MAX = 16384
_ADDRESSES_MAX = 8192
_MARKER = "@" + markers.PREFIX
_UNFINISHED = " <unfinished ...>"
#: strace's own messages that a log captured from stderr holds besides the calls.
_NOTICES = ("strace: ", "[ Process PID=")

_PREFIX = re.compile(
    r"(?:\[pid +([0-9]+)\] |([0-9]+) +)?"
    r"(?:(?:([0-9]+\.[0-9]+)|[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?) +)?"
    r"(?:\[[0-9a-f]{8,16}\] )?"
)
_CALL = re.compile(r"([a-z_][a-z0-9_]*)\(")
_RESUMED = re.compile(r"<\.\.\. ([a-z_][a-z0-9_]*) resumed>")
_PID_CHANGED = re.compile(r" <pid changed to ([0-9]+) \.\.\.>$")
_SPLICE = re.compile(r"strace: Process [0-9]+ (?:attached|detached)[^\n]*$")
_NET_TOKEN = re.compile(r"(sendmmsg|sendmsg|sendto|connect)\(")
#: A sending call's name as a word inside another call's line: the line was garbled before it
#: (a "name(" made of garbage, a cut prefix). It is kept, unparsed, rather than lost; a full
#: trace's write() of such text is reported too (fail closed).
_NET_INSIDE = re.compile(r"[\s\]](sendmmsg|sendmsg|sendto|connect)\(")
_ERRNO = re.compile(r"E[A-Z0-9_]+")
_PAYLOAD = re.compile(r'"(?:[^"\\]|\\.)*"(?:\.\.\.)?, ', re.S)
_FD = re.compile(r"(-?[0-9]+)(?:<(.*)>)?", re.S)
_POINTER = re.compile(r"0x[0-9a-f]+")
#: The commonest addresses, read without the general decoder: IPv4, and IPv6 with no scope.
#: An IPv6 address with a dot (v4-mapped, say) takes the general decoder, which normalises it.
_QUICK_SOCKADDR = (
    r"(sa_family=AF_INET, sin_port=htons\((" + PORT + r")\), "
    r'sin_addr=inet_addr\("(' + OCTET + r"(?:\." + OCTET + r'){3})"\)'
    r"|sa_family=AF_INET6, sin6_port=htons\((" + PORT + r")\), sin6_flowinfo=htonl\([0-9]+\), "
    r'inet_pton\(AF_INET6, "([0-9a-f:]+)", &sin6_addr\), sin6_scope_id=0)'
)
#: What follows a complete call: its result (the last group), or nothing in a cache key.
_QUICK_RESULT = r"(?: = ([^\0\n]*)\n?)?"
#: A connect, and a sendto with a payload and an address or none (a send to the peer): in a
#: log of many destinations, nearly every call is one of these, and each is new to the cache,
#: so a whole line is read with one match. No part matches a NUL (see _hole).
_QUICK = {
    "connect": re.compile(
        r"connect\(([0-9]+), \{" + _QUICK_SOCKADDR + r"\}, [0-9]+\)" + _QUICK_RESULT
    ),
    "sendto": re.compile(
        r'sendto\(([0-9]+), "(?:[^"\\\0\n]|\\[^\0\n])*"(?:\.\.\.)?, [0-9]+, [A-Z_|0-9]+, '
        r"(?:NULL, 0|\{" + _QUICK_SOCKADDR + r"\}, [0-9]+)\)" + _QUICK_RESULT
    ),
}
#: The same, and the syscall, by the first 7 characters of a line's call.
_QUICK_LINE: dict[str, tuple[re.Pattern[str] | None, Syscall]] = {
    f"{name}("[:7]: (pattern, Syscall(name)) for name, pattern in _QUICK.items()
}
_NO_QUICK: tuple[re.Pattern[str] | None, Syscall] = (None, Syscall.CONNECT)
#: A marker's whole line (markers.py writes them so: one per test), read with one match where
#: the careful path would decode it three times; any other form of it still goes that way.
_MARK_LINE = re.compile(
    r"connect\([0-9]+(?:<[^<>\0\n]*>)?, \{sa_family=AF_UNIX, sun_path=@\"netaudit:"
    r"([0-9a-f]{8,32})(?:\.([A-Za-z0-9_-]{1,32}))?:([sbefx])(?::([0-9]{1,9}))?\"\}, [0-9]+\)"
    r" = [^\0\n]*\n?"
)
_VERBS = {verb.value: verb for verb in markers.MarkVerb}

_T = TypeVar("_T")
_Dests = tuple[Endpoint, ...]
_Decoded = tuple[Syscall, int, str, _Dests]
#: A decoded call in NetCall's order; no destination means a send to the connected peer.
_Fast = tuple[Syscall, int, Optional[Endpoint], str]
#: The same and its result: a whole line's call.
_Seen = tuple[Syscall, int, Optional[Endpoint], str, str]


class _Pending(NamedTuple):
    """A call strace split with ``<unfinished ...>``; ``args`` None marks one whose end tells
    nothing more (an exec already told, a send to the connected peer)."""

    name: str
    args: str | None
    time: float | None
    line: int
    raw: str


class Parser:
    """One per log. Streaming: constant memory apart from calls pending per thread.

    Records come out in log order, except that a split call comes out at its ``resumed`` line
    while keeping the line number and time of its start, where its arguments are.
    ``stats`` is complete once ``records()`` is exhausted or closed.
    """

    def __init__(self) -> None:
        self._lines = self._calls = self._unparsed = self._foreign = 0
        self._pending: dict[int, _Pending] = {}
        self._carry: tuple[str, int] | None = None
        self._fast: dict[str, _Fast] = {}
        self._whole: dict[str, _Seen] = {}
        #: The hashes of lines seen once, in the commonest forms.
        self._once: set[int] = set()
        self._tids: dict[str, int] = {}
        self._results: dict[str, str] = {}
        self._dests: dict[str, _Dests | None] = {}
        self._addresses: dict[str, Endpoint] = {}

    @property
    def stats(self) -> TraceStats:
        """Lines read, NetCalls yielded, how many of those could not be understood, and how
        many lines were of no strace form at all."""
        return TraceStats(
            lines=self._lines, calls=self._calls, unparsed=self._unparsed, foreign=self._foreign
        )

    def records(self, lines: Iterable[str]) -> Iterator[Record]:
        """Yields in log order; at the end, calls still pending come out with result ``?``.

        Never raises for what a line holds: a line it cannot read is skipped, or kept as an
        unparsed NetCall if it names a sending call.
        """
        n, fast_calls = self._lines, 0
        fast, tids, results, new = self._fast, self._tids, self._results, tuple.__new__
        whole, pending, quick_lines = self._whole, self._pending, _QUICK_LINE
        try:
            for line in lines:
                n += 1
                call = None
                if self._carry is None:
                    try:  # the fast path: "PID EPOCH name(args) = result", already decoded
                        pid, ts, body = line.split(None, 2)
                        tid = tids.get(pid) or self._tid(pid)
                        seen = whole.get(body)
                        if seen is None:  # perhaps a call in its commonest form, new
                            pattern, syscall = quick_lines.get(body[:7], _NO_QUICK)
                            found = pattern.fullmatch(body) if pattern is not None else None
                            if found is not None and found.group(7) is not None:
                                seen = self._quick_line(body, syscall, found)
                            elif found is None and pattern is not None and tid is not None:
                                mark = _mark_line(body, tid, ts, n)
                                if mark is not None:
                                    yield mark
                                    continue
                        if seen is None and body.startswith("<... "):
                            start = pending.get(tid) if tid is not None else None
                            if (
                                start is not None
                                and start.args is None
                                and _ends(start, body)
                                and "\0" not in body
                            ):
                                del pending[tid]  # type: ignore[arg-type]
                                continue  # the end of a call that tells nothing more
                        if seen is None:
                            key, _, tail = body.rpartition(" = ")
                            hit = fast.get(key)
                            again = hit is not None  # the line is kept only once it repeats
                            hit = hit or self._learn(key)
                            if hit is not None:
                                seen = (*hit, results.get(tail) or self._result(tail))
                                if again and hit[2] is not None and not tail.endswith(">\n"):
                                    _remember(
                                        whole, body, seen, _LINES_MAX
                                    )  # not -T: it would never repeat
                        if seen is not None and tid is not None:
                            syscall, fd, dest, sock, result = seen
                            if dest is None:
                                if _stamped(ts):
                                    continue  # nothing to tell, like a send to the peer
                            else:
                                # -ttt is an epoch time; -t/-tt only a time of day, not kept.
                                time = float(ts) if ts[-7] == "." and ts[2] != ":" else _clock(ts)
                                # tuple.__new__ skips NamedTuple's Python-level __new__.
                                call = new(
                                    NetCall, (syscall, tid, time, fd, dest, result, sock, n, "")
                                )
                    except Exception:
                        call = None
                if call is not None:
                    fast_calls += 1
                    yield call
                else:
                    yield from self._slow(line, n)
            yield from self._finish()
        finally:
            self._lines = n
            self._calls += fast_calls

    def _tally(self, records: list[Record]) -> list[Record]:
        """Counts the slow path's calls; the fast path counts its own, more cheaply."""
        for record in records:
            if isinstance(record, NetCall) and not record.raw.startswith(DNS_QUERY):
                self._calls += 1
                self._unparsed += record.dest is None
        return records

    def _learn(self, key: str) -> _Fast | None:
        """Reads a complete call for the fast path: one that sends to at most one destination,
        or one that tells nothing (a syscall the audit does not watch)."""
        name, _, rest = key.partition("(")
        rest = rest.rstrip()
        if not rest.endswith(")") or "\0" in rest:
            return None
        if name in _RECV:  # a DNS answer goes the careful path; nothing else is of interest
            return None if any(hint in key for hint in _PORT_53) else _NOTHING
        if name not in _NET:
            unwatched = name not in _WATCHED and name.isascii() and name.isidentifier()
            if _NET_INSIDE.search(rest):
                return None  # the careful path keeps the call it names
            return _NOTHING if unwatched and name == name.lower() else None
        pattern = _QUICK.get(name)
        found = pattern.fullmatch(key) if pattern is not None else None
        quick = self._quick(_NET[name], found) if found is not None else None
        if quick is not None:  # the commonest calls, without the general decoder
            return _remember(self._fast, key, quick, _LINES_MAX)
        decoded = self._decode(name, rest[:-1])
        if decoded is None or len(decoded[3]) > 1:
            return None
        dest = decoded[3][0] if decoded[3] else None
        if dest is not None and dest.address.startswith(_MARKER):
            return None  # a marker in a form _MARK_LINE does not read: the careful path does
        dns_query = dest is not None and dest.port == 53 and name != "connect"
        if dns_query and _questions(name, rest[:-1]):
            return None  # a DNS query, which the careful path tells as its questions too
        return _remember(self._fast, key, (decoded[0], decoded[1], dest, decoded[2]), _LINES_MAX)

    def _quick_line(self, body: str, syscall: Syscall, found: re.Match[str]) -> _Seen | None:
        """A whole line's call in its commonest form, kept for when it comes again."""
        call = self._quick(syscall, found)
        if call is None:
            return None
        tail = found.group(7)
        seen = (*call, self._results.get(tail) or self._result(tail))
        once, line = self._once, hash(body)  # a str keeps its hash: whole.get made it
        if line not in once:  # kept the second time only: most lines of a scan never repeat
            if len(once) >= _LINES_MAX:
                once.clear()
            once.add(line)
        elif not tail.endswith(">"):  # not -T: it would never repeat
            _remember(self._whole, body, seen, _LINES_MAX)
        return seen

    def _quick(self, syscall: Syscall, found: re.Match[str]) -> _Fast | None:
        """A connect or sendto in its commonest form, or None for the general decoder."""
        fd, inner, port4, ip4, port6, ip6, _ = found.groups()
        if inner is None:
            return (syscall, int(fd), None, "")  # a send to the connected peer
        dest = self._addresses.get(inner)
        if dest is None:
            if ip4 is not None:
                dest = Endpoint(AF_INET, ip4, int(port4))
            elif _canonical6(ip6):
                dest = Endpoint(AF_INET6, ip6, int(port6))
            else:
                return None
            # One object per destination: equal endpoints compare by identity, fast.
            _remember(self._addresses, inner, dest, _ADDRESSES_MAX)
        if dest.port == 53 and syscall is not Syscall.CONNECT:
            return None  # perhaps a DNS query: the general decoder reads its questions
        return (syscall, int(fd), dest, "")

    def _tid(self, text: str) -> int | None:
        return _remember(self._tids, text, int(text)) if text.isascii() and text.isdigit() else None

    def _result(self, tail: str) -> str:
        """The errno name for a failure, else the returned value; a -T duration is dropped."""
        core = tail.rstrip()
        if core.endswith(">") and " <" in core:
            core = core[: core.rindex(" <")]
        result = self._results.get(core) or _remember(self._results, core, _result_of(core))
        return result if core == tail else _remember(self._results, tail, result)

    def _slow(self, line: str, n: int) -> list[Record]:
        try:
            return self._tally(self._line(line, n))
        except Exception:  # a form never seen: keep any sending call it names
            self._foreign += 1
            return self._tally(_garbage(line if isinstance(line, str) else repr(line), 0, None, n))

    def _line(self, line: str, n: int) -> list[Record]:
        text = line.rstrip("\r\n")
        if self._carry is not None:
            head, n = self._carry
            self._carry = None
            text = head + text
        if "\0" in text:
            return self._hole(text, n)
        splice = _SPLICE.search(text) if "strace: " in text else None
        if splice is not None and splice.start() > 0:
            # On stderr, strace's "Process N attached" can cut another line in two.
            self._carry = (text[: splice.start()], n)
            return []
        prefix = _PREFIX.match(text)
        assert prefix is not None  # every part of the prefix is optional
        tid = int(prefix.group(1) or prefix.group(2) or 0)
        time = float(prefix.group(3)) if prefix.group(3) else None
        rest = text[prefix.end() :]
        if rest.startswith("<... "):  # never a complete call: no need to look it up as one
            resumed = _RESUMED.match(rest)
            if resumed is not None:
                return self._resumed(resumed.group(1), rest[resumed.end() :], tid, time, n, text)
        key, _, tail = rest.rpartition(" = ")
        hit = self._fast.get(key) or self._learn(key)
        if hit is not None:  # a complete call, read as on the fast path
            syscall, fd, dest, sock = hit
            if dest is None:
                return []
            return [NetCall(syscall, tid, time, fd, dest, self._result(tail), sock, n)]
        if rest.startswith("+++ "):
            return self._flush(tid) if " superseded by " not in rest else []
        if rest.startswith("--- "):
            return []
        resumed = _RESUMED.match(rest)
        if resumed is not None:
            return self._resumed(resumed.group(1), rest[resumed.end() :], tid, time, n, text)
        call = _CALL.match(rest)
        if call is None:
            if not rest.startswith(_NOTICES):
                self._foreign += 1
            return _garbage(text, tid, time, n)
        name, body = call.group(1), rest[call.end() :]
        if body.endswith(_UNFINISHED):
            records = self._flush(tid)
            args = body[: -len(_UNFINISHED)]
            if name == "sendto" and self._to_peer(args):
                # All of a sendto's arguments are on its first line, and a send to the
                # connected peer tells nothing when it ends either: it is not kept.
                self._pending[tid] = _Pending(name, None, time, n, text)
                return records
            self._pending[tid] = _Pending(name, args, time, n, text)
            if name in _NET:
                records.append(Started(tid, time, n))
            return records
        changed = _PID_CHANGED.search(body) if name in _EXEC else None
        if changed is not None:  # an exec from a thread: it goes on as the leader's pid
            leader = int(changed.group(1))
            records = self._flush(leader) + _exec(name, body[: changed.start()], leader, time, n)
            self._pending[leader] = _Pending(name, None, time, n, text)
            return records
        args, result = _split_result(body)
        return self._complete(name, args, result, tid, time, n, text)

    def _hole(self, text: str, n: int) -> list[Record]:
        """NUL bytes, which strace never writes (it escapes them): the hole a log cut short
        leaves behind, strace writing on at its own offset, or bytes someone else wrote.

        Counted as foreign, so the audit is incomplete. What stands on either side is still
        read: the start of a line the hole cut keeps any sending call it names, and what
        follows the hole is a line of its own.
        """
        self._foreign += 1
        before, _, after = text.partition("\0")
        records: list[Record] = []
        if before:
            prefix = _PREFIX.match(before)
            assert prefix is not None  # every part of the prefix is optional
            tid = int(prefix.group(1) or prefix.group(2) or 0)
            records += _garbage(before, tid, None, n)
        after = after.lstrip("\0")
        return records + self._line(after, n) if after else records

    def _resumed(
        self, name: str, body: str, tid: int, time: float | None, n: int, text: str
    ) -> list[Record]:
        start = self._pending.pop(tid, None)
        if start is None or start.name != name:
            records = [] if start is None else self._complete_pending(tid, start)
            if name in _NET:  # its arguments were on a line we never saw
                records += _garbage(text, tid, time, n, _NET[name])
            return records
        if start.args is None:
            return []
        if body.endswith(_UNFINISHED):
            self._pending[tid] = start._replace(args=start.args + body[: -len(_UNFINISHED)])
            return []
        args, result = _split_result(body)
        raw = f"{start.raw} {text}"
        return self._complete(name, start.args + args, result, tid, start.time, start.line, raw)

    def _flush(self, tid: int) -> list[Record]:
        start = self._pending.pop(tid, None)
        return [] if start is None else self._complete_pending(tid, start)

    def _complete_pending(self, tid: int, start: _Pending) -> list[Record]:
        """A call whose end never came (the task died, or the log stops): its result is ``?``."""
        if start.args is None:
            return []
        return self._complete(start.name, start.args, "?", tid, start.time, start.line, start.raw)

    def _finish(self) -> list[Record]:
        """At the end of the log: a line cut in two by strace, then the calls still pending."""
        records: list[Record] = []
        if self._carry is not None:
            head, n = self._carry
            self._carry = None
            records += self._slow(head, n)
        pending = sorted(self._pending.items(), key=lambda item: item[1].line)
        self._pending.clear()
        for tid, start in pending:
            try:
                records += self._tally(self._complete_pending(tid, start))
            except Exception:
                records += self._tally(_garbage(start.raw, tid, start.time, start.line))
        return records

    def _complete(
        self, name: str, args: str, result: str, tid: int, time: float | None, n: int, raw: str
    ) -> list[Record]:
        syscall = _NET.get(name)
        if syscall is not None:
            decoded = self._decode(name, args)
            if decoded is None:
                fd = _FD.match(args.strip())
                shown = int(fd.group(1)) if fd is not None else None
                return [NetCall(syscall, tid, time, shown, None, result, "", n, raw)]
            _, fd_, sock, dests = decoded
            if syscall is Syscall.CONNECT and len(dests) == 1:
                mark = _mark(dests[0], tid, time, n)
                if mark is not None:
                    return [mark]
            calls: list[Record] = [
                NetCall(syscall, tid, time, fd_, d, result, sock, n) for d in dests
            ]
            if syscall is not Syscall.CONNECT and len(dests) == 1 and dests[0].port == 53:
                resolver = dests[0]
                for question in _questions(name, args):
                    query = f"{DNS_QUERY}{question.qtype} {question.name}"
                    calls.append(NetCall(syscall, tid, time, fd_, resolver, result, sock, n, query))
            return calls
        if name in _RECV:
            return _answers(name, args, result, tid, time, n)
        ok = result == "?" or result[:1].isdigit()
        if name in _SPAWN:
            records: list[Record] = []
            if ok and "CLONE_UNTRACED" in args:
                records.append(Hazard(HazardKind.CLONE_UNTRACED, tid, time, n, raw))
            if result.isdigit() and int(result) > 0:
                records.append(Spawn(tid, int(result), "CLONE_THREAD" in args, time, n))
            return records
        if name in _EXEC and result == "0":
            return _exec(name, args, tid, time, n)
        if name == "io_uring_setup" and ok:
            return [Hazard(HazardKind.IO_URING, tid, time, n, raw)]
        if name == "seccomp" and "SECCOMP_FILTER_FLAG_NEW_LISTENER" in args:
            if ok:
                return [Hazard(HazardKind.SECCOMP_NOTIFY, tid, time, n, raw)]
            if result == "EBUSY":  # a listener holds the tree already: block mode's
                return [Hazard(HazardKind.SECCOMP_REFUSED, tid, time, n, raw)]
        if name == "bind" and result == "0" and "sa_family=AF_PACKET" in args:
            return [Hazard(HazardKind.RAW_PACKET, tid, time, n, raw)]
        if name not in _WATCHED:
            inside = _NET_INSIDE.search(args)
            if inside is not None:
                return _garbage(raw, tid, time, n, _NET[inside.group(1)])
        return []

    def _to_peer(self, args: str) -> bool:
        """Whether a sendto sends to the connected peer only (two threads that talk split
        nearly every send in two: such a workload is mostly these lines)."""
        decoded = self._decode("sendto", args)
        return decoded is not None and not decoded[3]

    def _decode(self, name: str, args: str) -> _Decoded | None:
        """The fd, socket type and destinations of a sending call, or None if unreadable."""
        fd_text, comma, rest = args.partition(", ")
        fd = _FD.fullmatch(fd_text.strip())
        dests = self._after_fd(name, rest) if fd is not None and comma else None
        if dests is None:  # perhaps an fd decoration that holds ", "
            parts = split_args(args)
            fd = _FD.fullmatch(parts[0].strip()) if parts and len(parts) > 1 else None
            dests = self._after_fd(name, args[len(parts[0]) + 2 :]) if parts and fd else None
        if fd is None or dests is None:
            return None
        decoration = fd.group(2) or ""
        sock = decoration.partition(":[")[0]
        if not dests and name != "connect" and sock.startswith("UDP"):
            # -yy names a connected UDP socket's peer: a send there is egress like any other
            # (its connect may have been a probe that sent nothing).
            seen = peer(decoration)
            dests = (seen,) if seen is not None else dests
        return _NET[name], int(fd.group(1)), sock, dests

    def _after_fd(self, name: str, rest: str) -> _Dests | None:
        """Destinations are cached by the text after the fd, which repeats across sockets."""
        kind = name
        if name == "sendto":  # payloads vary, the rest repeats: decode the rest once
            payload = _PAYLOAD.match(rest)
            if payload is not None:
                kind, rest = "sendto-rest", rest[payload.end() :]
        key = f"{kind}({rest}"
        if key not in self._dests:
            _remember(self._dests, key, self._destinations(kind, rest), _ADDRESSES_MAX)
        return self._dests[key]

    def _destinations(self, kind: str, rest: str) -> _Dests | None:
        """Where the arguments after the fd send to; None if they cannot be read."""
        parts = split_args(rest)
        if parts is None or len(parts) != _NARGS[kind]:
            return None
        try:
            if kind == "connect":
                dest = self._address(parts[0])
                return () if dest and dest.family == AF_UNSPEC else (dest or _NULL,)
            if kind.startswith("sendto"):
                return self._named(parts[-2], parts[-1])
            if kind == "sendmsg":
                return self._message(parts[0])
            return self._messages(parts[0])
        except ValueError:
            return None

    def _named(self, name: str, length: str) -> _Dests:
        """A send's own address: NULL, or a pointer with length 0, means the connected peer."""
        dest = self._address(name)
        if dest is None or (dest.family == INVALID and length.strip() == "0"):
            return ()
        return (dest,)

    def _message(self, msghdr: str) -> _Dests:
        if msghdr == "NULL" or _POINTER.fullmatch(msghdr):
            return _named_pointer(msghdr)
        header = fields(msghdr)
        if "msg_name" not in header:
            raise ValueError("a message header without msg_name")
        return self._named(header["msg_name"], header.get("msg_namelen", ""))

    def _messages(self, vector: str) -> _Dests:
        if vector == "NULL" or _POINTER.fullmatch(vector):
            return _named_pointer(vector)
        items = (
            split_args(vector[1:-1]) if vector.startswith("[") and vector.endswith("]") else None
        )
        if items is None:
            raise ValueError("not a message vector")
        dests: dict[Endpoint, None] = {}
        for item in items:
            if item == "...":  # strace shows -s messages at most: where the rest went is unseen
                dests[UNSEEN] = None
            elif item:
                message = fields(item)
                if "msg_hdr" not in message:
                    raise ValueError("a message without msg_hdr")
                dests.update(dict.fromkeys(self._message(message["msg_hdr"])))
        return tuple(dests)

    def _address(self, text: str) -> Endpoint | None:
        """A sockaddr as strace prints it; None for NULL."""
        if text == "NULL":
            return None
        if _POINTER.fullmatch(text):
            return Endpoint(INVALID, text)
        if not (text.startswith("{") and text.endswith("}")):
            raise ValueError(f"not an address: {text!r}")
        inner = text[1:-1]
        return self._addresses.get(inner) or _remember(
            self._addresses, inner, sockaddr(inner), _ADDRESSES_MAX
        )


_NULL = Endpoint(INVALID, "NULL")
#: Where a sendmmsg's messages past strace's -s limit went: not shown, so never allowed.
UNSEEN = Endpoint(INVALID, "(messages strace did not print)")
_NOTHING: _Fast = (Syscall.CONNECT, 0, None, "")  # a complete line that yields no record


def _ends(start: _Pending, body: str) -> bool:
    """Whether ``body`` is the ``<... name resumed>`` line of ``start``."""
    return body.startswith(start.name, 5) and body.startswith(" resumed>", 5 + len(start.name))


def _stamped(ts: str) -> bool:
    """Whether the fast path's second word is a timestamp, so the rest is the call: a line
    without one (or garbled) is read by the careful path, which drops nothing it names."""
    if ts[2:3] == ":" == ts[5:6]:  # -t, -tt
        return True
    return ts[-7:-6] == "." and ts[:-7].isdigit() and ts[-6:].isdigit()  # -ttt


def _canonical6(text: str) -> bool:
    """Whether an IPv6 address is written as Endpoint keeps it (RFC 5952, as strace's
    inet_ntop writes it): a round trip through the C library costs far less than ipaddress."""
    try:
        return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, text)) == text
    except (OSError, ValueError):
        return False


def _remember(cache: dict[str, _T], key: str, value: _T, most: int = _CACHE_MAX) -> _T:
    """Stores into a cache that is emptied when full: the memory stays bounded."""
    if len(cache) >= most:
        cache.clear()
    cache[key] = value
    return value


def _named_pointer(text: str) -> _Dests:
    """A message header given as NULL sends nowhere new; a bad pointer is an attempt."""
    return () if text == "NULL" else (Endpoint(INVALID, text),)


def parse(lines: Iterable[str]) -> Iterator[Record]:
    """Parses a whole log with a fresh Parser."""
    return Parser().records(lines)


def _payloads(name: str, args: str) -> list[bytes]:
    """The data a sending or receiving call carried, one bytes per message."""
    if name in ("sendto", "recvfrom"):
        payload = _PAYLOAD.search(args)
        return [] if payload is None else [_bytes(payload.group().rstrip(", "))]
    if name == "sendmmsg":  # each message's iovecs, in order
        return [
            b"".join(_bytes(m) for m in _IOV.findall(part)) for part in args.split("{msg_hdr=")[1:]
        ]
    return [b"".join(_bytes(m) for m in _IOV.findall(args))]


def _bytes(quoted: str) -> bytes:
    """A quoted string's bytes; a string cut short by -s keeps what was shown."""
    if quoted.endswith("..."):
        quoted = quoted[:-3]
    return unescape_bytes(quoted[1:-1])


def _questions(name: str, args: str) -> list[dns.Question]:
    return [q for payload in _payloads(name, args) for q in dns.questions(payload)]


def _answers(
    name: str, args: str, result: str, tid: int, time: float | None, n: int
) -> list[Record]:
    """A DNS answer a receiving call got from port 53 (an address argument or -yy's peer)."""
    if not result.isdigit() or not any(hint in args for hint in _PORT_53):
        return []
    fd_text = args.partition(", ")[0]
    fd = _FD.fullmatch(fd_text.strip())
    source = peer(fd.group(2) or "") if fd is not None else None
    if (source is None or source.port != 53) and "htons(53)" not in args:
        return []
    records: list[Record] = []
    for payload in _payloads(name, args.partition(", ")[2]):
        answer = dns.answer(payload)
        if answer is not None and answer.addresses:
            records.append(Resolved(tid, answer.addresses, time, n))
    return records


def _clock(ts: str) -> float | None:
    """A time of day (-t, -tt) carries no date: it is accepted, and not kept."""
    if not (ts[2:3] == ":" == ts[5:6]):
        raise ValueError(f"not a timestamp: {ts!r}")
    return None


def _mark(dest: Endpoint, tid: int, time: float | None, n: int) -> Mark | None:
    """A marker connect, or None for any other destination (including look-alikes)."""
    if dest.family != AF_UNIX or not dest.address.startswith(_MARKER):
        return None
    parsed = markers.parse(dest.address[1:])
    if parsed is None:
        return None
    run, worker, verb, test = parsed
    return Mark(tid, run, worker, verb, test, time, n)


def _mark_line(body: str, tid: int, ts: str, n: int) -> Mark | None:
    """A marker's line in the form markers.py makes, read as the careful path reads it (a
    test checks that both give equal records); None for any other line."""
    found = _MARK_LINE.fullmatch(body) if body.startswith("connect(") else None
    if found is None or not _stamped(ts):
        return None
    run, worker, verb, test = found.groups()
    if (test is None) == (verb == "b"):
        return None  # a look-alike: the careful path keeps it as a call
    time = float(ts) if ts[-7] == "." and ts[2] != ":" else _clock(ts)
    return Mark(tid, run, worker or "", _VERBS[verb], -1 if test is None else int(test), time, n)


def _exec(name: str, args: str, tid: int, time: float | None, n: int) -> list[Record]:
    parts = split_args(args) or []
    if name == "execveat":
        parts = parts[1:]
    path = string(parts[0]) if parts else ""
    argv: list[str] = []
    if len(parts) > 1 and parts[1].startswith("[") and parts[1].endswith("]"):
        argv = [string(item) for item in split_args(parts[1][1:-1]) or () if item.startswith('"')]
    return [Exec(tid, path, tuple(argv), time, n)]


def _split_result(body: str) -> tuple[str, str]:
    """The arguments and the result of ``args) = result``; a line cut short has result ``?``."""
    eq = body.rfind(" = ")
    if eq >= 0:
        head = body[:eq].rstrip()
        if head.endswith(")"):
            return head[:-1], _result_of(body[eq + 3 :])
    return (body[:-1] if body.endswith(")") else body), "?"


#: What the block-mode supervisor writes after the result of a call it refused (egress.py).
BLOCKED_MARK = "(BLOCKED)"


def _result_of(tail: str) -> str:
    words = tail.split()
    if words and words[-1] == BLOCKED_MARK:
        return f"{BLOCKED} {_result_of(' '.join(words[:-1]))}"
    if words and words[-1].startswith("<") and words[-1].endswith(">"):  # -T duration
        words.pop()
    if not words:
        return "?"
    if words[0] in ("-1", "?") and len(words) > 1 and _ERRNO.fullmatch(words[1]):
        return words[1]
    return words[0]


def _garbage(
    text: str, tid: int, time: float | None, n: int, syscall: Syscall | None = None
) -> list[Record]:
    """A line of no known form: if it names a sending call, that call is kept, unparsed."""
    if syscall is None:
        token = _NET_TOKEN.search(text)
        if token is None:
            return []
        syscall = _NET[token.group(1)]
    eq = text.rfind(" = ")
    result = _result_of(text[eq + 3 :]) if eq >= 0 else "?"
    return [NetCall(syscall, tid, time, None, None, result, "", n, text)]
