"""The data model: what the trace says happened, who did it, and what the audit made of it.

Everything here is an immutable value with no I/O. The flow through the package is
trace -> parse (records) -> attribute (NetEvent) -> audit (Destination, AuditResult) -> render.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, Union, runtime_checkable

from .markers import SESSION as SESSION
from .markers import MarkVerb as MarkVerb

#: Families the allowlist can name; the parser keeps any other family strace prints, as printed.
AF_INET = "AF_INET"
AF_INET6 = "AF_INET6"
AF_UNIX = "AF_UNIX"
AF_NETLINK = "AF_NETLINK"
AF_PACKET = "AF_PACKET"
AF_UNSPEC = "AF_UNSPEC"


class Syscall(str, enum.Enum):
    """The system calls through which a process can send to an address."""

    CONNECT = "connect"
    SENDTO = "sendto"
    SENDMSG = "sendmsg"
    SENDMMSG = "sendmmsg"


@dataclass(frozen=True, init=False)
class Endpoint:
    """A destination as the kernel was given it.

    ``address`` holds, by family: the canonical IP text (v4-mapped IPv6 is already IPv4);
    a Unix socket path, ``@name`` for an abstract name, or ``""`` for an unnamed socket;
    ``pid=N`` for netlink; strace's own text for anything else, so nothing is lost.
    """

    family: str
    address: str = ""
    port: int | None = None
    scope_id: str = ""
    _hash: int = field(init=False, repr=False, compare=False)

    def __init__(
        self, family: str, address: str = "", port: int | None = None, scope_id: str = ""
    ) -> None:
        # One is built per distinct destination, hundreds of thousands in a scan: the frozen
        # dataclass's own __init__ (a setattr per field) costs twice this.
        fields = self.__dict__
        fields["family"] = family
        fields["address"] = address
        fields["port"] = port
        fields["scope_id"] = scope_id
        fields["_hash"] = hash((family, address, port, scope_id))

    def __hash__(self) -> int:
        # Computed once: every event is folded by its endpoint, a million times a log.
        return self._hash

    def __reduce__(self) -> tuple[object, ...]:
        # String hashes differ between processes: rebuild rather than carry a stale _hash.
        return (Endpoint, (self.family, self.address, self.port, self.scope_id))

    def __str__(self) -> str:
        if self.family == AF_INET6:
            scope = f"%{self.scope_id}" if self.scope_id not in ("", "0") else ""
            host = f"[{self.address}{scope}]"
        elif self.family == AF_UNIX and not self.address:
            host = "(unnamed)"
        else:
            host = self.address
        return host if self.port is None else f"{host}:{self.port}"


class NetCall(NamedTuple):
    """One traced call that sends to (or connects to) a destination, as the log shows it.

    A NamedTuple rather than a frozen dataclass: one is built per log line, and construction
    is 3-4x cheaper (measured 0.3 us against 1.0 us), which the 1,000,000-event budget needs.

    ``dest`` is None for a line the parser could not understand; ``raw`` then holds the line,
    and no rule ever allows it. With a ``dest``, ``raw`` says what the call was besides a call
    to it: a DNS query (DNS_QUERY) or, once attributed, a resolve-only probe (PROBE).
    """

    syscall: Syscall
    tid: int
    time: float | None
    fd: int | None
    dest: Endpoint | None
    result: str
    sock: str = ""
    line: int = 0
    raw: str = ""


@dataclass(frozen=True)
class Spawn:
    """A new task: ``child`` is a thread of ``parent``'s process when ``thread`` is true."""

    parent: int
    child: int
    thread: bool
    time: float | None = None
    line: int = 0


@dataclass(frozen=True)
class Exec:
    """A successful execve: from here on, ``tid``'s process runs ``path``.

    ``tid`` is the thread group leader's id when the exec came from another thread.
    """

    tid: int
    path: str
    argv: tuple[str, ...] = ()
    time: float | None = None
    line: int = 0


class HazardKind(str, enum.Enum):
    """Things a traced program did that let traffic bypass syscall tracing."""

    IO_URING = "io_uring"
    CLONE_UNTRACED = "clone_untraced"
    #: A seccomp filter with a user-notification listener: calls it catches skip ptrace.
    SECCOMP_NOTIFY = "seccomp_notify"
    #: The same, refused (EBUSY): block mode's own listener holds the tree.
    SECCOMP_REFUSED = "seccomp_refused"
    #: A packet socket bound to an interface: its send() carries no address to judge.
    RAW_PACKET = "raw_packet"


