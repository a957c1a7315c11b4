"""The DNS message decoder: real messages from tests/fixtures/strace/dns.log, built ones, and
properties: whatever the bytes, it never raises and never names what the bytes do not hold."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from netaudit import dns
from netaudit.dns import Answer, Question
from netaudit.model import Resolved
from netaudit.parse import Parser

FAST = settings(max_examples=300, deadline=None)
NAMES = st.lists(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True), min_size=1, max_size=4
).map(".".join)


def encode(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


def query(name: str, qtype: int = 1, ident: int = 0x1234) -> bytes:
    return (
        struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
        + encode(name)
        + struct.pack("!HH", qtype, 1)
    )


def record(owner: bytes, rtype: int, data: bytes) -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, 60, len(data)) + data


def response(name: str, qtype: int, records: list[bytes], rcode: int = 0) -> bytes:
    head = struct.pack("!HHHHHH", 0x1234, 0x8180 | rcode, 1, len(records), 0, 0)
    return head + encode(name) + struct.pack("!HH", qtype, 1) + b"".join(records)


POINTER = b"\xc0\x0c"  # the question's name, at offset 12


def test_a_query_gives_its_questions_in_lower_case() -> None:
    assert dns.questions(query("API.Example.test", 28)) == (Question("api.example.test", "AAAA"),)


def test_a_response_is_not_a_query_and_a_query_not_an_answer() -> None:
    assert dns.questions(response("a.test", 1, [])) == ()
    assert dns.answer(query("a.test")) is None


def test_an_answer_maps_each_address_to_the_name_asked() -> None:
    payload = response(
        "api.example.test",
        1,
        [record(POINTER, 1, bytes([192, 0, 2, 10])), record(POINTER, 28, bytes(15) + b"\x01")],
    )
    assert dns.answer(payload) == Answer(
        Question("api.example.test", "A"),
        (("192.0.2.10", ("api.example.test",)), ("::1", ("api.example.test",))),
    )


def test_a_cname_chain_names_the_address_with_every_alias() -> None:
    target = encode("edge.cdn.test")
    payload = response(
        "www.shop.test",
        1,
        [record(POINTER, 5, target), record(encode("edge.cdn.test"), 1, bytes([192, 0, 2, 30]))],
    )
    answer = dns.answer(payload)
    assert answer is not None
    assert answer.addresses == (("192.0.2.30", ("www.shop.test", "edge.cdn.test")),)


def test_records_for_names_off_the_chain_name_nothing() -> None:
    payload = response("a.test", 1, [record(encode("other.test"), 1, bytes([192, 0, 2, 1]))])
    assert dns.answer(payload) == Answer(Question("a.test", "A"), ())


def test_nxdomain_and_v4_mapped_answers() -> None:
    assert dns.answer(response("nope.test", 1, [], rcode=3)) is None
    mapped = bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 5])
    answer = dns.answer(response("m.test", 28, [record(POINTER, 28, mapped)]))
    assert answer is not None and answer.addresses == (("192.0.2.5", ("m.test",)),)


def test_a_pointer_loop_or_a_name_that_is_not_a_host_name_gives_nothing() -> None:
    looped = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    assert dns.questions(looped) == ()
    assert dns.questions(query("a b.test")) == ()
    assert dns.questions(query("-x.test")) == ()


def test_a_cut_answer_keeps_only_its_whole_records() -> None:
    whole = response(
        "a.test",
        1,
        [record(POINTER, 1, bytes([192, 0, 2, 1])), record(POINTER, 1, bytes([192, 0, 2, 2]))],
    )
    answer = dns.answer(whole[:-1])
    assert answer is not None and answer.addresses == (("192.0.2.1", ("a.test",)),)


def test_is_name() -> None:
    assert dns.is_name("api.example.test") and dns.is_name("_srv.x")
    assert not any(dns.is_name(t) for t in ("", "A.test", "a..test", "a.test.", "é.test", "a" * 64))


@FAST
@given(st.binary(max_size=600))
def test_any_bytes_never_raise(payload: bytes) -> None:
    dns.questions(payload)
    dns.answer(payload)


@FAST
@given(NAMES, st.lists(st.ip_addresses(v=4), max_size=4), st.integers(0, 200))
def test_a_cut_message_never_invents_a_name_or_address(
    name: str, ips: list[ipaddress.IPv4Address], cut: int
) -> None:
    records = [record(POINTER, 1, ip.packed) for ip in ips]
    whole = response(name, 1, records)
    part = whole[: len(whole) - cut]
    answer = dns.answer(part)
    if answer is not None:
        assert answer.question.name == name
        assert {a for a, _ in answer.addresses} <= {str(ip) for ip in ips}
        assert all(names == (name,) for _, names in answer.addresses)
    for question in dns.questions(query(name)[: max(0, len(query(name)) - cut)]):
        assert question.name == name


@FAST
@given(NAMES, st.binary(max_size=40), st.integers(0, 60))
def test_garbage_after_a_question_never_adds_a_name(name: str, junk: bytes, at: int) -> None:
    payload = bytearray(response(name, 1, []) + junk)
    payload[6:8] = b"\x00\x05"  # five answers claimed, only junk follows
    answer = dns.answer(bytes(payload))
    if answer is not None:
        assert answer.question.name == name
        assert all(names[0] == name for _, names in answer.addresses)


@FAST
@given(NAMES, st.integers(1, 0xFFFF))
def test_a_built_query_reads_back(name: str, qtype: int) -> None:
    assert dns.questions(query(name, qtype)) == (Question(name, dns.type_name(qtype)),)


def strace_string(payload: bytes, limit: int = 512) -> str:
    """``payload`` quoted as strace -x -s LIMIT prints it: all hex once any byte is not
    printable, and ``"..."...`` when cut."""
    shown = payload[:limit]
    if all(32 <= b < 127 for b in shown):
        body = shown.decode().replace("\\", "\\\\").replace('"', '\\"')
    else:
        body = "".join(f"\\x{b:02x}" for b in shown)
    return f'"{body}"' + ("..." if len(payload) > limit else "")


def answers_of(payload: bytes, limit: int = 512) -> list[Resolved]:
    line = (
        "7 1.5 recvfrom(3<UDP:[127.0.0.1:4000->127.0.0.1:53]>, "
        f"{strace_string(payload, limit)}, 2048, 0, {{sa_family=AF_INET, sin_port=htons(53), "
        f'sin_addr=inet_addr("127.0.0.1")}}, [28 => 16]) = {len(payload)}\n'
    )
    return [r for r in Parser().records([line]) if isinstance(r, Resolved)]


@FAST
@given(st.binary(max_size=300), st.integers(1, 300))
def test_a_received_buffer_of_any_bytes_never_raises_nor_names_what_it_lacks(
    payload: bytes, limit: int
) -> None:
    for resolved in answers_of(payload, limit):
        for _, names in resolved.addresses:
            for name in names:
                assert all(label.encode() in payload.lower() for label in name.split("."))


@FAST
@given(NAMES, st.lists(st.ip_addresses(v=4), min_size=1, max_size=3), st.integers(12, 120))
def test_an_answer_cut_by_strace_keeps_its_whole_records(
    name: str, ips: list[ipaddress.IPv4Address], limit: int
) -> None:
    payload = response(name, 1, [record(POINTER, 1, ip.packed) for ip in ips])
    got = {a for r in answers_of(payload, limit) for a, _ in r.addresses}
    whole = [ip for n, ip in enumerate(ips) if len(payload) - 16 * (len(ips) - n - 1) <= limit]
    assert got == {str(ip) for ip in whole}
