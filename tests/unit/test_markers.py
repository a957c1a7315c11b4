"""In-band marker addresses: what a test session writes into the trace, and what reads it back."""

from __future__ import annotations

import errno
import re
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netaudit import markers
from netaudit.markers import MarkVerb

RUN = "0123456789abcdef"
RUNS = st.text("0123456789abcdef", min_size=8, max_size=32)
SAFE_WORKERS = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1, max_size=32
)
INDEXES = st.integers(0, 999_999_999)
#: sun_path holds 108 bytes; an abstract name spends the first on its leading NUL.
SUN_PATH = 108


def name_of(address: bytes) -> str:
    """The abstract name as the parser sees it: without the leading NUL (strace's ``@``)."""
    assert address[:1] == b"\0"
    return address[1:].decode("ascii")


@given(RUNS, st.sampled_from(list(MarkVerb)), INDEXES)
def test_every_verb_round_trips_without_a_worker(run: str, verb: MarkVerb, test: int) -> None:
    parsed = markers.parse(name_of(markers.address(run, verb, test)))
    assert parsed == (run, "", verb, test if verb is MarkVerb.BEGIN else -1)


@given(RUNS, st.sampled_from(list(MarkVerb)), INDEXES, SAFE_WORKERS)
def test_every_verb_round_trips_with_a_worker(
    run: str, verb: MarkVerb, test: int, worker: str
) -> None:
    parsed = markers.parse(name_of(markers.address(run, verb, test, worker)))
    assert parsed == (run, worker, verb, test if verb is MarkVerb.BEGIN else -1)


@given(RUNS, st.sampled_from(list(MarkVerb)), INDEXES, st.text(min_size=1, max_size=80))
def test_any_worker_name_round_trips_as_its_safe_form(
    run: str, verb: MarkVerb, test: int, worker: str
) -> None:
    parsed = markers.parse(name_of(markers.address(run, verb, test, worker)))
    assert parsed is not None
    assert parsed[1] == markers.safe_worker(worker) != ""


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (f"netaudit:{RUN}:s", (RUN, "", MarkVerb.START, -1)),
        (f"netaudit:{RUN}:b:0", (RUN, "", MarkVerb.BEGIN, 0)),
        (f"netaudit:{RUN}.gw3:b:12", (RUN, "gw3", MarkVerb.BEGIN, 12)),
        (f"netaudit:{RUN}.gw3:e", (RUN, "gw3", MarkVerb.END, -1)),
        (f"netaudit:{RUN}:f", (RUN, "", MarkVerb.FINISH, -1)),
        (f"netaudit:{'ab' * 16}:x", ("ab" * 16, "", MarkVerb.CONTROL, -1)),
    ],
)
def test_the_documented_form_parses(name: str, expected: tuple[str, str, MarkVerb, int]) -> None:
    assert markers.parse(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "netaudit:zz:b:1",  # not hex
        f"netaudit:{RUN.upper()}:s",  # hex, but not as the run ids are written
        "netaudit:0123456:s",  # 7 hex digits: too short for a run id
        f"netaudit:{'a' * 33}:s",  # 33: too long
        f"netaudit:{RUN}:b",  # BEGIN without its test
        f"netaudit:{RUN}:b:",
        f"netaudit:{RUN}:b:-1",
        f"netaudit:{RUN}:s:1",  # a test on a verb that has none
        f"netaudit:{RUN}:e:0",
        f"netaudit:{RUN}:f:3",
        f"netaudit:{RUN}:x:3",
        f"netaudit:{RUN}:b:1234567890",  # ten digits
        f"netaudit:{RUN}.{'w' * 33}:s",  # worker too long
        f"netaudit:{RUN}.:s",  # empty worker
        f"netaudit:{RUN}.gw/0:s",  # a worker character safe_worker never leaves
        f"netaudit:{RUN}:q",  # unknown verb
        f"netaudit:{RUN}:start",
        f"netaudit:{RUN}:s ",  # extra text
        f"netaudit:{RUN}:s\n",
        f"netaudit:{RUN}:b:1:2",
        f"netaudit:{RUN}:s\0",
        f"xnetaudit:{RUN}:s",
        f"@netaudit:{RUN}:s",  # with strace's @: parse takes the name without it
        f"netaudit:{RUN}",
        "netaudit:begin:t.py::x[a b]",  # the older form, still in some fixture logs
        "",
    ],
)
def test_look_alikes_do_not_parse(name: str) -> None:
    assert markers.parse(name) is None


