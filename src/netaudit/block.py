"""Block mode's half of the supervisor: each egress call the filter sends is judged for the
test it belongs to, answered before anything is sent, and written into the stream the
supervisor reads, where the reports find it.

The supervisor's reader thread runs this between two reads of strace's log (supervisor.py).
For each call: its addresses are read from the caller's memory (egress.py); the log is read to
its end, so everything the caller did before the call is in the stream (strace writes a line
before the traced task goes on); the call's line, in strace's notation, is read by a parser of
its own exactly as the stream's parser will read it; the lineage says which test the call
belongs to, as attribution will; the allowlist, the test's own rules and the ``tests:``-scoped
rules decide it. Then the answer:

* refused: the errno chosen (EPERM by default), and the line says ``(BLOCKED)``;
* a connect to an IP address, allowed: made here, on the caller's own socket (pidfd_getfd),
  with the address that was checked, and its result is the caller's (a thread that swaps the
  address after the check changes nothing); a blocking TCP connect waits in a thread of its own;
* any other call, allowed: made by the kernel (CONTINUE), its result unseen (``?``).

netaudit's own markers are answered at once (ECONNREFUSED, as nobody listens), its control
socket is connected to. Anything that goes wrong here closes the listener: every later call
then fails with ENOSYS, and the audit is incomplete.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import functools
import os
import queue
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from . import egress, markers, seccomp
from .attribute import Lineage
from .markers import SESSION, MarkVerb
from .model import Mark, NetCall
from .parse import BLOCKED_MARK, Parser
from .seccomp import Listener, Notification

if TYPE_CHECKING:
    from .policy import TestPolicy
    from .rules import Allowlist

#: What the fast path does with a connect it has seen decided before (Blocker._fast_connect).
_CONNECT, _CONTINUE, _DENY, _REFUSED = 1, 2, 3, 4

#: (nodeid, its marker's policy) of a test key of the run that decides.
TestOf = Callable[[str], "tuple[str, TestPolicy | None]"]
_VERDICTS_MOST = 1 << 16
#: Most threads making blocking connects at once (each waits on one caller's connect).
_WORKERS_MOST = 64


class Blocker:
    """One per block-mode run; used by the supervisor's reader thread only (the threads that
    make blocking connects hand their results back through ``drain``)."""

    def __init__(
        self,
        listener: Listener,
        lineage: Lineage,
        allowlist: Allowlist,
        *,
        deny: int,
        run: str,
        test_of: TestOf,
        names: bool = False,
    ) -> None:
        self.listener = listener
        self.lineage = lineage
        self.allowlist = allowlist
        self.deny = deny
        self.run = run
        self.test_of = test_of
        self.names = names
        #: Why the listener was closed before the run ended; "" while it works.
        self.failure = ""
        #: Calls refused so far.
        self.blocked = 0
        self._parser = Parser()
        self._seen: dict[str, tuple[tuple[NetCall, ...], tuple[MarkVerb, ...]]] = {}
        self._fast: dict[tuple[str | None, bytes], int] = {}
        self._refused = f"{egress.result_text(deny)} {BLOCKED_MARK}"
        self._memory = seccomp.Memory()
        self._pidfds = seccomp.Pidfds()
        self._verdicts: dict[tuple[str, object, frozenset[str]], bool] = {}
        #: Lines recorded after their call was answered: by the connect threads, and those of
        #: calls that change nothing a later decision reads (see handle).
        self._later: collections.deque[str] = collections.deque()
        self._connecting: set[int] = set()
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[int, int, int, bytes] | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._idle = 0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self._wake_r, select.POLLIN)
        self._listening = True
        self._poll.register(listener.fd, select.POLLIN)
        self._noop = markers.address(run or "0" * 16, MarkVerb.CONTROL)[1:].decode()

    # -- waiting ----------------------------------------------------------------------------

    def wait(self, timeout: float) -> Notification | None:
        """The next call, or None after ``timeout`` seconds or a ``poke``."""
        for fd, events in self._poll.poll(timeout * 1000):
            if fd == self._wake_r:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 4096)
            elif events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                self._unlisten()  # no task of the tree is left to call
            elif events & select.POLLIN:
                return self.listener.receive()
        return None

    def poke(self) -> None:
        """Wakes ``wait``: a run asked something, or a connect made here ended."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"!")

    def drain(self) -> list[str]:
        """The lines kept for later (see handle), in order; the reader takes them before it
        takes more of the log, and whenever it is idle."""
        lines = []
        while self._later:
            lines.append(self._later.popleft())
        return lines

    @property
    def recorded(self) -> bool:
        """Whether the line of every call answered so far is in the stream (none waits in
        ``drain``); a connect made here keeps its line there before its caller goes on."""
        return not self._later

    def _unlisten(self) -> None:
        if self._listening:
            self._listening = False
            self._poll.unregister(self.listener.fd)

    # -- one call ---------------------------------------------------------------------------

    def handle(self, notification: Notification) -> Iterator[str]:
        """Answers the call, and yields its lines for the stream (the reader has read the log
        to its end first). A yield returns once the stream has taken the line in.

        The line of a call answered on the fast path waits in ``drain`` instead: it changes
        nothing the next decision reads (only markers and the placing of new tasks do), so it
        is recorded while the caller goes on, and before anything that comes after it.
        """
        try:
            n = notification
            if n.nr == seccomp.NR_CONNECT and n.arch == seccomp.AUDIT_ARCH_X86_64:
                fast = self._fast_connect(n)
                if fast is not None:
                    line, later = fast
                    if later:
                        self._later.append(line)
                    elif line:
                        yield from self.drain()
                        yield line
                    return
            yield from self.drain()
            yield from self._handle(notification)
        except Exception as exc:
            self.fail(f"block mode's supervisor failed ({exc!r})")

    def fail(self, why: str) -> None:
        """From now on every notified call fails with ENOSYS: never one that goes unjudged."""
        if not self.failure:
            self.failure = f"{why}; the calls it would have judged after that failed (ENOSYS)"
        self._unlisten()
        self.listener.close()

    def _handle(self, n: Notification) -> Iterator[str]:
        tid, listener = n.tid, self.listener
        tgid = self.lineage.process_of(tid)
        placed = tgid is None
        if tgid is None:
            tgid = self._place(tid)
            if tgid is None:
                return  # the caller is gone
        call = egress.decode(n, functools.partial(self._memory.read, tgid))
        if not listener.valid(n.id):
            return  # its caller is gone: what was read may have been another's memory
        if call is None or (not call.addresses and not call.invalid):
            listener.allow(n.id)  # a send to the connected peer: nothing to judge
            return
        if call.invalid:
            listener.fail(n.id, call.invalid)  # the kernel would refuse it as it stands
            return
        if placed:
            yield self._noop_line(tid)  # the lineage places the task as it takes this line
        socket_fd = -1
        sock = ""
        try:
            if call.syscall == "connect" and call.addresses[0].family in egress.ON_BEHALF:
                try:
                    socket_fd = self._pidfds.socket_of(tid, tgid, call.fd)
                except OSError as err:  # not a descriptor (EBADF): the kernel's own answer
                    code = err.errno or errno.EBADF
                    listener.fail(n.id, code)
                    yield call.line(tid, time.time(), egress.result_text(code))
                    return
                sock = _sock(socket_fd) if self.names else ""
            calls, marks = self._read(call.line(0, 0.0, "?", sock))
            if marks and not calls:
                yield from self._marker(n, call, marks, tid, sock)
                return
            allowed = self.allows(tid, calls)
            self._remember(n, tid, call, allowed, socket_fd >= 0)
            if not allowed:
                listener.fail(n.id, self.deny)
                self.blocked += 1
                yield call.line(tid, time.time(), self._refused, sock)
                return
            if socket_fd < 0:
                listener.allow(n.id)
                yield call.line(tid, time.time(), "?", sock)
                return
            address = call.addresses[0].raw
            assert address is not None  # connected on behalf: its family was read from it
            if _waits(socket_fd):
                yield call.line(tid, time.time(), "", sock, split=True)
                self._connect_later(n.id, tid, socket_fd, address)
                socket_fd = -1  # the thread closes it
                return
            failed = seccomp.connect(socket_fd, address)
            if failed:
                listener.fail(n.id, failed)
            else:
                listener.succeed(n.id)
            yield call.line(tid, time.time(), egress.result_text(failed), sock)
        finally:
            if socket_fd >= 0:
                os.close(socket_fd)

    # -- the common case, without the stream's parser or the lineage's whole account ------

    def _fast_connect(self, n: Notification) -> tuple[str, bool] | None:
        """A connect of a known task, decided as the same test's connect to the same address
        bytes was (``_remember``), and netaudit's own markers: the line ("" for none) and
        whether it may be recorded later, or None when the call needs the careful path."""
        tgid = self.lineage.process_of(n.tid)
        length = n.args[2] & 0xFFFFFFFF
        if tgid is None or self.names or not 2 <= length <= egress.SOCKADDR_MAX:
            return None
        try:
            raw = self._memory.read_one(tgid, n.args[1], length)
        except seccomp.Unreadable:
            return None
        if raw[2:12] == b"\0netaudit:" and raw[:2] == b"\x01\0":
            mark = markers.parse(raw[3:].decode("ascii", "replace"))
            if mark is None:
                return None
            action = _CONTINUE if mark[2] is MarkVerb.CONTROL else _REFUSED
            marker = True
        else:
            marker = False
            key = self.lineage.key_in(n.tid, self.run)
            action = self._fast.get((key, raw), 0)
            if not action:
                return None
        fd, tid, listener = egress.int_arg(n.args[0]), n.tid, self.listener
        text = egress.sockaddr_text(raw)
        if action == _CONNECT:
            try:
                socket_fd = self._pidfds.socket_of(tid, tgid, fd)
            except OSError:
                return None  # the careful path says why
            try:
                if not listener.valid(n.id):
                    return "", False  # gone: the bytes, and the socket, may be another's
                if _waits(socket_fd):
                    split = f"{tid} {time.time():.6f} connect({fd}, {text}, {length}"
                    self._later.append(split + " <unfinished ...>\n")  # before its end
                    self._connect_later(n.id, tid, socket_fd, raw)
                    socket_fd = -1
                    return "", False
                failed = seccomp.connect(socket_fd, raw)
            finally:
                if socket_fd >= 0:
                    os.close(socket_fd)
            answered = listener.fail(n.id, failed) if failed else listener.succeed(n.id)
            result = egress.result_text(failed)
        elif action == _DENY:
            answered = listener.fail(n.id, self.deny)
            self.blocked += answered
            result = self._refused
        elif action == _REFUSED:
            answered = listener.fail(n.id, errno.ECONNREFUSED)
            result = egress.result_text(errno.ECONNREFUSED)
        else:
            answered = listener.allow(n.id)
            result = "?"
        if not answered:
            return "", False  # the caller was gone: what was read may have been another's
        line = f"{tid} {time.time():.6f} connect({fd}, {text}, {length}) = {result}\n"
        return line, not marker  # a marker moves its process into a test: at once

    def _remember(
        self, n: Notification, tid: int, call: egress.Call, allowed: bool, on_behalf: bool
    ) -> None:
        """What the careful path decided for a connect, for the same test's next connect to
        the same bytes (the bytes make the address; without names, the test the verdict)."""
        raw = call.addresses[0].raw if call.syscall == "connect" else None
        if self.names or raw is None or n.arch != seccomp.AUDIT_ARCH_X86_64:
            return
        key = self.lineage.key_in(tid, self.run)
        nodeid = self.test_of(key)[0] if key is not None else ""
        if nodeid.startswith("<unnamed test"):
            return  # its table line had not come: it may still change
        if len(self._fast) >= _VERDICTS_MOST:
            self._fast.clear()
        self._fast[(key, raw)] = _DENY if not allowed else _CONNECT if on_behalf else _CONTINUE

    def _read(self, line: str) -> tuple[tuple[NetCall, ...], tuple[MarkVerb, ...]]:
        """What the stream's parser will make of the line (of task 0): the same parser's
        reading, kept per line, as calls repeat."""
        found = self._seen.get(line)
        if found is None:
            records = list(self._parser.records([line]))
            calls = tuple(r for r in records if type(r) is NetCall)
            marks = tuple(r.verb for r in records if type(r) is Mark)
            if len(self._seen) >= _VERDICTS_MOST:
                self._seen.clear()
            found = self._seen[line] = (calls, marks)
        return found

    def _marker(
        self, n: Notification, call: egress.Call, marks: tuple[MarkVerb, ...], tid: int, sock: str
    ) -> Iterator[str]:
        """netaudit's own: a marker fails at once (nobody listens on it), as it would; a
        connection to the control socket is made by the kernel."""
        if MarkVerb.CONTROL in marks:
            self.listener.allow(n.id)
            yield call.line(tid, time.time(), "?", sock)
            return
        self.listener.fail(n.id, errno.ECONNREFUSED)
        yield call.line(tid, time.time(), egress.result_text(errno.ECONNREFUSED), sock)

    def allows(self, tid: int, calls: tuple[NetCall, ...]) -> bool:
        """Every destination of the call allowed for the test (of the deciding run) it
        belongs to; an address that could not be read never is."""
        for call in calls:
            if call.dest is None:
                return False
            spans, names, probe = self.lineage.context(tid, call)
            if probe:
                continue  # a UDP connect that only sorts DNS answers: sends nothing
            keys = [key for key, _, run in spans if run == self.run] or [
                SESSION if self.run else ""
            ]
            for key in keys:
                if not self._verdict(key, call, frozenset(names)):
                    return False
        return True

    def _verdict(self, key: str, call: NetCall, names: frozenset[str]) -> bool:
        memo = (key, call.dest, names)
        found = self._verdicts.get(memo)
        if found is None:
            nodeid, policy = self.test_of(key)
            rules = policy.applied_to(self.allowlist) if policy is not None else self.allowlist
            found = rules.match(call.dest, names, nodeid or None) is not None
            if not nodeid.startswith("<unnamed test"):  # a table line still to come
                if len(self._verdicts) >= _VERDICTS_MOST:
                    self._verdicts.clear()
                self._verdicts[memo] = found
        return found

    def _place(self, tid: int) -> int | None:
        """Tells the lineage where a task no clone line has named yet belongs, from /proc: a
        thread of its process, or a child of its parent (still inside clone(), or vfork()).
        Returns the task's process, None if it is gone."""
        task: int | None = tid
        process = None
        for _ in range(64):
            if task is None or self.lineage.knows(task):
                break
            found = seccomp.thread_group(task)
            if found is None:
                self.lineage.expect(task, None, False)
                break
            tgid, ppid = found
            process = tgid if process is None else process
            if tgid != task:
                self.lineage.expect(task, tgid, True)
                task = tgid
            else:
                parent = ppid if ppid > 0 else None
                self.lineage.expect(task, parent, False)
                task = parent
        return process

    def _noop_line(self, tid: int) -> str:
        """A line the parser reads as a control marker of ``tid``: it places the task and is
        no event of any test."""
        return (
            f'{tid} {time.time():.6f} connect(-1, {{sa_family=AF_UNIX, sun_path=@"{self._noop}"}}'
            f", {len(self._noop) + 3}) = -1 EBADF (Bad file descriptor)\n"
        )

    def _connect_later(self, id_: int, tid: int, fd: int, address: bytes) -> None:
        """A blocking connect, made by a thread of a small pool so that no other call waits
        for it (a loopback connect to a listener with a full backlog waits seconds)."""
        with self._lock:
            self._connecting.add(fd)
            if not self._idle and len(self._workers) < _WORKERS_MOST:
                worker = threading.Thread(target=self._work, name="netaudit-connect", daemon=True)
                self._workers.append(worker)
                worker.start()
        self._jobs.put((id_, tid, fd, address))

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            job = self._jobs.get()
            with self._lock:
                self._idle -= 1
            if job is None:
                return
            id_, tid, fd, address = job
            try:
                err = seccomp.connect(fd, address)
            finally:
                with self._lock:
                    self._connecting.discard(fd)
                os.close(fd)
            result = egress.result_text(err)
            self._later.append(egress.resumed(tid, time.time(), "connect", result))
            try:
                if err:
                    self.listener.fail(id_, err)
                else:
                    self.listener.succeed(id_)
            except OSError:
                pass  # the listener is closed: the caller got ENOSYS, and the audit says why
            self.poke()

    def close(self) -> None:
        """At the run's end: connects still waiting are cut short (their callers are gone)."""
        with self._lock:
            for fd in self._connecting:
                seccomp.shutdown(fd)
            for _ in self._workers:
                self._jobs.put(None)
        self._unlisten()
        self.listener.close()
        self._pidfds.close()
        self._memory.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _waits(fd: int) -> bool:
    """Whether a connect on this socket can wait for the network: a blocking stream socket."""
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK:
        return False
    return seccomp.socket_type(fd) & 0xF == socket.SOCK_STREAM


def _sock(fd: int) -> str:
    """The socket's type as strace's -yy names it (``TCP``, ``UDPv6``...)."""
    family, kind = seccomp.socket_family(fd), seccomp.socket_type(fd)
    name = {int(socket.SOCK_STREAM): "TCP", int(socket.SOCK_DGRAM): "UDP"}.get(kind & 0xF, "")
    return name + ("v6" if name and family == socket.AF_INET6 else "")
