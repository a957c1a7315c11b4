"""Hostile and broken input: the parser and the allowlist loader survive anything, and the
parser neither loses nor invents a call; a trace of millions of lines is judged in bounded
memory.

"No call lost or invented", for one line on its own, means:

* lost: a line that still names a sending call (``connect(`` ...) where strace puts one, and
  is not a documented non-event (no address of its own, or a disconnect), yields a NetCall;
* invented: every NetCall with a destination names its syscall in the line, and its address
  and port are there too; a NetCall the parser could not read has no destination and is
  counted as unparsed, so a report shows it and never allows it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from netaudit.allowlist import loads
from netaudit.errors import AllowlistError
from netaudit.model import AF_INET, AF_INET6, DNS_QUERY, NetCall
from netaudit.parse import Parser
from netaudit.rules import ip_of
from tests.unit.test_allowlist import EVERYTHING, keys, values
from tests.unit.test_parse_hypothesis import NET_LINES, NON_EVENT, TOKEN

#: What a byte is replaced with or what is put in: strace's structure, and worse.
BYTES = ['"', "{", "}", "(", ")", ",", " ", "=", "\\", "\0", "\n", "x", "9", "é"]
NAME = re.compile(r"(sendmmsg|sendmsg|sendto|connect)")
ADDRESS = re.compile(r'(?:inet_addr\(|inet_pton\(AF_INET6, )"((?:[^"\\]|\\.)*)"')


def corpus() -> list[str]:
    """One real line per shape (syscall, prefix form, first address family or pointer), from
    every fixture log."""
    shapes: dict[tuple[str, ...], str] = {}
    for line in NET_LINES:
        token = NAME.search(line)
        assert token is not None
        family = re.search(r"AF_[A-Z0-9]+|0x[0-9a-f]+|NULL", line[token.end() :])
        kind = family.group(0) if family else ""
        shape = (token.group(1), re.sub(r"[0-9]+", "0", line[: token.start()]), kind)
        shapes.setdefault(shape, line)
    return sorted(shapes.values())


CORPUS = corpus()


def mutations(line: str) -> Iterator[str]:
    """Every byte deleted, and replaced and preceded by one of BYTES (chosen by position); in
    a line of thousands of bytes (a long sendmmsg), both ends and every 199th byte between."""
    size = len(line)
    positions = [*range(size)]
    if size > 1000:
        positions = [*range(150), *range(150, size - 150, 199), *range(size - 150, size)]
    for i in positions:
        other = BYTES[i % len(BYTES)]
        yield line[:i] + line[i + 1 :]
        yield line[:i] + other + line[i + 1 :]
        yield line[:i] + other + line[i:]


def strings(line: str) -> list[str]:
    """The line's IP addresses, unescaped: strace's escapes, and any other escaped byte as
    itself (strace escapes none but those; the parser reads the rest leniently)."""
    return [decode(match.group(1)) for match in ADDRESS.finditer(line)]


def decode(text: str) -> str:
    named = {"n": 10, "t": 9, "r": 13, "v": 11, "f": 12}

    def one(m: re.Match[bytes]) -> bytes:
        code = m.group(1).decode("latin-1")
        if code[0] == "x" and len(code) == 3:
            return bytes([int(code[1:], 16)])
        if code[0] in "01234567":
            return bytes([int(code, 8) & 0xFF])
        return bytes([named[code]]) if code in named else m.group(1)

    raw = re.sub(
        rb"\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.)",
        one,
        text.encode("utf-8", "surrogateescape"),
        flags=re.S,
    )
    return raw.decode("utf-8", "backslashreplace")


#: A socket's peer as -yy shows it: ``<UDP:[127.0.0.1:39957->127.0.0.1:53]>``.
PEER = re.compile(r"->\[?([0-9A-Fa-f.:]+?)\]?:(\d+)\]>")


def shown(call: NetCall, line: str) -> bool:
    """Whether the line itself names the call's syscall and, for IP, its address and port."""
    assert call.dest is not None
    if call.syscall.value + "(" not in line:
        return False
    dest = call.dest
    if dest.family not in (AF_INET, AF_INET6):
        return dest.family in line or dest.family == "INVALID"
    try:
        wanted = ipaddress.ip_address(dest.address)
    except ValueError:  # kept in its raw form: the line's own text, which no IP rule allows
        return dest.address in line and ip_of(dest) is None
    for peer in PEER.finditer(line):  # -yy: a send on a connected socket goes to its peer
        with contextlib.suppress(ValueError):
            if int(peer.group(2)) == dest.port and ipaddress.ip_address(peer.group(1)) == wanted:
                return True
    if f"htons({dest.port})" not in line:
        return False
    for text in strings(line):
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(text)
            mapped = getattr(address, "ipv4_mapped", None)
            if wanted in (address, mapped):
                return True
    return False


def check_line(line: str) -> None:
    parser = Parser()
    records = list(parser.records([line]))
    # A DNS question is told as a call of its own beside the send that carried it.
    calls = [r for r in records if isinstance(r, NetCall) and not r.raw.startswith(DNS_QUERY)]
    stats = parser.stats
    assert stats.lines == 1
    assert stats.calls == len(calls)
    assert stats.unparsed == sum(call.dest is None for call in calls)
    invented = [call for call in calls if call.dest is not None and not shown(call, line)]
    assert invented == [], line
    if TOKEN.search(line) is not None and NON_EVENT.search(line) is None:
        assert calls, f"a call was lost: {line!r}"