@given(RUNS, st.sampled_from(list(MarkVerb)), INDEXES, SAFE_WORKERS, st.text(min_size=1))
def test_any_text_after_a_marker_makes_it_a_look_alike(
    run: str, verb: MarkVerb, test: int, worker: str, extra: str
) -> None:
    name = name_of(markers.address(run, verb, test, worker))
    # A digit after BEGIN's index would only make another index, still a marker.
    if not (
        verb is MarkVerb.BEGIN
        and extra.isascii()
        and extra.isdigit()
        and len(str(test) + extra) <= 9
    ):
        assert markers.parse(name + extra) is None


@pytest.mark.parametrize(
    ("worker", "safe"),
    [
        ("gw0", "gw0"),
        ("gw-1_a", "gw-1_a"),
        ("gw 0", "gw_0"),
        ("a:b.c/d", "a_b_c_d"),  # ":" and "." would break the address apart
        ("é\u00e9x", "__x"),
        ("w" * 40, "w" * 32),
        ("", ""),
    ],
)
def test_safe_worker_replaces_what_an_address_cannot_hold(worker: str, safe: str) -> None:
    assert markers.safe_worker(worker) == safe


@given(st.text(max_size=80))
def test_safe_worker_is_idempotent_and_fits_the_address_grammar(worker: str) -> None:
    safe = markers.safe_worker(worker)
    assert re.fullmatch(r"[A-Za-z0-9_-]{0,32}", safe)
    assert markers.safe_worker(safe) == safe
    assert len(safe) == min(len(worker), 32)


def test_the_longest_address_fits_in_sun_path_and_still_parses() -> None:
    longest = markers.address("f" * 32, MarkVerb.BEGIN, 999_999_999, "w" * 32)
    assert len(longest) <= SUN_PATH - 1
    assert markers.parse(name_of(longest)) == ("f" * 32, "w" * 32, MarkVerb.BEGIN, 999_999_999)
    # Even a worker name far too long is cut to fit.
    assert markers.address("f" * 32, MarkVerb.BEGIN, 999_999_999, "w" * 500) == longest


def test_the_kernel_takes_the_longest_address_and_refuses_it_as_nobody_listens() -> None:
    longest = markers.address("f" * 32, MarkVerb.BEGIN, 999_999_999, "w" * 32)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        assert sock.connect_ex(longest) == errno.ECONNREFUSED  # not EINVAL: it fits


def test_an_address_is_an_abstract_name_under_the_prefix() -> None:
    assert markers.address(RUN, MarkVerb.START) == b"\0netaudit:" + RUN.encode() + b":s"
    assert markers.address(RUN, MarkVerb.BEGIN, 7, "gw2") == b"\0netaudit:" + RUN.encode() + (
        b".gw2:b:7"
    )
    assert markers.address(RUN, MarkVerb.END, 7) == b"\0netaudit:" + RUN.encode() + b":e"


def test_new_run_ids_are_random_and_valid_in_an_address() -> None:
    ids = {markers.new_run_id() for _ in range(50)}
    assert len(ids) == 50
    for run in ids:
        assert markers.parse(name_of(markers.address(run, MarkVerb.START))) == (
            run,
            "",
            MarkVerb.START,
            -1,
        )


def test_test_keys_name_the_worker_and_the_index() -> None:
    assert markers.test_key("", 0) == ":0"
    assert markers.test_key("gw1", 12) == "gw1:12"
    assert markers.test_key("gw1", 1) != markers.test_key("gw11", 1)
