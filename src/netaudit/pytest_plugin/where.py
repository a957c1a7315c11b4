"""Where in the code: the Python lines behind the calls the trace saw, from audit hooks.

strace knows the process, the test and the destination of each call, but not which line of
Python made it. In each traced pytest process (the session and its xdist workers) an audit
hook (PEP 578) sees ``socket.connect``, ``socket.sendto`` and ``socket.sendmsg`` before the
call is made, and records the test's own frame and the innermost frame of the project's code
(outside the standard library, site-packages, netaudit, pytest and pluggy).

Records are keyed by (pid, test, destination): the key the audit folds calls by, with the pid
among the destination's pids. Matching per call by thread and order would need the folded
audit to keep every call; this key is as fine as what a report shows, it needs no clock, and
a process's hook and its markers switch tests at the same point of the same thread, so both
sides agree on the test. A host name given to ``connect()`` itself (Python resolves it inside
the call) is matched by port, for a destination no literal address matched. Lookups
(``socket.getaddrinfo`` and its kin, and those host names) are where the system resolver's
traffic comes from: their sites go to a destination marked as the resolver.

Hooks cannot be removed: after the session, the hook's event set is emptied, and what is left
is one set lookup per audit event.
"""

from __future__ import annotations

import _socket
import inspect
import os
import site
import socket
import sys
import sysconfig
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import CodeType, FrameType
from typing import Any, Union

from .. import markers
from ..model import AF_INET, AF_INET6, AF_NETLINK, AF_UNIX, SESSION, Destination

EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg"})
#: Name lookups: what the system resolver's traffic comes from (getaddrinfo goes to it).
LOOKUPS = frozenset(
    {"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
     "socket.gethostbyaddr"}
)  # fmt: skip
#: The family under which a lookup's call sites are kept: they belong to no one destination,
#: but to the resolver's, of the same process and test.
LOOKUP = "lookup"
#: Distinct call sites kept per (pid, test, destination): a loop adds no more.
MAX_SITES = 8
#: Distinct (pid, test, destination) a process records sites for: a scan's further
#: destinations are reported without them, in memory that does not grow with the scan.
MAX_DESTINATIONS = 16384
_MARKER = "\0" + markers.PREFIX

#: (family, address, port) as the audit's Endpoint has them; port None for Unix and netlink.
Target = tuple[str, str, Union[int, None]]
#: What a worker ships to its controller: [pid, test, family, address, port, named, sites].
Exported = list[Any]


