"""In-band markers: how a test session tells the trace which test is running.

A marker is a ``connect()`` to an abstract AF_UNIX address that nobody listens on. It costs
one traced syscall, and it lands in strace's single, ordered stream between the calls it
separates, so attribution needs no second clock. The address reads
``@netaudit:<run>[.<worker>]:<verb>[:<test>]``: ``run`` is a random hex id per run (a nested
``pytest --netaudit`` has its own), ``worker`` an xdist worker id, ``test`` an index into the
run's table of tests (nodeids are too long for the 107 bytes of ``sun_path``).
"""

from __future__ import annotations

import enum
import os
import re


class MarkVerb(str, enum.Enum):
    """What a test session announces in the trace with a marker."""

    #: This process now drives the run: its events belong to the run's session.
    START = "s"
    #: A test begins (or resumes after a wider-scoped fixture) in this process.
    BEGIN = "b"
    #: The current test ends (or pauses for a wider-scoped fixture): back to the session.
    END = "e"
    #: The run is about to ask for its report: everything it did is in the log before this.
    FINISH = "f"
    #: A connection to the supervisor's control socket, not an event of the run.
    CONTROL = "x"


#: The "test" of what a run does outside any test (session set-up, plugins, the end).
SESSION = "<session>"
PREFIX = "netaudit:"
_MARK = re.compile(
    r"netaudit:([0-9a-f]{8,32})(?:\.([A-Za-z0-9_-]{1,32}))?:([sbefx])(?::([0-9]{1,9}))?"
)
_WORKER_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def new_run_id() -> str:
    """64 random bits (os.urandom, as secrets.token_hex, without importing it)."""
    return os.urandom(8).hex()


def address(run: str, verb: MarkVerb, test: int = -1, worker: str = "") -> bytes:
    """The abstract socket address (leading NUL) of a marker."""
    who = f"{run}.{safe_worker(worker)}" if worker else run
    name = f"{PREFIX}{who}:{verb.value}" + (f":{test}" if verb is MarkVerb.BEGIN else "")
    return b"\0" + name.encode("ascii")


def safe_worker(worker: str) -> str:
    return _WORKER_UNSAFE.sub("_", worker)[:32]


def parse(name: str) -> tuple[str, str, MarkVerb, int] | None:
    """``(run, worker, verb, test)`` from an abstract name (without its ``@``), else None."""
    match = _MARK.fullmatch(name)
    if match is None:
        return None
    run, worker, verb, test = match.groups()
    if (test is None) == (verb == "b"):
        return None
    return run, worker or "", MarkVerb(verb), -1 if test is None else int(test)


def test_key(worker: str, test: int) -> str:
    """How events of test ``test`` of ``worker`` are keyed until the run names its tests."""
    return f"{worker}:{test}"