@dataclass(frozen=True)
class Hazard:
    """A sign that the audit cannot be complete for this task: its traffic may bypass strace."""

    kind: HazardKind
    tid: int
    time: float | None = None
    line: int = 0
    raw: str = ""


@dataclass(frozen=True)
class Mark:
    """A marker ``connect()`` that a test session made to tell the trace where it is.

    ``run`` is the run's id, ``worker`` its xdist worker ("" outside xdist), ``test`` the
    index of the test for BEGIN and -1 otherwise.
    """

    tid: int
    run: str
    worker: str
    verb: MarkVerb
    test: int = -1
    time: float | None = None
    line: int = 0


@dataclass(frozen=True)
class Started:
    """A sending call that strace split: it began here, and its NetCall comes when it ends.

    Attribution is decided here, where the call was made, not where it returned: a thread
    blocked in connect() while its test ends must not be blamed on the next test.
    """

    tid: int
    time: float | None = None
    line: int = 0


@dataclass(frozen=True)
class Resolved:
    """A DNS answer a task received: each address with the names that led to it (the
    question's name first, then each alias of its CNAME chain)."""

    tid: int
    addresses: tuple[tuple[str, tuple[str, ...]], ...]
    time: float | None = None
    line: int = 0


#: ``NetCall.raw`` (and ``Destination.raw``) of a UDP connect to an address its process had
#: just been given by DNS: getaddrinfo's probe to sort the answers (RFC 6724), which sends
#: nothing. Any send on that socket is an event of its own.
PROBE = "resolved"
#: ``NetCall.raw`` (and ``Destination.raw``) of a DNS query: this prefix, its type and name
#: (``dns AAAA api.example.com``); the call's destination is the resolver it went to.
DNS_QUERY = "dns "

#: The first word of the result of a call block mode refused (``BLOCKED EPERM``): the call
#: failed with that errno before anything was sent.
BLOCKED = "BLOCKED"

#: What the parser yields, in log order.
Record = Union[NetCall, Spawn, Exec, Hazard, Mark, Started, Resolved]


@dataclass(frozen=True)
class Process:
    """A process (thread group) of the traced tree, as of one exec.

    A new value is made at each exec; ``program`` is inherited from the parent until then.
    """

    pid: int
    parent: int | None
    program: str
    path: str = ""


class NetEvent(NamedTuple):
    """A network call with the process that made it and the test it belongs to.

    ``test`` is "" when the run has no tests (``netaudit run``, ``netaudit analyze``); in a
    test session it is a test key (``markers.test_key``) or SESSION, within the run ``run``.
    ``after_test`` marks a call a test's leftover process made after that test ended.
    ``names`` are the host names whose DNS answer, received last by the process (or an
    ancestor) before the call, gave the call's address.
    """

    call: NetCall
    process: Process
    test: str = ""
    after_test: bool = False
    run: str = ""
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """Allowed by the named rule, or a violation when ``rule`` is None."""

    rule: str | None
    #: Where the rule comes from: "allowlist", "marker" (a test's own) or "builtin".
    by: str = ""

    @property
    def allowed(self) -> bool:
        return self.rule is not None


