"""Bounded memory: grouping that spills to a private directory, destinations kept on disk."""

from __future__ import annotations

import gc
import os
import pickle
import stat
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from netaudit import spill
from netaudit.model import Destination, Endpoint, Verdict
from netaudit.spill import Grouping, Scratch, Spilled, collect, record, store

# -- Grouping --------------------------------------------------------------------------------


def add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """(first seen, total): the value of a key in these tests."""
    return min(a[0], b[0]), a[1] + b[1]


def first(item: tuple[object, tuple[int, int]]) -> int:
    return item[1][0]


def expected(
    records: list[tuple[tuple[int, int], int]],
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    table: dict[tuple[int, int], tuple[int, int]] = {}
    for seen, (key, n) in enumerate(records):
        table[key] = add(table[key], (seen, n)) if key in table else (seen, n)
    return list(table.items())  # first-seen order


KEYS = st.tuples(st.integers(0, 3), st.integers(0, 40))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(KEYS, st.integers(1, 5)), max_size=300), st.integers(1, 8))
def test_a_grouping_that_spills_groups_as_one_that_does_not(
    records: list[tuple[tuple[int, int], int]], limit: int
) -> None:
    scratch = Scratch()
    grouping: Grouping[tuple[int, int], tuple[int, int]] = Grouping(
        add, scratch, lambda key: key[1], limit=limit
    )
    for seen, (key, n) in enumerate(records):
        grouping.add(key, (seen, n))
    assert list(grouping.grouped(first)) == expected(records)
    assert list(grouping.grouped(first)) == expected(records)  # read again, the same
    scratch.close()


def test_a_partition_too_big_for_memory_is_split_again() -> None:
    scratch = Scratch()
    grouping: Grouping[int, tuple[int, int]] = Grouping(add, scratch, limit=4)
    records = [(key % 500, 1) for key in range(2000)]
    for seen, (key, n) in enumerate(records):
        grouping.add(key, (seen, n))
    assert grouping.spilled
    grouped = list(grouping.grouped(lambda item: item[1][0]))
    assert grouped == [(key, (key, 4)) for key in range(500)]
    scratch.close()


RENAMED = {"b": "a"}


def test_grouped_keeps_and_renames_keys_and_combines_what_falls_together() -> None:
    for limit in (2, 100):
        scratch = Scratch()
        grouping: Grouping[tuple[str, int], tuple[int, int]] = Grouping(
            add, scratch, lambda key: key[1], limit=limit
        )
        for seen, key in enumerate([("a", 1), ("b", 1), ("c", 2), ("x", 1), ("a", 2)]):
            grouping.add(key, (seen, 1))
        grouped = grouping.grouped(
            first,
            keep=lambda key: key[0] != "x",
            rename=lambda key: (RENAMED.get(key[0], key[0]), key[1]),
        )
        assert list(grouped) == [(("a", 1), (0, 2)), (("c", 2), (2, 1)), (("a", 2), (4, 1))]
        scratch.close()


# -- Scratch -------------------------------------------------------------------------------


def test_a_scratch_directory_is_private_and_made_only_when_needed(tmp_path: Path) -> None:
    scratch = Scratch()
    path = Path(scratch.new("x"))
    folder = path.parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    path.write_bytes(b"spilled")
    scratch.close()
    assert not folder.exists()


def test_a_scratch_directory_goes_when_nothing_holds_it_any_more() -> None:
    scratch = Scratch()
    folder = Path(scratch.new("x")).parent
    assert folder.is_dir()
    del scratch
    gc.collect()
    assert not folder.exists()


# -- Destinations kept on disk ------------------------------------------------------------

ENDPOINTS = st.one_of(
    st.none(),
    st.builds(
        Endpoint,
        st.sampled_from(["AF_INET", "AF_INET6", "AF_UNIX"]),
        st.text(max_size=20),
        st.one_of(st.none(), st.integers(0, 65535)),
        st.sampled_from(["", "lo", "7"]),
    ),
)
TEXTS = st.tuples() | st.lists(st.text(max_size=8), max_size=3).map(lambda x: tuple(sorted(x)))
DESTINATIONS = st.builds(
    Destination,
    test=st.sampled_from(["", "t.py::a", "<session>"]),
    endpoint=ENDPOINTS,
    raw=st.text(max_size=20),
    verdict=st.builds(
        Verdict,
        st.sampled_from([None, "loopback (IPv4)", "pg"]),
        st.sampled_from(["", "builtin", "allowlist"]),
    ),
    count=st.integers(1, 10**9),
    pids=st.lists(st.integers(1, 4 * 10**6), max_size=3).map(lambda x: tuple(sorted(x))),
    programs=TEXTS,
    syscalls=TEXTS,
    results=st.lists(st.tuples(st.text(max_size=8), st.integers(1, 99)), max_size=2).map(tuple),
    socks=TEXTS,
    after_test=st.booleans(),
    first_time=st.one_of(st.none(), st.floats(allow_nan=False)),
    names=TEXTS,
    where=TEXTS,
    resolver=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(DESTINATIONS)
def test_a_destination_comes_back_from_disk_equal(d: Destination) -> None:
    (back,) = store([record(d)], Scratch())
    assert back == d
    assert hash(back.endpoint) == hash(d.endpoint)
    assert spill.build(record(d)) == d


def many(n: int, test: str = "t.py::a") -> list[Destination]:
    return [
        Destination(test, Endpoint("AF_INET", f"10.0.{i // 256}.{i % 256}", 443),
                    "", Verdict("pg" if i % 3 == 0 else None), 1, (7,), ("curl",),
                    ("connect",), (("ENETUNREACH", 1),))
        for i in range(n)
    ]  # fmt: skip


def test_few_destinations_stay_a_tuple_and_more_go_to_disk() -> None:
    assert store(map(record, many(3)), Scratch(), small=3) == tuple(many(3))
    kept = store(map(record, many(4)), Scratch(), small=3)
    assert isinstance(kept, Spilled)
    assert list(kept) == many(4)
    assert list(kept) == many(4)  # each pass reads the file again
    assert len(kept) == 4
    assert list(kept.violations()) == [d for d in many(4) if not d.verdict.allowed]
    assert len(kept.violations()) == 2
    assert (kept.calls, kept.unparsed) == (4, 0)


def test_a_spilled_run_counts_what_each_test_has() -> None:
    destinations = many(3, "t.py::a") + many(2, "t.py::b")
    kept = store(map(record, destinations), Scratch(), small=1)
    assert isinstance(kept, Spilled)
    assert kept.per_test() == {"t.py::a": 3, "t.py::b": 2}
    assert kept.violations().per_test() == {"t.py::a": 2, "t.py::b": 1}


def test_collect_keeps_a_stream_on_disk_only_beyond_small() -> None:
    assert collect(iter(many(5)), small=5) == tuple(many(5))
    kept = collect(iter(many(6)), small=5)
    assert isinstance(kept, Spilled)
    assert list(kept) == many(6)


def test_a_spilled_copy_in_another_process_reads_the_owners_file() -> None:
    scratch = Scratch()
    kept = store(map(record, many(5)), scratch, small=1)
    assert isinstance(kept, Spilled)
    copy = pickle.loads(pickle.dumps(kept))
    assert list(copy) == many(5)
    assert (len(copy), len(copy.violations())) == (5, 3)
    assert copy.per_test() == kept.per_test()
    assert len(pickle.dumps(kept)) < 1000  # its path and counts, not its destinations
    path = kept.path
    del kept, copy
    gc.collect()
    assert os.path.exists(path)  # the owner's Scratch still holds it
    scratch.close()
    assert not os.path.exists(path)