class WhereRecorder:
    """Call sites per (pid, test, destination) for one traced pytest process."""

    def __init__(self, rootdir: Path) -> None:
        self.test = SESSION
        self._function: object = None
        self._resolved = True
        self._code: CodeType | None = None
        self._globals: dict[str, Any] | None = None
        self._lines = range(0)
        self._root = str(rootdir) + os.sep
        self._skipped = _library_dirs()
        self._shown: dict[str, str | None] = {}
        #: "path:line in name" by (file, line), and the test's own lines (reset per test):
        #: reading a frame's code raises an audit event, so each line is named once.
        self._names: dict[tuple[str, int], str] = {}
        self._own: dict[int, str] = {}
        self._raw: dict[tuple[int, str, int | str, object], dict[str, None]] = {}
        self._targets: dict[tuple[int, str, Target, bool], dict[str, None]] = {}
        self._events = set(EVENTS | LOOKUPS)
        sys.addaudithook(_hook(self._events, self._seen))

    # -- inside the session -------------------------------------------------------------

    def begin(self, nodeid: str, function: object) -> None:
        """The test ``nodeid`` runs now; ``function`` is its Python function, if it has one."""
        self.test = nodeid
        self._function = function
        self._resolved = False  # on the test's first call: most tests make none

    def end(self) -> None:
        self.test = SESSION
        self._function = None
        self._resolved = False

    def close(self) -> None:
        """The hook becomes a set lookup that always fails: it cannot be removed."""
        self._events.clear()

    def _seen(self, event: str, args: tuple[Any, ...]) -> None:
        if event in LOOKUPS:
            self._looked_up()
            return
        if len(args) < 2 or args[1] is None:
            return
        sock, address = args[0], args[1]
        if isinstance(address, (str, bytes)) and _is_marker(address):
            return  # netaudit's own markers
        try:
            family = _family(sock)
            key = (os.getpid(), self.test, family, address)
            sites = self._raw.get(key)
        except (AttributeError, TypeError, ValueError):
            return  # an unhashable address or a socket-like object: nothing to match
        if sites is not None and len(sites) >= MAX_SITES:
            return
        if sites is None and len(self._raw) >= MAX_DESTINATIONS:
            return
        site = self._site(sys._getframe(2))
        if site:
            if sites is None:
                sites = self._raw[key] = {}
            sites[site] = None

    def _looked_up(self) -> None:
        key = (os.getpid(), self.test, LOOKUP, "")
        sites = self._raw.get(key)
        if sites is not None and len(sites) >= MAX_SITES:
            return
        site = self._site(sys._getframe(3))
        if site:
            self._raw.setdefault(key, {})[site] = None

    def _site(self, frame: FrameType | None) -> str:
        """``test frame > innermost project frame``, or the one of them that exists.

        ``f_code`` is read only where needed and each line is named once: every read raises
        an audit event of its own (``object.__getattr__``).
        """
        own = inner = ""
        if not self._resolved:
            self._code, self._globals = _code_of(self._function)
            self._lines = _lines_of(self._code)
            self._own = {}
            self._resolved = True
        code, test_globals, lines = self._code, self._globals, self._lines
        while frame is not None:
            if not inner:
                file = frame.f_globals.get("__file__")
                if not isinstance(file, str):
                    file = frame.f_code.co_filename
                shown = self._shown_path(file)
                if shown is not None:
                    key = (file, frame.f_lineno)
                    inner = self._names.get(key) or self._names.setdefault(
                        key, f"{shown}:{key[1]} in {frame.f_code.co_name}"
                    )
                    if code is None:
                        break
            if frame.f_globals is test_globals and code is not None:
                line = frame.f_lineno
                if line in lines:
                    found = self._own.get(line)
                    if found is None:
                        # Another function of the test's module may share its lines (a
                        # function nested in the test): only the test's code is its frame.
                        path = self._shown_path(code.co_filename) or code.co_filename
                        is_test = frame.f_code is code
                        found = self._own[line] = f"{path}:{line} in {code.co_name}" * is_test
                    if found:
                        own = found
                        break
            frame = frame.f_back
        if own and inner and own != inner:
            return f"{own} > {inner}"
        return own or inner

    def _shown_path(self, filename: str) -> str | None:
        """The path a report shows (relative to the rootdir), or None for library code."""
        try:
            return self._shown[filename]
        except KeyError:
            pass
        shown: str | None = None
        if not filename.startswith("<") and not filename.startswith(self._skipped):
            shown = filename[len(self._root) :] if filename.startswith(self._root) else filename
        self._shown[filename] = shown
        return shown

    # -- after the session --------------------------------------------------------------

    def export(self) -> list[Exported]:
        """Marshallable records (lists, strings, ints), for xdist's workeroutput."""
        self._normalise()
        return [
            [pid, test, *target, named, list(sites)]
            for (pid, test, target, named), sites in self._targets.items()
        ]

    def add(self, records: object) -> None:
        """Records a worker exported; anything malformed is left out."""
        if not isinstance(records, list):
            return
        for record in records:
            if not (isinstance(record, list) and len(record) == 7):
                continue
            pid, test, family, address, port, named, sites = record
            if not (isinstance(pid, int) and isinstance(test, str) and isinstance(sites, list)):
                continue
            if not (isinstance(family, str) and isinstance(address, str)):
                continue
            target: Target = (family, address, port if isinstance(port, int) else None)
            into = self._targets.setdefault((pid, test, target, bool(named)), {})
            into.update(dict.fromkeys(s for s in sites if isinstance(s, str)))

    def attach(self, destinations: Iterable[Destination]) -> Iterator[Destination]:
        """The destinations, each with the call sites recorded for its test and pids, as a
        stream: there may be more than memory holds (see spill)."""
        self._normalise()
        exact: dict[tuple[int, str, Target], dict[str, None]] = {}
        by_port: dict[tuple[int, str, str, int | None], dict[str, None]] = {}
        lookups: dict[tuple[int, str], dict[str, None]] = {}
        for (pid, test, target, named), sites in self._targets.items():
            if named or target[0] == LOOKUP:
                lookups.setdefault((pid, test), {}).update(sites)
            if named:
                by_port.setdefault((pid, test, target[0], target[2]), {}).update(sites)
            elif target[0] != LOOKUP:
                exact.setdefault((pid, test, target), {}).update(sites)
        for d in destinations:
            endpoint = d.endpoint
            if endpoint is None:
                yield d
                continue
            target = (endpoint.family, endpoint.address, endpoint.port)
            found: dict[str, None] = {}
            for pid in d.pids:
                found.update(exact.get((pid, d.test, target), {}))
            if not found:
                for pid in d.pids:
                    found.update(by_port.get((pid, d.test, endpoint.family, endpoint.port), {}))
            if not found and d.resolver:
                for pid in d.pids:
                    found.update(lookups.get((pid, d.test), {}))
            if found:
                d = replace(d, where=tuple(sorted({*d.where, *found})))
            yield d

    def _normalise(self) -> None:
        raw, self._raw = self._raw, {}
        for (pid, test, family, address), sites in raw.items():
            found = ((LOOKUP, "", None), False) if family == LOOKUP else target_of(family, address)
            if found is not None:
                target, named = found
                self._targets.setdefault((pid, test, target, named), {}).update(sites)