@dataclass(frozen=True)
class Destination:
    """Every call of one test to one destination, folded together.

    Unparsed lines each form their own destination (``endpoint`` None, ``raw`` set).
    A DNS query (``raw`` starts with DNS_QUERY) and a resolve-only probe (``raw`` is PROBE)
    are destinations of their own beside the plain calls to the same endpoint.
    Tuples are sorted, and ``results`` pairs each result with its count. ``names`` are the
    host names the trace saw resolve to the address (see NetEvent). ``where`` holds the
    Python lines that made the calls, when a traced pytest process saw them (test frame, then
    the innermost frame of the project's code): the trace itself cannot know them.
    """

    test: str
    endpoint: Endpoint | None
    raw: str
    verdict: Verdict
    count: int
    pids: tuple[int, ...]
    programs: tuple[str, ...]
    syscalls: tuple[str, ...]
    results: tuple[tuple[str, int], ...]
    socks: tuple[str, ...] = ()
    after_test: bool = False
    first_time: float | None = None
    names: tuple[str, ...] = ()
    where: tuple[str, ...] = ()
    #: A nameserver of the system's resolver (/etc/resolv.conf) on port 53: every lookup of a
    #: name goes there, so allowing it lets a test look up any name (resolvers.py).
    resolver: bool = False

    @property
    def kind(self) -> str:
        """``connection`` (any call to an address), ``dns_query``, ``resolved`` or ``unparsed``."""
        if self.endpoint is None:
            return "unparsed"
        if self.raw == PROBE:
            return "resolved"
        return "dns_query" if self.raw.startswith(DNS_QUERY) else "connection"

    @property
    def blocked(self) -> int:
        """How many of the calls block mode refused."""
        return sum(n for result, n in self.results if result.startswith(BLOCKED))

    @property
    def query(self) -> tuple[str, str] | None:
        """A DNS query's (type, name)."""
        if self.endpoint is None or not self.raw.startswith(DNS_QUERY):
            return None
        qtype, _, name = self.raw[len(DNS_QUERY) :].partition(" ")
        return qtype, name

    @property
    def family(self) -> str:
        return self.endpoint.family if self.endpoint is not None else "UNPARSED"

    @property
    def address(self) -> str:
        return str(self.endpoint) if self.endpoint is not None else self.raw


#: What each hazard is, as the reports name it.
HAZARD_WHAT = {
    HazardKind.IO_URING: "io_uring used",
    HazardKind.CLONE_UNTRACED: "an untraced child (CLONE_UNTRACED) started",
    HazardKind.SECCOMP_NOTIFY: "a seccomp user-notification filter installed",
    HazardKind.SECCOMP_REFUSED: (
        "a seccomp user-notification filter refused (block mode holds the tree's)"
    ),
    HazardKind.RAW_PACKET: "a raw packet socket (AF_PACKET) bound to an interface",
}


@dataclass(frozen=True)
class Finding:
    """A reason the audit is incomplete: a hazard seen in the trace, with who caused it."""

    kind: HazardKind
    pid: int
    program: str
    test: str = ""
    run: str = ""

    def __str__(self) -> str:
        return f"audit incomplete: {HAZARD_WHAT[self.kind]} by pid {self.pid} ({self.program})"


@dataclass(frozen=True)
class TraceStats:
    """How much of the log was read, so a report can show that nothing was skipped."""

    lines: int = 0
    calls: int = 0
    unparsed: int = 0
    #: Lines in no form strace writes (a log with only such lines is not a strace log).
    foreign: int = 0

    @property
    def looks_like_strace(self) -> bool:
        return self.lines > self.foreign


@runtime_checkable
class Stored(Protocol):
    """Destinations too many to hold in memory, kept on disk (``spill.Spilled``): iterable
    as often as needed, each pass reading them again; their numbers are known without one."""

    def __iter__(self) -> Iterator[Destination]: ...

    def __len__(self) -> int: ...

    def violations(self) -> Stored: ...

    def per_test(self) -> Mapping[str, int]:
        """How many of them each test has, tests in first-seen order."""
        ...


#: A run's destinations: a tuple when they are few, else kept on disk.
Destinations = Union[tuple[Destination, ...], Stored]


@dataclass(frozen=True)
class AuditResult:
    """The judged run: every destination (in first-seen order) and what made it incomplete."""

    destinations: Destinations
    findings: tuple[Finding, ...] = ()
    stats: TraceStats = TraceStats()

    @property
    def violations(self) -> Destinations:
        if isinstance(self.destinations, tuple):
            return tuple(d for d in self.destinations if not d.verdict.allowed)
        return self.destinations.violations()

    @property
    def clean(self) -> bool:
        return not self.findings and not self.violations


@dataclass(frozen=True)
class RunInfo:
    """What a report says about the run it judged."""

    started: str
    host: str
    netaudit_version: str
    command: tuple[str, ...] = ()
    log: str | None = None
    allowlist: str | None = None
    strace_version: str | None = None
    syscalls: tuple[str, ...] = ()
    exit_status: int | None = None
