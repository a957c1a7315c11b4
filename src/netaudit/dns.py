"""DNS messages as the traced programs sent and received them (RFC 1035, section 4).

Only what the audit needs: the questions of a query, and the addresses an answer gives for
each name. The payloads come from strace's printout, which can be cut short (``-s``) or be
anything at all a program sent to port 53, so nothing here raises, and a record is used only
when it is whole: a cut or malformed message yields fewer names, never a made-up one.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

__all__ = ["Answer", "Question", "answer", "is_name", "questions"]

#: Record types by number, for reports; others show as ``TYPE<n>`` (RFC 3597).
TYPES = {1: "A", 2: "NS", 5: "CNAME", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV",
         64: "SVCB", 65: "HTTPS", 255: "ANY"}  # fmt: skip
_A, _CNAME, _AAAA = 1, 5, 28
_HEADER = 12
_MAX_POINTERS = 32
#: A label as host names use it; anything else is not taken for a name.
_LABEL = re.compile(rb"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?|[A-Za-z0-9_]")


class Question(NamedTuple):
    name: str
    qtype: str


class Answer(NamedTuple):
    """What one response said: the question and, per address, the names that led to it."""

    question: Question
    addresses: tuple[tuple[str, tuple[str, ...]], ...]


def type_name(number: int) -> str:
    return TYPES.get(number, f"TYPE{number}")


def questions(payload: bytes) -> tuple[Question, ...]:
    """The questions of a query (QR bit clear); () for anything else."""
    if len(payload) < _HEADER or payload[2] & 0x80:
        return ()
    count = int.from_bytes(payload[4:6], "big")
    found: list[Question] = []
    at = _HEADER
    for _ in range(min(count, 16)):
        read = _name(payload, at)
        if read is None or read[1] + 4 > len(payload):
            break
        name, at = read
        found.append(Question(name, type_name(int.from_bytes(payload[at : at + 2], "big"))))
        at += 4
    return tuple(found)


def answer(payload: bytes) -> Answer | None:
    """The addresses (A and AAAA) a successful response gives, with the names leading to them.

    A CNAME chain is followed from the question's name: an address is listed with the
    question's name and each alias on the way. None for anything but a response with a
    whole question.
    """
    if len(payload) < _HEADER or not payload[2] & 0x80 or payload[3] & 0x0F:
        return None
    qdcount = int.from_bytes(payload[4:6], "big")
    ancount = int.from_bytes(payload[6:8], "big")
    if qdcount != 1:
        return None
    read = _name(payload, _HEADER)
    if read is None or read[1] + 4 > len(payload):
        return None
    qname, at = read
    question = Question(qname, type_name(int.from_bytes(payload[at : at + 2], "big")))
    at += 4
    aliases: dict[str, str] = {}
    records: list[tuple[str, str]] = []
    for _ in range(ancount):
        read = _name(payload, at)
        if read is None or read[1] + 10 > len(payload):
            break
        owner, at = read
        rtype = int.from_bytes(payload[at : at + 2], "big")
        length = int.from_bytes(payload[at + 8 : at + 10], "big")
        at += 10
        if at + length > len(payload):
            break
        data = payload[at : at + length]
        if rtype == _CNAME:
            target = _name(payload, at)
            if target is not None and target[1] == at + length:
                aliases.setdefault(owner, target[0])
        elif rtype == _A and length == 4:
            records.append((owner, str(ipaddress.IPv4Address(data))))
        elif rtype == _AAAA and length == 16:
            ip6 = ipaddress.IPv6Address(data)
            mapped = ip6.ipv4_mapped
            records.append((owner, str(mapped if mapped is not None else ip6)))
        at += length
    chain = [qname]
    while chain[-1] in aliases and aliases[chain[-1]] not in chain and len(chain) < 16:
        chain.append(aliases[chain[-1]])
    by_address: dict[str, tuple[str, ...]] = {}
    for owner, address in records:
        if owner in chain:  # only the question's chain: extra records name nothing we asked
            by_address.setdefault(address, tuple(chain[: chain.index(owner) + 1]))
    return Answer(question, tuple(by_address.items()))


def _name(payload: bytes, at: int) -> tuple[str, int] | None:
    """The name at ``at`` (lower case, no trailing dot) and where the data after it starts."""
    labels: list[str] = []
    end: int | None = None
    jumps = 0
    size = 0
    while True:
        if at >= len(payload):
            return None
        length = payload[at]
        if length & 0xC0 == 0xC0:
            if at + 1 >= len(payload) or jumps >= _MAX_POINTERS:
                return None
            if end is None:
                end = at + 2
            at = ((length & 0x3F) << 8) | payload[at + 1]
            jumps += 1
            continue
        if length & 0xC0:
            return None
        if length == 0:
            break
        label = payload[at + 1 : at + 1 + length]
        if len(label) != length or not _LABEL.fullmatch(label):
            return None
        size += length + 1
        if size > 254:
            return None
        labels.append(label.decode("ascii").lower())
        at += 1 + length
    if not labels:
        return None
    return ".".join(labels), end if end is not None else at + 1


def is_name(text: str) -> bool:
    """Whether ``text`` reads as a host name as this module returns them."""
    if not text or len(text) > 253 or not text.isascii() or text != text.lower():
        return False
    return all(_LABEL.fullmatch(label.encode()) for label in text.split("."))
