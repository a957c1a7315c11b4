"""Bounded memory for runs that reach many destinations.

A scan-like run reaches hundreds of thousands of destinations; a tally and then a Destination
for each, all in memory, took about 2.5 KB apiece. Here what does not fit goes to files in a
private directory (mode 0700, made on first need, removed by ``Scratch.close``, when the
Scratch is collected, or at exit), in three pieces:

* ``Grouping``: records grouped by key with at most ``limit`` keys in memory; the rest is
  spilled to partition files by a hash of the key, and each partition is grouped back on its
  own (split again by more of the hash if it is itself too big), then all are merged in the
  order asked for (first seen, for a fold) as a stream.
* ``Spilled``: destinations kept on disk in order and read back at each pass, so that a report
  can be rendered, or written as JSON, without holding them all; it travels between processes
  as its path.
* ``collect``: a stream of destinations into a tuple when they are few, else into a Spilled.

Files hold ``marshal`` blocks of plain tuples: the fastest round trip the standard library
has, and only this process (or its supervisor, the same interpreter) reads them back.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import marshal
import os
import shutil
import struct
import tempfile
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import IO, Any, Generic, TypeVar, Union

from .model import Destination, Endpoint, Verdict

#: Records per block: the unit of reading and writing.
BLOCK = 256
#: Records a partition gathers before they are written, while spilling.
_FLUSH = 256
#: Each block's size in bytes, before it.
_SIZE = struct.Struct("<I")
#: Partitions per level of a Grouping.
PARTITIONS = 16
#: Keys a Grouping holds in memory before it spills.
LIMIT = 16384
#: Most destinations kept in memory as a tuple; more are kept on disk (a Spilled).
SMALL = 4096

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: A destination as stored: test, family (None: unparsed), address, port, scope, raw, rule,
#: by, count, pids, programs, syscalls, results, socks, after_test, first_time, names, where,
#: resolver.
Record = tuple[Any, ...]
_RULE = 6


class Scratch:
    """A private directory for spilled files, made on first use.

    Removed by ``close()``, or when the Scratch is garbage-collected, or at interpreter exit,
    whichever comes first; whatever holds a Spilled keeps its Scratch alive.
    """

    def __init__(self, prefix: str = "netaudit-spill-") -> None:
        self._prefix = prefix
        self._dir: str | None = None
        self._made = 0
        self._remove: weakref.finalize[Any, Any] | None = None

    def new(self, stem: str) -> str:
        """The path of a new file in the directory (not created)."""
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix=self._prefix)  # mode 0700
            self._remove = weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._made += 1
        return os.path.join(self._dir, f"{stem}-{self._made}")

    def close(self) -> None:
        if self._remove is not None:
            self._remove()


def read(path: str) -> Iterator[Any]:
    """The records of a file of marshal blocks, in order.

    Each block is read whole and then decoded: ``marshal.load`` on a file reads it a few
    bytes at a time, 40 times slower.
    """
    with open(path, "rb") as file:
        while True:
            head = file.read(_SIZE.size)
            if len(head) < _SIZE.size:
                return
            (size,) = _SIZE.unpack(head)
            yield from marshal.loads(file.read(size))


def _discard(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class Grouping(Generic[K, V]):
    """Records grouped by key in bounded memory.

    ``combine`` merges two values of one key (it must not care which came first: the order
    of spilled records is not kept); ``route`` gives the part of a key that partitions it
    (a ``rename`` at ``grouped`` may change the rest of the key, never that part).
    Partition ``i`` of a level holds the keys whose route hashes to ``i`` in that level's
    digit (base PARTITIONS) of the hash: a partition too big to group in memory is split
    by the next digit.
    """

    def __init__(
        self,
        combine: Callable[[V, V], V],
        scratch: Scratch,
        route: Callable[[K], Hashable] = lambda key: key,
        *,
        limit: int | None = None,
        depth: int = 0,
    ) -> None:
        self._combine = combine
        self._scratch = scratch
        self._route = route
        self._limit = LIMIT if limit is None else limit
        self._depth = depth
        self._table: dict[K, V] = {}
        self._parts: list[str] | None = None

    @property
    def spilled(self) -> bool:
        return self._parts is not None

    def add(self, key: K, value: V) -> None:
        table = self._table
        old = table.get(key)
        if old is None:
            table[key] = value
            if len(table) > self._limit and self._depth < _DEPTHS:
                self.spill()
        else:
            table[key] = self._combine(old, value)

    def spill(self, records: Iterable[tuple[K, V]] = ()) -> None:
        """Writes ``records`` and the table to the partition files and empties the table."""
        if self._parts is None:
            self._parts = [self._scratch.new(f"part{self._depth}") for _ in range(PARTITIONS)]
        parts: list[list[tuple[K, V]]] = [[] for _ in range(PARTITIONS)]
        route, shift = self._route, _BITS * self._depth
        files = [open(path, "ab") for path in self._parts]  # noqa: SIM115 - closed below
        try:
            for item in itertools.chain(records, _drained(self._table)):
                index = hash(route(item[0])) >> shift & _MASK
                part = parts[index]
                part.append(item)
                if len(part) >= _FLUSH:
                    _dump(files[index], part)
                    part.clear()
            for file, part in zip(files, parts):
                _dump(file, part)
        finally:
            for file in files:
                file.close()

    def grouped(
        self,
        order: Callable[[tuple[K, V]], Any],
        keep: Callable[[K], bool] | None = None,
        rename: Callable[[K], K] | None = None,
    ) -> Iterator[tuple[K, V]]:
        """Every key once with its combined value, sorted by ``order`` (whose values must be
        distinct); only keys ``keep`` accepts, each first renamed by ``rename`` (keys that
        become equal are combined).

        The Grouping goes on accepting records afterwards; everything is read again at the
        next call.
        """
        if self._parts is None:
            yield from group(self._table.items(), self._combine, order, keep, rename)
            return
        self.spill()
        runs: list[str] = []
        try:
            for part in self._parts:
                run = self._scratch.new("run")
                runs.append(run)
                append(run, self._sorted(read(part), order, keep, rename))
            for _, key, value in heapq.merge(*(read(run) for run in runs)):
                yield key, value
        finally:
            for run in runs:
                _discard(run)

    def _sorted(
        self,
        records: Iterable[tuple[K, V]],
        order: Callable[[tuple[K, V]], Any],
        keep: Callable[[K], bool] | None,
        rename: Callable[[K], K] | None,
    ) -> Iterable[tuple[Any, K, V]]:
        """One partition grouped, as (order, key, value) sorted: in memory when its keys fit,
        else split further."""
        table: dict[K, V] = {}
        combine, limit = self._combine, self._limit
        kept = _kept(records, keep, rename)
        for key, value in kept:
            old = table.get(key)
            if old is not None:
                table[key] = combine(old, value)
                continue
            table[key] = value
            if len(table) > limit and self._depth + 1 < _DEPTHS:
                return self._deeper(table, kept, order)
        return sorted([(order(item), *item) for item in table.items()])

    def _deeper(
        self,
        table: dict[K, V],
        records: Iterator[tuple[K, V]],
        order: Callable[[tuple[K, V]], Any],
    ) -> Iterator[tuple[Any, K, V]]:
        """A partition with more keys than memory holds, split by the next digit."""
        deeper: Grouping[K, V] = Grouping(
            self._combine, self._scratch, self._route, limit=self._limit, depth=self._depth + 1
        )
        deeper.spill(table.items())
        table.clear()
        for key, value in records:
            deeper.add(key, value)
        try:
            yield from ((order(item), *item) for item in deeper.grouped(order))
        finally:
            deeper.discard()

    def discard(self) -> None:
        """Drops everything: the table and the partition files."""
        self._table.clear()
        for part in self._parts or ():
            _discard(part)
        self._parts = None


#: Bits of the hash each level of partitions uses, and how many levels a 64-bit hash has.
_BITS = PARTITIONS.bit_length() - 1
_MASK = PARTITIONS - 1
_DEPTHS = 64 // _BITS


def append(path: str, records: Iterable[Any]) -> int:
    """Writes records to the end of a file, a block at a time; returns how many."""
    rest, count = iter(records), 0
    with open(path, "ab") as file:
        while True:
            block = list(itertools.islice(rest, BLOCK))
            if not block:
                return count
            _dump(file, block)
            count += len(block)


def _dump(file: IO[bytes], block: list[Any]) -> None:
    if block:
        data = marshal.dumps(block)
        file.write(_SIZE.pack(len(data)) + data)


def _drained(table: dict[K, V]) -> Iterator[tuple[K, V]]:
    """The items of a table, each removed as it is taken: what is spilled is freed as it goes,
    so spilling needs little more memory than the table did."""
    while table:
        yield table.popitem()


def group(
    items: Iterable[tuple[K, V]],
    combine: Callable[[V, V], V],
    order: Callable[[tuple[K, V]], Any],
    keep: Callable[[K], bool] | None = None,
    rename: Callable[[K], K] | None = None,
) -> list[tuple[K, V]]:
    """What ``Grouping.grouped`` does, in memory: for records that fit there."""
    if keep is None and rename is None:
        return sorted(items, key=order)
    table: dict[K, V] = {}
    for key, value in _kept(items, keep, rename):
        old = table.get(key)
        table[key] = value if old is None else combine(old, value)
    return sorted(table.items(), key=order)


def _kept(
    items: Iterable[tuple[K, V]],
    keep: Callable[[K], bool] | None,
    rename: Callable[[K], K] | None,
) -> Iterator[tuple[K, V]]:
    """The items ``keep`` accepts, each renamed."""
    for key, value in items:
        if keep is None or keep(key):
            yield (key if rename is None else rename(key)), value


class Spilled:
    """Destinations on disk, in order; each pass reads the file again.

    ``len()`` is known without a pass, and so is the number of violations (destinations that
    no rule allowed, or not judged yet). A copy sent to another process (pickled) is its path
    and counts: the file stays its owner's, who must keep it until the copy is read.
    """

    def __init__(
        self,
        path: str,
        count: int,
        *,
        violations: int = 0,
        calls: int = 0,
        unparsed: int = 0,
        scratch: Scratch | None = None,
        only_violations: bool = False,
        tests: Mapping[str, tuple[int, int]] | None = None,
    ) -> None:
        self.path = path
        self._count = count
        self.violation_count = violations
        #: Per test: how many destinations, and how many violations.
        self._tests = tests or {}
        #: The calls the destinations hold, and those of unparsed lines.
        self.calls = calls
        self.unparsed = unparsed
        self._scratch = scratch  # kept alive for as long as this is
        self._only_violations = only_violations

    def __iter__(self) -> Iterator[Destination]:
        build = _Builder()
        if not self._only_violations:
            return map(build, read(self.path))
        return (build(r) for r in read(self.path) if r[_RULE] is None)

    def records(self) -> Iterator[Record]:
        """The stored tuples, without building a Destination of each (see ``record``)."""
        return read(self.path)

    def __len__(self) -> int:
        return self.violation_count if self._only_violations else self._count

    def __bool__(self) -> bool:
        return len(self) > 0

    def violations(self) -> Spilled:
        """The destinations no rule allowed, as a view of the same file."""
        return Spilled(
            self.path,
            self._count,
            violations=self.violation_count,
            calls=self.calls,
            unparsed=self.unparsed,
            scratch=self._scratch,
            only_violations=True,
            tests=self._tests,
        )

    def per_test(self) -> dict[str, int]:
        """How many of them each test has, tests in first-seen order."""
        which = 1 if self._only_violations else 0
        return {test: counts[which] for test, counts in self._tests.items() if counts[which]}

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _spilled,
            (self.path, self._count, self.violation_count, self.calls, self.unparsed,
             self._only_violations, dict(self._tests)),
        )  # fmt: skip


def _spilled(
    path: str,
    count: int,
    violations: int,
    calls: int,
    unparsed: int,
    only: bool,
    tests: dict[str, tuple[int, int]],
) -> Spilled:
    return Spilled(
        path,
        count,
        violations=violations,
        calls=calls,
        unparsed=unparsed,
        only_violations=only,
        tests=tests,
    )


#: A run's destinations as kept here: a tuple when few, else on disk.
Kept = Union[tuple[Destination, ...], Spilled]


def record(d: Destination) -> Record:
    """A destination as stored."""
    endpoint = d.endpoint
    return (
        d.test,
        None if endpoint is None else endpoint.family,
        d.raw if endpoint is None else endpoint.address,
        None if endpoint is None else endpoint.port,
        "" if endpoint is None else endpoint.scope_id,
        d.raw,
        d.verdict.rule,
        d.verdict.by,
        d.count,
        d.pids,
        d.programs,
        d.syscalls,
        d.results,
        d.socks,
        d.after_test,
        d.first_time,
        d.names,
        d.where,
        d.resolver,
    )


class _Builder:
    """Destinations from stored records, with one Verdict object per rule and by.

    Destination is a frozen dataclass of 15 fields: its ``__init__`` sets each through
    ``object.__setattr__`` and costs 4.4 us where this costs 1.5 (a report of 250,000
    destinations is read two or three times). The fields are the dataclass's own, in order;
    a test checks that both build equal values.
    """

    def __init__(self) -> None:
        self._verdicts: dict[tuple[str | None, str], Verdict] = {}

    def __call__(self, r: Record) -> Destination:
        (test, family, address, port, scope, raw, rule, by, count, pids, programs, syscalls,
         results, socks, after_test, first_time, names, where, resolver) = r  # fmt: skip
        verdict = self._verdicts.get((rule, by))
        if verdict is None:
            verdict = self._verdicts[(rule, by)] = Verdict(rule, by)
        endpoint = None if family is None else Endpoint(family, address, port, scope)
        d: Destination = object.__new__(Destination)
        d.__dict__.update(
            test=test, endpoint=endpoint, raw=raw, verdict=verdict, count=count, pids=pids,
            programs=programs, syscalls=syscalls, results=results, socks=socks,
            after_test=after_test, first_time=first_time, names=names, where=where,
            resolver=resolver,
        )  # fmt: skip
        return d


def build(r: Record) -> Destination:
    """One destination from its stored record."""
    return _Builder()(r)


def store(records: Iterable[Record], scratch: Scratch, *, small: int | None = None) -> Kept:
    """Records in order as destinations: a tuple when there are at most ``small`` (default:
    SMALL), else a Spilled in ``scratch``."""
    small = SMALL if small is None else small
    rest = iter(records)
    first = list(itertools.islice(rest, small + 1))
    if len(first) <= small:
        builder = _Builder()
        return tuple(builder(r) for r in first)
    path = scratch.new("destinations")
    tests: dict[str, list[int]] = {}
    totals = [0, 0, 0]  # violations, calls, unparsed calls

    def counted(r: Record) -> Record:
        violation = r[_RULE] is None
        counts = tests.get(r[0])
        if counts is None:
            counts = tests[r[0]] = [0, 0]
        counts[0] += 1
        counts[1] += violation
        totals[0] += violation
        totals[1] += r[8]
        if r[1] is None:
            totals[2] += r[8]
        return r

    append(path, map(counted, itertools.chain(first, rest)))
    return Spilled(
        path,
        sum(counts[0] for counts in tests.values()),
        violations=totals[0],
        calls=totals[1],
        unparsed=totals[2],
        scratch=scratch,
        tests={test: (counts[0], counts[1]) for test, counts in tests.items()},
    )


def collect(
    destinations: Iterable[Destination], scratch: Scratch | None = None, *, small: int | None = None
) -> Kept:
    """A stream of destinations kept as a tuple when few (at most ``small``, default: SMALL),
    else on disk (in a new Scratch, unless one is given)."""
    small = SMALL if small is None else small
    rest = iter(destinations)
    first = list(itertools.islice(rest, small + 1))
    if len(first) <= small:
        return tuple(first)
    return store(map(record, itertools.chain(first, rest)), scratch or Scratch(), small=0)


def calls(destinations: Iterable[Destination]) -> tuple[int, int]:
    """How many calls the destinations hold, and how many of those are unparsed lines."""
    if isinstance(destinations, Spilled):
        return destinations.calls, destinations.unparsed
    total = unparsed = 0
    for d in destinations:
        total += d.count
        if d.endpoint is None:
            unparsed += d.count
    return total, unparsed