def test_the_corpus_covers_every_sending_call_and_form() -> None:
    names = {NAME.search(line).group(1) for line in CORPUS}  # type: ignore[union-attr]
    assert names == {"connect", "sendto", "sendmsg", "sendmmsg"}
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("line", CORPUS, ids=range(len(CORPUS)))
def test_real_lines_mutated_byte_by_byte_never_raise_lose_or_invent_a_call(line: str) -> None:
    check_line(line)
    for mutated in mutations(line):
        check_line(mutated)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(NET_LINES),
    st.lists(st.tuples(st.integers(0, 2000), st.text(max_size=3)), min_size=1, max_size=4),
)
def test_real_lines_with_random_edits_never_lose_or_invent_a_call(
    line: str, edits: list[tuple[int, str]]
) -> None:
    for at, text in edits:
        at %= len(line) + 1
        line = line[:at] + text + line[at + 1 :]
    check_line(line)


# --- the allowlist loader: AllowlistError with file and line, and nothing else ---------------


def load_error(text: str) -> AllowlistError | None:
    try:
        loads(text, "allow.yaml")
    except AllowlistError as err:
        return err
    return None


def assert_located(text: str) -> None:
    """Loads, or fails with an AllowlistError that names the file and a line of it."""
    err = load_error(text)
    if err is None:
        return
    assert err.path == "allow.yaml"
    if err.message.startswith("the file is empty"):
        return  # no line to name: there is none that holds anything
    assert err.line is not None, err
    assert 1 <= err.line <= text.count("\n") + 2, (err, text)
    assert str(err).startswith(f"allow.yaml:{err.line}: ")


YAML_CHARS = [*"version:1 allowlist-[]{}#&*!|>'\"%@,?\n\t\\AF_INET6.0/x", "\ufeff", "\0"]


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(YAML_CHARS)))
def test_yaml_ish_text_fails_only_with_a_located_allowlist_error(text: str) -> None:
    assert_located(text)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, max_size=4), st.booleans())
def test_wrong_structures_fail_only_with_a_located_allowlist_error(
    data: dict[str, object], flow: bool
) -> None:
    assert_located(yaml.safe_dump(data, default_flow_style=flow))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(EVERYTHING)), st.integers(0, 4), st.sampled_from(YAML_CHARS)),
        min_size=1,
        max_size=6,
    )
)
def test_a_valid_document_mutated_fails_only_with_a_located_allowlist_error(
    edits: list[tuple[int, int, str]],
) -> None:
    text = EVERYTHING
    for at, cut, insert in edits:
        text = text[:at] + insert + text[at + cut :]
    assert_located(text)


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\nallowlist: " + "[" * 5000,
        "version: 1\nallowlist: " + "{a: " * 5000,
        "version: 1\nallowlist:\n" + "".join(" " * n + "- \n" for n in range(0, 6000, 2)),
        "&a [*a, *a]\n",
        "version: 1\nallowlist: &x\n  - *x\n",
        "!!python/object/apply:os.system ['true']\n",
        "version: !!binary aGk=\n",
    ],
    ids=["brackets", "braces", "indentation", "alias", "self-alias", "python-tag", "binary"],
)
def test_hostile_documents_fail_with_a_located_allowlist_error(text: str) -> None:
    assert load_error(text) is not None
    assert_located(text)


# --- a trace of millions of lines, in bounded memory -------------------------------------------

#: Judges a log of N lines made on the fly: 64 processes and a few hundred destinations (memory
#: may grow with those, never with the log), no two lines alike. It prints the peak RSS after
#: a tenth of the log and at the end, and the calls judged. A process of its own: the peak of
#: this test session would hide it.
MILLIONS = r"""
import json, resource, sys
from netaudit.audit import audit_lines
from netaudit.rules import DEFAULT

total = int(sys.argv[1])
peaks = []

def trace():
    yield '5000  1795634279.000000 execve("/usr/bin/python3", ["python3"], 0x7f /* 3 vars */) = 0\n'
    for n in range(1, total):
        if n == total // 10:
            peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        pid, host, fd, port = 5000 + n // 997 % 64, n % 64, 3 + n % 1021, 1024 + n % 7
        if n % 3:
            call = (f"connect({fd}, {{sa_family=AF_INET, sin_port=htons({port}), "
                    f'sin_addr=inet_addr("10.{host}.0.1")}}, 16) = -1 ECONNREFUSED '
                    "(Connection refused)")
        else:
            call = (f'sendto({fd}, "\\x{n % 251:02x}", 1, 0, {{sa_family=AF_INET6, '
                    f"sin6_port=htons(53), sin6_flowinfo=htonl(0), "
                    f'inet_pton(AF_INET6, "2001:db8::{host:x}", &sin6_addr), '
                    "sin6_scope_id=0}, 28) = 1")
        yield f"{pid}  1795634279.{n % 999999:06d} {call}\n"

result = audit_lines(trace(), DEFAULT)
peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
print(json.dumps({"peaks_kib": peaks, "calls": result.stats.calls,
                  "destinations": len(result.destinations)}))
"""


@pytest.mark.slow
def test_a_trace_of_millions_of_lines_is_judged_in_bounded_memory() -> None:
    lines = 2_000_000
    done = subprocess.run(
        [sys.executable, "-c", MILLIONS, str(lines)], capture_output=True, text=True, check=True
    )
    measured = json.loads(done.stdout)
    assert measured["calls"] == lines - 1
    assert measured["destinations"] == 64 * 7 + 64
    early, final = measured["peaks_kib"]
    # Nine tenths of the log later, the peak has not grown: caches are capped, tallies are
    # per destination, and no line is kept.
    assert final < early * 1.1 + 4096, measured
