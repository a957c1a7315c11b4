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
import os
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

#: (nodeid, its marker's policy) of a test key of the run that decides.
TestOf = Callable[[str], "tuple[str, TestPolicy | None]"]
_VERDICTS_MOST = 1 << 16


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
        self._pidfds = seccomp.Pidfds()
        self._verdicts: dict[tuple[str, object, frozenset[str]], bool] = {}
        self._done: collections.deque[str] = collections.deque()
        self._connecting: set[int] = set()
        self._lock = threading.Lock()
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
        """The ends of blocking connects made here since the last call."""
        lines = []
        while self._done:
            lines.append(self._done.popleft())
        return lines

    def _unlisten(self) -> None:
        if self._listening:
            self._listening = False
            self._poll.unregister(self.listener.fd)

    # -- one call ---------------------------------------------------------------------------

    def handle(self, notification: Notification) -> Iterator[str]:
        """Answers the call, and yields its lines for the stream (the reader has read the log
        to its end first). A yield returns once the stream has taken the line in."""
        try:
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
        call = egress.decode(n)
        listener = self.listener
        if not listener.valid(n.id):
            return  # its caller is gone: what was read may have been another's memory
        if call is None or (not call.addresses and not call.invalid):
            listener.allow(n.id)  # a send to the connected peer: nothing to judge
            return
        if call.invalid:
            listener.fail(n.id, call.invalid)  # the kernel would refuse it as it stands
            return
        tid = n.tid
        if not self.lineage.knows(tid):
            self._place(tid)
            yield self._noop_line(tid)  # the lineage places the task as it takes this line
        tgid = self.lineage.process_of(tid) or tid
        socket_fd = -1
        sock = ""
        on_behalf = call.syscall == "connect" and call.addresses[0].family in egress.ON_BEHALF
        try:
            if on_behalf:
                try:
                    socket_fd = self._pidfds.socket_of(tid, tgid, call.fd)
                except OSError as err:  # not a descriptor (EBADF): the kernel's own answer
                    code = err.errno or errno.EBADF
                    listener.fail(n.id, code)
                    yield call.line(tid, time.time(), egress.result_text(code))
                    return
                sock = _sock(socket_fd) if self.names else ""
            line = call.line(tid, time.time(), "?", sock)
            records = list(self._parser.records([line]))
            marks = [r for r in records if type(r) is Mark]
            if marks and len(marks) == len(records):
                yield from self._marker(n, call, marks, tid, sock)
                return
            if not self._allowed([r for r in records if type(r) is NetCall]):
                listener.fail(n.id, self.deny)
                self.blocked += 1
                result = f"{egress.result_text(self.deny)} {BLOCKED_MARK}"
                yield call.line(tid, time.time(), result, sock)
                return
            if socket_fd < 0:
                listener.allow(n.id)
                yield line
                return
            address = call.addresses[0].raw
            assert address is not None  # on_behalf: its family was read from it
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

    def _marker(
        self, n: Notification, call: egress.Call, marks: list[Mark], tid: int, sock: str
    ) -> Iterator[str]:
        """netaudit's own: a marker fails at once (nobody listens on it), as it would; a
        connection to the control socket is made by the kernel."""
        if any(mark.verb is MarkVerb.CONTROL for mark in marks):
            self.listener.allow(n.id)
            yield call.line(tid, time.time(), "?", sock)
            return
        self.listener.fail(n.id, errno.ECONNREFUSED)
        yield call.line(tid, time.time(), egress.result_text(errno.ECONNREFUSED), sock)

    def _allowed(self, calls: list[NetCall]) -> bool:
        """Every destination of the call allowed for the test (of the deciding run) it
        belongs to; an address that could not be read never is."""
        for call in calls:
            if call.dest is None:
                return False
            spans, names, probe = self.lineage.context(call)
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

    def _place(self, tid: int) -> None:
        """Tells the lineage where a task no clone line has named yet belongs, from /proc: a
        thread of its process, or a child of its parent (still inside clone(), or vfork())."""
        task: int | None = tid
        for _ in range(64):
            if task is None or self.lineage.knows(task):
                return
            found = seccomp.thread_group(task)
            if found is None:
                self.lineage.expect(task, None, False)
                return
            tgid, ppid = found
            if tgid != task:
                self.lineage.expect(task, tgid, True)
                task = tgid
            else:
                parent = ppid if ppid > 0 else None
                self.lineage.expect(task, parent, False)
                task = parent

    def _noop_line(self, tid: int) -> str:
        """A line the parser reads as a control marker of ``tid``: it places the task and is
        no event of any test."""
        return (
            f'{tid} {time.time():.6f} connect(-1, {{sa_family=AF_UNIX, sun_path=@"{self._noop}"}}'
            f", {len(self._noop) + 3}) = -1 EBADF (Bad file descriptor)\n"
        )

    def _connect_later(self, id_: int, tid: int, fd: int, address: bytes) -> None:
        """A blocking connect, made in a thread of its own so that no other call waits."""

        def run() -> None:
            try:
                err = seccomp.connect(fd, address)
            finally:
                with self._lock:
                    self._connecting.discard(fd)
                os.close(fd)
            self._done.append(egress.resumed(tid, time.time(), "connect", egress.result_text(err)))
            try:
                if err:
                    self.listener.fail(id_, err)
                else:
                    self.listener.succeed(id_)
            except OSError:
                pass  # the listener is closed: the caller got ENOSYS, and the audit says why
            self.poke()

        with self._lock:
            self._connecting.add(fd)
        threading.Thread(target=run, name="netaudit-connect", daemon=True).start()

    def close(self) -> None:
        """At the run's end: connects still waiting are cut short (their callers are gone)."""
        with self._lock:
            for fd in self._connecting:
                seccomp.shutdown(fd)
        self._unlisten()
        self.listener.close()
        self._pidfds.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _waits(fd: int) -> bool:
    """Whether a connect on this socket can wait for the network: a blocking stream socket."""
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK:
        return False
    return seccomp.socket_kind(fd)[1] & 0xF == socket.SOCK_STREAM


def _sock(fd: int) -> str:
    """The socket's type as strace's -yy names it (``TCP``, ``UDPv6``...)."""
    family, kind = seccomp.socket_kind(fd)
    name = {int(socket.SOCK_STREAM): "TCP", int(socket.SOCK_DGRAM): "UDP"}.get(kind & 0xF, "")
    return name + ("v6" if name and family == socket.AF_INET6 else "")