def target_of(family: object, address: object) -> tuple[Target, bool] | None:
    """The destination as the trace shows it, and whether it is a host name Python will
    resolve in the call; None for a family or form the audit does not name this way."""
    if family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        import ipaddress

        if len(address) < 2 or not isinstance(address[0], str):
            return None
        host, port = address[0].partition("%")[0], address[1]
        if not isinstance(port, int):
            return None
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            name = AF_INET if family == socket.AF_INET else AF_INET6
            return (name, host, port), True
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return (AF_INET if ip.version == 4 else AF_INET6, str(ip), port), False
    if family == socket.AF_UNIX and isinstance(address, (str, bytes)):
        path = address if isinstance(address, str) else address.decode("utf-8", "backslashreplace")
        if path.startswith("\0"):
            path = "@" + path[1:]
        return (AF_UNIX, path, None), False
    netlink = getattr(socket, "AF_NETLINK", None)
    if family == netlink and isinstance(address, tuple) and address:
        return (AF_NETLINK, f"pid={address[0]}", None), False
    return None


#: A socket's family as a plain int: socket.socket.family would build an enum member per call.
_family = _socket.socket.family.__get__


def _hook(events: set[str], seen: Any) -> Any:
    """A closure, not a method: it runs for every audit event of the process (imports, opens),
    and one set lookup is all it may cost for those."""

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in events:
            try:
                seen(event, args)
            except Exception:  # an exception here would fail the user's call: never
                return

    return hook


def _is_marker(address: str | bytes) -> bool:
    if isinstance(address, bytes):
        return address.startswith(_MARKER.encode())
    return address.startswith(_MARKER)


def _code_of(function: object) -> tuple[CodeType | None, dict[str, Any] | None]:
    """The code object a test function's frame runs (seen through decorators that wrap it),
    and the module globals it runs in."""
    function = getattr(function, "__func__", function)
    try:
        function = inspect.unwrap(function)  # type: ignore[arg-type]
    except ValueError:
        return None, None
    code = getattr(function, "__code__", None)
    test_globals = getattr(function, "__globals__", None)
    if not isinstance(code, CodeType) or not isinstance(test_globals, dict):
        return None, None
    return code, test_globals


def _lines_of(code: CodeType | None) -> range:
    """The lines a code object spans: a frame outside them cannot be running it."""
    if code is None:
        return range(0)
    import dis

    lines = [line for _, line in dis.findlinestarts(code) if line is not None]
    return range(code.co_firstlineno, max(lines, default=code.co_firstlineno) + 1)


def _library_dirs() -> tuple[str, ...]:
    """Directories whose frames are never the "innermost frame of the project's code"."""
    paths = sysconfig.get_paths()
    dirs = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    dirs.add(os.path.dirname(os.__file__))  # the standard library this interpreter runs
    dirs.update(_site_dirs())
    for name in ("_pytest", "pytest", "pluggy", __name__.split(".")[0]):
        file = getattr(sys.modules.get(name), "__file__", None)
        if file:
            dirs.add(os.path.dirname(file))
    return tuple(sorted({os.path.join(p, "") for d in dirs for p in (d, os.path.realpath(d))}))


def _site_dirs() -> Sequence[str]:
    found: list[str] = []
    for name in ("getsitepackages", "getusersitepackages"):  # absent from old virtualenvs
        listed = getattr(site, name, None)
        if listed is not None:
            got = listed()
            found += [got] if isinstance(got, str) else got
    found += [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    return found
