"""The strace log parser, on logs captured from real strace 6.1 runs and on literal lines.

The logs in tests/fixtures/strace come from capture.sh there. The pids and line numbers below
are those of the committed run: after regenerating the logs, update them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netaudit import parse as parse_module
from netaudit.model import (
    AF_INET,
    AF_INET6,
    AF_NETLINK,
    AF_PACKET,
    AF_UNIX,
    AF_UNSPEC,
    Endpoint,
    Exec,
    Hazard,
    HazardKind,
    Mark,
    MarkVerb,
    NetCall,
    Record,
    Spawn,
    Started,
    Syscall,
    TraceStats,
)
from netaudit.parse import INVALID, UNSEEN, Parser
from netaudit.parse import parse as parse_all

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "strace"
CONNECT, SENDTO, SENDMSG, SENDMMSG = (
    Syscall.CONNECT,
    Syscall.SENDTO,
    Syscall.SENDMSG,
    Syscall.SENDMMSG,
)
PY = "/root/.pyenv/versions/3.11.7/bin/python3"
PY_CUT = "/root/.pyenv/versions/3.11.7/bin"  # argv strings are cut to strace's -s 32


def parse(lines: Iterable[str]) -> list[Record]:
    """The records, without the Started hints that only attribution reads (tested below)."""
    return [r for r in parse_all(lines) if not isinstance(r, Started)]


def lines_of(name: str) -> list[str]:
    with open(FIXTURES / f"{name}.log", encoding="utf-8", errors="surrogateescape") as log:
        return log.readlines()


def read(name: str) -> list[Record]:
    return list(parse(lines_of(name)))


def net(records: Iterable[Record]) -> list[NetCall]:
    return [r for r in records if isinstance(r, NetCall)]


def v4(ip: str, port: int) -> Endpoint:
    return Endpoint(AF_INET, ip, port)


def v6(ip: str, port: int, scope: str = "") -> Endpoint:
    return Endpoint(AF_INET6, ip, port, scope)


def unix(path: str) -> Endpoint:
    return Endpoint(AF_UNIX, path)


def sa_data(family: str, data: str, shown: str = "") -> Endpoint:
    """A sockaddr strace could not decode further, kept as printed."""
    return Endpoint(family, f'sa_family={shown or family}, sa_data="{data}"')


def one(line: str) -> list[Record]:
    return list(parse([line]))


ZEROS = "\\0" * 14
PACKET = (
    "sa_family=AF_PACKET, sll_protocol=htons(ETH_P_802_EX1), sll_ifindex=if_nametoindex({lo}),"
    " sll_hatype=ARPHRD_NETROM, sll_pkttype=PACKET_HOST, sll_halen=6,"
    " sll_addr=[00, 00, 00, 00, 00, 00]"
)

# (line, syscall, fd, destination, result) for every call of addrs.c, in log order.
ADDRS: list[tuple[int, Syscall, int, Endpoint, str]] = [
    (3, CONNECT, 6, v4("127.0.0.1", 5555), "0"),
    (4, CONNECT, 7, v4("93.184.216.34", 443), "ENETUNREACH"),
    (5, CONNECT, 8, v4("127.0.0.1", 5555), "EINPROGRESS"),
    (6, CONNECT, 9, v4("198.51.100.7", 80), "ENETUNREACH"),
    (7, CONNECT, 11, v4("0.0.0.0", 5556), "ECONNREFUSED"),
    (8, CONNECT, 9999, v4("127.0.0.1", 5555), "EBADF"),
    (9, CONNECT, 12, v6("::1", 5557), "ECONNREFUSED"),
    (10, CONNECT, 13, v4("127.0.0.1", 5555), "0"),  # printed as ::ffff:127.0.0.1
    (11, CONNECT, 14, v6("fe80::1", 53, "lo"), "ENETUNREACH"),
    (12, SENDTO, 15, v6("fe80::1", 5353, "99"), "ENETUNREACH"),
    (13, CONNECT, 16, v6("2001:db8::1", 443), "ENETUNREACH"),  # addrlen 24: no scope id
    (14, SENDTO, 17, v6("ff02::fb", 5353), "ENETUNREACH"),
    (15, CONNECT, 18, v4("127.0.0.1", 5558), "0"),
    (17, SENDTO, 19, v4("127.0.0.1", 5558), "5"),
    (18, SENDTO, 19, v4("127.0.0.1", 5558), "111"),  # a payload full of braces and quotes
    (19, SENDTO, 19, v4("203.0.113.5", 53), "ENETUNREACH"),
    (20, SENDMSG, 19, v4("127.0.0.1", 5558), "3"),
    (21, SENDMSG, 19, v4("192.0.2.1", 123), "ENETUNREACH"),
    (24, SENDMMSG, 20, v6("::1", 5559), "2"),  # two messages, one destination
    (25, SENDMMSG, 20, v6("::1", 5559), "1"),  # three messages, two destinations
    (25, SENDMMSG, 20, v6("2001:db8::53", 53), "1"),
    (28, SENDTO, 21, v4("127.0.0.1", 5555), "18"),  # TCP Fast Open
    (29, CONNECT, 22, unix("nonexistent.sock"), "ENOENT"),
    (30, CONNECT, 22, unix('odd "q"\n\x01é}.sock'), "ENOENT"),
    (31, CONNECT, 22, unix("p" * 90), "ENOENT"),
    (32, CONNECT, 22, unix("@myabstract"), "ECONNREFUSED"),
    (33, CONNECT, 22, unix("@netaudit:begin:t.py::x[a b]"), "ECONNREFUSED"),
    (34, CONNECT, 22, unix(""), "EINVAL"),
    (35, SENDTO, 23, unix("/dev/log"), "ENOENT"),
    (36, SENDTO, 24, Endpoint(AF_NETLINK, "pid=0"), "32"),
    (37, CONNECT, 24, Endpoint(AF_NETLINK, "pid=0"), "0"),
    (38, SENDTO, 25, Endpoint(AF_PACKET, PACKET.format(lo='"lo"')), "3"),
    (39, CONNECT, 26, Endpoint(INVALID, "NULL"), "EFAULT"),
    (40, CONNECT, 26, Endpoint(INVALID, "0xdeadbeef"), "EFAULT"),
    (41, CONNECT, 26, sa_data(AF_INET, "\\25"), "EINVAL"),  # addrlen 3: too short for AF_INET
    (42, CONNECT, 26, sa_data("0x63", ZEROS, "0x63 /* AF_??? */"), "EAFNOSUPPORT"),
    (43, CONNECT, 26, sa_data("AF_BLUETOOTH", ZEROS), "EAFNOSUPPORT"),
    (44, SENDTO, 27, Endpoint(INVALID, "0xdeadbeef"), "EFAULT"),
    (46, SENDMSG, 27, Endpoint(INVALID, "0xdeadbeef"), "EFAULT"),
    (47, SENDTO, 27, sa_data(AF_UNSPEC, "\\25\\266\\177\\0\\0\\1" + "\\0" * 8), "6"),
]  # fmt: skip

#: With -x, the forms kept as printed (raw sa_data) show hex escapes instead of octal ones.
X00 = "\\x00" * 14
HEXED = {
    41: sa_data(AF_INET, "\\x15"),
    42: sa_data("0x63", X00, "0x63 /* AF_??? */"),
    43: sa_data("AF_BLUETOOTH", X00),
    47: sa_data(AF_UNSPEC, "\\x15\\xb6\\x7f\\x00\\x00\\x01" + "\\x00" * 8),
}

#: Lines of addrs.log that send without an address of their own, or disconnect.
ADDRS_NON_EVENTS = {
    16: 'sendto(18, "conn", 4, 0, NULL, 0)',
    22: "sendmsg(18, {msg_name=NULL, msg_namelen=0,",
    23: "sendmsg(18, {msg_name=0x",  # a name with msg_namelen=0, which the kernel ignores
    26: "sendmmsg(18, [{msg_hdr={msg_name=NULL,",
    27: "connect(18, {sa_family=AF_UNSPEC,",
    45: 'sendto(27, "zero", 4, 0, 0x',  # an address with length 0, which the kernel ignores
}

ADDRS_PIDS = {
    "addrs": 12955,
    "addrs_t": 12963,
    "addrs_ttT": 12971,
    "addrs_y": 12979,
    "addrs_yy": 12987,
    "addrs_x": 12995,
    "addrs_xx": 13003,
    "addrs_network": 13018,
    "addrs_nof": 0,  # no -f: no pid on any line
    "addrs_ff": 0,  # -ff: one file per task, no pid
    "addrs_stderr": 0,  # stderr with a single task: no pid
}


def projection(
    records: Iterable[Record],
) -> list[tuple[int, Syscall, int | None, Endpoint | None, str]]:
    return [(c.line, c.syscall, c.fd, c.dest, c.result) for c in net(records)]  # fmt: skip


@pytest.mark.parametrize(
    "name", ["addrs", "addrs_t", "addrs_ttT", "addrs_y", "addrs_nof", "addrs_ff"]
)
def test_every_address_family_is_decoded_under_each_output_option(name: str) -> None:
    assert projection(read(name)) == ADDRS


#: Sends on a connected UDP socket, whose peer only -yy shows (fd 18 is connected to :5558).
YY_PEER_SENDS = {16: Syscall.SENDTO, 22: Syscall.SENDMSG, 23: Syscall.SENDMSG, 26: Syscall.SENDMMSG}


def test_yy_adds_each_send_to_a_connected_udp_peer() -> None:
    peer = Endpoint(AF_INET, "127.0.0.1", 5558)
    sends = [
        (n, s, 18, peer, r) for n, s, fd, d, r in projection(read("addrs_yy")) if n in YY_PEER_SENDS
    ]
    assert [(n, s) for n, s, *_ in sends] == sorted(YY_PEER_SENDS.items())
    rest = [c for c in projection(read("addrs_yy")) if c[0] not in YY_PEER_SENDS]
    assert rest == ADDRS
    assert all(c in projection(read("addrs_yy")) for c in sends)


def test_stderr_log_without_pids_gives_the_same_calls() -> None:
    records = read("addrs_stderr")
    assert projection(records) == ADDRS
    assert lines_of("addrs_stderr")[-1] == "+++ exited with 0 +++\n"


@pytest.mark.parametrize("name", ["addrs_x", "addrs_xx"])
def test_hex_escaped_strings_decode_to_the_same_destinations(name: str) -> None:
    hexed = dict(HEXED)
    if name == "addrs_xx":  # -xx escapes every string, even the interface name
        hexed[38] = Endpoint(AF_PACKET, PACKET.format(lo='"\\x6c\\x6f"'))
    expected = [(n, s, fd, hexed.get(n, dest), r) for n, s, fd, dest, r in ADDRS]
    assert 'inet_addr("\\x31\\x32\\x37' in "".join(lines_of("addrs_xx"))
    assert projection(read(name)) == expected


def test_trace_network_group_yields_only_the_sending_calls() -> None:
    records = read("addrs_network")
    assert [(s, fd, d, r) for _, s, fd, d, r in projection(records)] == [
        (s, fd, d, r) for _, s, fd, d, r in ADDRS
    ]
    assert len(records) == 1 + len(ADDRS)  # socket, bind, listen and setsockopt yield nothing
    assert sum(" bind(" in line for line in lines_of("addrs_network")) == 3


def test_sends_without_their_own_address_and_disconnects_are_not_events() -> None:
    lines = lines_of("addrs")
    for n, text in ADDRS_NON_EVENTS.items():
        assert text in lines[n - 1]
    assert not {r.line for r in read("addrs")} & ADDRS_NON_EVENTS.keys()


def test_exec_of_the_traced_program_comes_first() -> None:
    assert read("addrs")[0] == Exec(12955, "./addrs", ("./addrs", "5555"), None, 1)


@pytest.mark.parametrize("name", sorted(ADDRS_PIDS))
def test_tid_comes_from_the_pid_prefix_or_is_zero_without_one(name: str) -> None:
    assert {r.tid for r in net(read(name))} == {ADDRS_PIDS[name]}


@pytest.mark.parametrize("name", ["addrs", "addrs_t", "addrs_ttT", "addrs_ff"])
def test_time_of_day_stamps_are_never_turned_into_a_time(name: str) -> None:
    assert {r.time for r in net(read(name))} == {None}


def test_epoch_stamps_become_the_time() -> None:
    lines = lines_of("addrs_yy")
    for call in net(read("addrs_yy")):
        assert call.time == float(lines[call.line - 1].split()[1])


def test_y_gives_the_socket_type_before_the_inode() -> None:
    socks = {c.fd: c.sock for c in net(read("addrs_y"))}
    assert set(socks.values()) == {"socket", ""}
    assert socks[9999] == ""  # EBADF: strace has nothing to decorate


def test_yy_gives_the_protocol_of_each_socket() -> None:
    socks = {c.line: c.sock for c in net(read("addrs_yy"))}
    assert socks == {
        **dict.fromkeys([3, 4, 5, 6, 7, 28, 39, 40, 41, 42, 43], "TCP"),
        8: "",
        **dict.fromkeys([9, 10, 11, 13], "TCPv6"),
        **dict.fromkeys([12, 14, 24, 25], "UDPv6"),
        **dict.fromkeys([15, 16, 17, 18, 19, 20, 21, 22, 23, 26, 44, 46, 47], "UDP"),
        **dict.fromkeys([29, 30, 31, 32, 33, 34], "UNIX-STREAM"),
        35: "UNIX",
        36: "NETLINK",
        37: "NETLINK",
        38: "socket",
    }
    assert "sendmmsg(20<UDPv6:[[::]:" in "".join(lines_of("addrs_yy"))


# The whole workload.py run, pid 13043, without times (checked apart).
P = 13043
WORKLOAD: list[Record] = [
    Exec(P, PY, (PY_CUT, "workload.py", "5600"), line=1),
    NetCall(CONNECT, P, None, 5, unix("@netaudit:begin:test_workload"), "ECONNREFUSED", line=3),
    NetCall(CONNECT, P, None, 7, unix("blk.sock"), "0", line=4),
    NetCall(CONNECT, P, None, 8, unix("blk.sock"), "EAGAIN", line=5),
    Spawn(P, 13044, True, line=6),  # clone3 with CLONE_THREAD
    Spawn(P, 13045, False, line=9),  # fork
    Spawn(P, 13046, False, line=11),  # fork, split: <... clone resumed>
    NetCall(CONNECT, P, None, 11, v4("192.0.2.1", 443), "ENETUNREACH", line=18),
    Spawn(P, 13047, True, line=19),
    NetCall(CONNECT, 13047, None, 11, v4("198.51.100.7", 80), "ENETUNREACH", line=21),
    Spawn(P, 13048, False, line=22),
    NetCall(CONNECT, 13048, None, 11, v4("203.0.113.5", 8443), "ENETUNREACH", line=24),
    NetCall(SENDTO, P, None, 11, v4("203.0.113.53", 53), "ENETUNREACH", line=25),
    NetCall(SENDMSG, P, None, 11, v4("127.0.0.1", 5601), "3", line=26),
    NetCall(CONNECT, P, None, 11, v4("127.0.0.1", 5601), "0", line=27),
    NetCall(SENDTO, P, None, 11, v4("127.0.0.1", 5600), "18", line=29),  # MSG_FASTOPEN
    Spawn(P, 13049, False, line=30),  # vfork, split
    Exec(13049, "/usr/bin/true", ("true",), line=32),  # after an ENOENT in the PATH search
    Spawn(P, 13050, False, line=36),
    Exec(13050, PY, (PY_CUT, "-I", "-S", "-c", "import socket; socket.socket(soc"), line=37),
    NetCall(CONNECT, 13050, None, 3, v6("2001:db8::1", 443), "ENETUNREACH", line=41),
    Spawn(P, 13051, False, line=42),
    Exec(13051, "./uring", ("./uring",), line=43),
    Hazard(HazardKind.IO_URING, 13051, line=47),  # the failed setup on line 48 is no hazard
    Spawn(P, 13052, False, line=49),
    Exec(13052, "./untraced", ("./untraced",), line=50),
    Hazard(HazardKind.CLONE_UNTRACED, 13052, line=54),
    Spawn(13052, 13053, False, line=54),
    Spawn(P, 13054, False, line=55),
    Exec(13054, "./mmsg", ("./mmsg",), line=56),
    NetCall(SENDTO, 13054, None, 4, unix("dgram.sock"), "4000", line=60),
    Spawn(13054, 13055, True, line=61),
    # Split calls come out at their resumed line, with the line where their arguments are.
    NetCall(CONNECT, 13046, None, 11, unix("blk.sock"), "ERESTARTSYS", line=17),
    NetCall(CONNECT, 13054, None, 5, v4("192.0.2.2", 9), "ENETUNREACH", line=66),
    NetCall(SENDMMSG, 13055, None, 4, unix("dgram.sock"), "2", line=63),  # names on resumed line
    Spawn(P, 13056, False, line=68),
    Spawn(13056, 13057, True, line=70),
    Exec(13056, PY, (PY_CUT, "-I", "-S", "-c", "import socket; socket.socket().c"), line=74),
    NetCall(CONNECT, 13056, None, 3, v4("127.0.0.1", 5600), "0", line=77),
    NetCall(CONNECT, 13045, None, 11, unix("blk.sock"), "?", line=15),  # killed while blocked
    NetCall(CONNECT, 13044, None, 9, unix("blk.sock"), "0", line=8),
    NetCall(CONNECT, P, None, 5, unix("@netaudit:end:test_workload"), "ECONNREFUSED", line=80),
]


def timeless(record: Record) -> Record:
    if isinstance(record, NetCall):
        return record._replace(time=None)
    if isinstance(record, Spawn):
        return Spawn(record.parent, record.child, record.thread, None, record.line)
    if isinstance(record, Exec):
        return Exec(record.tid, record.path, record.argv, None, record.line)
    if isinstance(record, (Mark, Started)):
        return dataclasses.replace(record, time=None)
    assert isinstance(record, Hazard)
    return Hazard(record.kind, record.tid, None, record.line)


def test_workload_yields_every_call_task_and_hazard_in_log_order() -> None:
    parser = Parser()
    records = [r for r in parser.records(lines_of("workload")) if not isinstance(r, Started)]
    assert [timeless(r) for r in records] == WORKLOAD
    assert parser.stats == TraceStats(lines=80, calls=19, unparsed=0)


def test_every_record_has_the_time_of_the_line_where_its_call_starts() -> None:
    lines = lines_of("workload")
    for record in read("workload"):
        assert record.time == float(lines[record.line - 1].split()[1])


def test_hazards_keep_the_line_that_shows_them() -> None:
    lines = lines_of("workload")
    hazards = [r for r in read("workload") if isinstance(r, Hazard)]
    assert [h.raw + "\n" for h in hazards] == [lines[46], lines[53]]
    assert "CLONE_UNTRACED" in hazards[1].raw


def test_exec_from_a_thread_is_reported_under_the_leader_pid_once() -> None:
    lines = lines_of("workload")
    assert "<pid changed to 13056 ...>" in lines[73]
    assert "<... execve resumed>) = -1 (errno 18446744073709551343)" in lines[75]
    execs = [r for r in read("workload") if isinstance(r, Exec) and r.line >= 70]
    assert [(e.tid, e.line) for e in execs] == [(13056, 74)]


def test_split_sendmmsg_takes_its_names_from_the_resumed_line() -> None:
    lines = lines_of("workload")
    assert lines[62].endswith("sendmmsg(4,  <unfinished ...>\n")
    assert "<... sendmmsg resumed>[{msg_hdr={msg_name={sa_family=AF_UNIX" in lines[66]


def test_yy_and_T_options_change_no_destination_or_result() -> None:
    def summary(records: list[Record]) -> list[str]:
        return sorted(repr((c.syscall, c.dest, c.result)) for c in net(records))

    records = read("workload_yyT")
    assert summary(records) == summary(read("workload"))
    socks = {(c.dest, c.result): c.sock for c in net(records)}
    assert socks[(unix("blk.sock"), "0")] == "UNIX-STREAM"  # a split call keeps its decoration
    assert socks[(v6("2001:db8::1", 443), "ENETUNREACH")] == "TCPv6"
    assert socks[(v4("203.0.113.53", 53), "ENETUNREACH")] == "UDP"
    assert socks[(unix("dgram.sock"), "2")] == "UNIX"
    assert [type(r).__name__ for r in records] == [type(r).__name__ for r in WORKLOAD]


def test_stderr_log_rejoins_lines_cut_by_attach_messages() -> None:
    lines = lines_of("workload_stderr")
    assert lines[9].endswith("SIGCHLDstrace: Process 13089 attached\n")
    assert lines[10].startswith(", child_tidptr=")
    records = read("workload_stderr")
    spawns = [(s.parent, s.child, s.thread, s.line) for s in records if isinstance(s, Spawn)]
    assert spawns == [
        (0, 13088, True, 6),  # before the first fork strace prints no pid
        (13087, 13089, False, 10),
        (13087, 13090, False, 13),
        (13087, 13091, True, 19),
        (13087, 13092, False, 23),
        (13087, 13093, False, 36),
        (13087, 13094, False, 45),
        (13087, 13095, False, 54),
        (13087, 13096, False, 64),
        (13096, 13097, False, 70),
        (13087, 13098, False, 74),
        (13098, 13099, True, 81),
        (13087, 13100, False, 95),
        (13100, 13101, True, 98),
    ]
    moved = [moved_to_stderr(r) for r in WORKLOAD if not isinstance(r, Spawn)]
    assert [timeless(r) for r in records if not isinstance(r, Spawn)] == moved


# The same run to stderr: the pids of workload_stderr.log and where each record's line went.
STDERR_TIDS = {P: 13087, **{13043 + k: 13087 + k for k in range(1, 15)}}
STDERR_LINES = {
    1: 1, 3: 3, 4: 4, 5: 5, 8: 9, 15: 15, 17: 17, 18: 18, 21: 22, 24: 28, 25: 31, 26: 32,
    27: 33, 29: 35, 32: 39, 37: 47, 41: 51, 43: 56, 47: 60, 50: 66, 54: 70, 56: 76, 60: 80,
    63: 84, 66: 90, 74: 102, 77: 105, 80: 113,
}  # fmt: skip
#: Lines where strace printed no pid: before the first fork, and once one task is left.
STDERR_NO_PID = {1, 3, 4, 5, 113}


def moved_to_stderr(record: Record) -> Record:
    line = STDERR_LINES[record.line]
    assert isinstance(record, (NetCall, Exec, Hazard))
    tid = 0 if line in STDERR_NO_PID else STDERR_TIDS[record.tid]
    if isinstance(record, NetCall):
        return record._replace(tid=tid, line=line)
    return dataclasses.replace(record, tid=tid, line=line)


def test_stderr_log_gives_tid_zero_where_strace_printed_no_pid() -> None:
    records = read("workload_stderr")
    assert [(r.line, r.tid) for r in net(records) if r.tid in (0, 13087)] == [
        (3, 0),
        (4, 0),
        (5, 0),
        (18, 13087),
        (31, 13087),
        (32, 13087),
        (33, 13087),
        (35, 13087),
        (113, 0),  # the last task left: strace drops the pid again
    ]


FORKS_NOF = (13115, 13116, 13117, 13118, 13120, 13122)  # vfork() and clone() made whole


def test_without_f_only_the_first_thread_is_seen_as_tid_zero() -> None:
    records = read("workload_nof")
    assert [timeless(r) for r in records] == [
        Exec(0, PY, (PY_CUT, "workload.py", "5600"), line=1),
        NetCall(CONNECT, 0, None, 5, unix("@netaudit:begin:test_workload"), "ECONNREFUSED", line=3),
        NetCall(CONNECT, 0, None, 7, unix("blk.sock"), "0", line=4),
        NetCall(CONNECT, 0, None, 8, unix("blk.sock"), "EAGAIN", line=5),
        Spawn(0, 13110, True, line=6),
        Spawn(0, 13111, False, line=7),
        Spawn(0, 13112, False, line=8),
        NetCall(CONNECT, 0, None, 11, v4("192.0.2.1", 443), "ENETUNREACH", line=9),
        Spawn(0, 13113, True, line=10),
        Spawn(0, 13114, False, line=11),
        NetCall(SENDTO, 0, None, 11, v4("203.0.113.53", 53), "ENETUNREACH", line=12),
        NetCall(SENDMSG, 0, None, 11, v4("127.0.0.1", 5601), "3", line=13),
        NetCall(CONNECT, 0, None, 11, v4("127.0.0.1", 5601), "0", line=14),
        NetCall(SENDTO, 0, None, 11, v4("127.0.0.1", 5600), "18", line=16),
        *(Spawn(0, child, False, line=n) for n, child in zip(range(17, 23), FORKS_NOF)),
        NetCall(CONNECT, 0, None, 5, unix("@netaudit:end:test_workload"), "ECONNREFUSED", line=23),
    ]  # fmt: skip
    assert lines_of("workload_nof")[16] == "vfork()                                 = 13115\n"


# Literal lines for the corner cases.

PREFIX = "4242  1795634279.426813 "
DOC_DNS = '{sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("192.0.2.53")}'
TRICKY = (
    '"}{\\"msg_name={sa_family=AF_INET, sin_port=htons(1), sin_addr=inet_addr(\\"203.0.113.9\\")}'
    '\\", 0) = 0 <unfinished ...>"'
)


def test_braces_quotes_and_field_names_inside_a_payload_do_not_fool_sendto() -> None:
    line = f"{PREFIX}sendto(3, {TRICKY}, 80, 0, {DOC_DNS}, 16) = 80\n"
    assert [c.dest for c in net(one(line))] == [v4("192.0.2.53", 53)]


def test_a_fake_msg_name_inside_a_payload_is_not_a_destination() -> None:
    iov = (
        f"msg_iov=[{{iov_base={TRICKY}, iov_len=80}}], msg_iovlen=1, msg_controllen=0, msg_flags=0"
    )
    named = f"{PREFIX}sendmsg(3, {{msg_name={DOC_DNS}, msg_namelen=16, {iov}}}, 0) = 80"
    unnamed = f"{PREFIX}sendmsg(3, {{msg_name=NULL, msg_namelen=0, {iov}}}, 0) = 80"
    message = f"{{msg_hdr={{msg_name=NULL, msg_namelen=0, {iov}}}, msg_len=80}}"
    vector = f"{PREFIX}sendmmsg(3, [{message}], 1, 0) = 1"
    assert [c.dest for c in net(one(named))] == [v4("192.0.2.53", 53)]
    assert one(unnamed) == []
    assert one(vector) == []


def test_a_call_still_pending_at_the_end_is_flushed_with_an_unknown_result() -> None:
    records = one(f"{PREFIX}connect(5, {DOC_DNS}, 16 <unfinished ...>")
    assert records == [
        NetCall(CONNECT, 4242, 1795634279.426813, 5, v4("192.0.2.53", 53), "?", line=1)
    ]


def test_a_pending_call_is_flushed_when_its_task_dies() -> None:
    lines = [
        f"{PREFIX}connect(5, {DOC_DNS}, 16 <unfinished ...>\n",
        "4242  1795634279.5 +++ killed by SIGKILL +++\n",
        f"4243  1795634279.6 connect(5, {DOC_DNS}, 16) = 0\n",
    ]
    assert [(c.tid, c.result, c.line) for c in net(parse(lines))] == [
        (4242, "?", 1),
        (4243, "0", 3),
    ]


def test_a_resumed_line_without_its_start_is_an_unparsed_call() -> None:
    line = "4242  <... connect resumed>)            = -1 ECONNREFUSED (Connection refused)"
    assert one(line) == [NetCall(CONNECT, 4242, None, None, None, "ECONNREFUSED", line=1, raw=line)]


def test_a_last_line_cut_inside_the_address_is_an_unparsed_call() -> None:
    line = f'{PREFIX}connect(3, {{sa_family=AF_INET, sin_port=htons(443), sin_addr=inet_addr("93.1'
    parser = Parser()
    assert list(parser.records([f"{PREFIX}connect(3, {DOC_DNS}, 16) = 0\n", line])) == [
        NetCall(CONNECT, 4242, 1795634279.426813, 3, v4("192.0.2.53", 53), "0", line=1),
        NetCall(CONNECT, 4242, 1795634279.426813, 3, None, "?", line=2, raw=line),
    ]
    assert parser.stats == TraceStats(lines=2, calls=2, unparsed=1)


def test_a_last_line_cut_after_the_address_is_a_call_with_an_unknown_result() -> None:
    # What strace writes at the entry of a call that blocks (notes §d), as an <unfinished ...>.
    line = f'{PREFIX}connect(5, {{sa_family=AF_UNIX, sun_path="hang.sock"}}, 20'
    assert [(c.dest, c.result) for c in net(one(line))] == [(unix("hang.sock"), "?")]


@pytest.mark.parametrize(
    "line",
    [
        "garbage connect(and more",
        "4242  connect(3, {sa_family=AF_INET, sin_port=htons(443), 16) = 0",
        "4242  connect(3, {sin_port=htons(443)}, 16) = 0",
        "4242  connect(3, {sa_family=AF_INET, sin_port=htons(443)}) = 0",
        '4242  sendto(3, "unterminated, 5, 0, {sa_family=AF_INET}, 16) = 5',
        "4242  sendmsg(3, {msg_nam={sa_family=AF_UNIX}}, 0) = 1",
        "4242  sendmmsg(3, {msg_hdr={}}, 1, 0) = 1",
        "12345x 1795634279.426813 connect(3, {sa_family=AF_UNIX}, 2) = 0",
        "4242  connect(3<TCP:[1], {sa_family=AF_UNIX}, 2) = 0",
    ],
)
def test_a_sending_call_that_cannot_be_read_is_kept_unparsed(line: str) -> None:
    records = one(line)
    assert len(records) == 1
    assert isinstance(records[0], NetCall)
    assert records[0].dest is None
    assert records[0].raw == line


@pytest.mark.parametrize(
    "line",
    [
        "",
        "\n",
        "strace: Process 4242 attached\n",
        "[ Process PID=4242 runs in 32 bit mode. ]\n",
        "4242  +++ superseded by execve in pid 4243 +++\n",
        "4242  --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=4243} ---\n",
        "4242  set_robust_list(0x7f666fd139a0, 24) = 0\n",
        '4242  write(2, "connect(3, {sa_family=AF_INET}, 16) = 0", 40) = 40\n',
        "4242  clone(child_stack=NULL, flags=CLONE_VM|CLONE_VFORK|SIGCHLD) = -1 EAGAIN (x)\n",
        '4242  execve("/bin/nope", ["nope"], 0x7ffe /* 3 vars */) = -1 ENOENT (No such file)\n',
        "4242  io_uring_setup(4, {flags=0}) = -1 ENOSYS (Function not implemented) (INJECTED)\n",
        "(((", '"', "\x00\udcff", "<... connect resumed", "[pid", "4242", "4242  <...",
    ],
)  # fmt: skip
def test_lines_that_are_not_records_yield_nothing_and_raise_nothing(line: str) -> None:
    parser = Parser()
    assert list(parser.records([line])) == []
    stats = parser.stats
    assert (stats.lines, stats.calls, stats.unparsed) == (1, 0, 0)


@pytest.mark.parametrize(
    ("line", "foreign"),
    [
        ("strace: Process 4242 attached\n", 0),
        ("[ Process PID=4242 runs in 32 bit mode. ]\n", 0),
        ("4242  +++ exited with 0 +++\n", 0),
        ("4242  --- SIGCHLD {si_signo=SIGCHLD} ---\n", 0),
        ("4242  set_robust_list(0x7f666fd139a0, 24) = 0\n", 0),
        ("\x89PNG\r\n", 1),
        ("hello world\n", 1),
        ("\n", 1),
    ],
)
def test_lines_in_no_strace_form_are_counted_as_foreign(line: str, foreign: int) -> None:
    parser = Parser()
    list(parser.records([line]))
    assert parser.stats.foreign == foreign
    assert parser.stats.looks_like_strace is (foreign == 0)


def test_an_address_of_an_unknown_layout_is_kept_as_printed() -> None:
    line = f"{PREFIX}connect(3, {{sa_family=AF_INET, sin_port=htons(443)}}, 16) = 0"
    dests = [c.dest for c in net(one(line))]
    assert dests == [Endpoint(AF_INET, "sa_family=AF_INET, sin_port=htons(443)")]


def test_a_connect_to_af_unspec_is_a_disconnect_but_a_send_to_it_is_kept() -> None:
    data = 'sa_data="\\25\\266\\177\\0\\0\\1\\0\\0\\0\\0\\0\\0\\0\\0"'
    assert one(f"{PREFIX}connect(3, {{sa_family=AF_UNSPEC, {data}}}, 16) = 0") == []
    sent = net(one(f'{PREFIX}sendto(3, "x", 1, 0, {{sa_family=AF_UNSPEC, {data}}}, 16) = 1'))
    assert [c.dest for c in sent] == [Endpoint(AF_UNSPEC, f"sa_family=AF_UNSPEC, {data}")]


@pytest.mark.parametrize(
    ("tail", "result"),
    [
        (") = 0", "0"),
        (") = 5", "5"),
        (") = ?", "?"),
        (")                     = -1 ENETUNREACH (Network is unreachable)", "ENETUNREACH"),
        (") = ? ERESTARTSYS (To be restarted if SA_RESTART is set)", "ERESTARTSYS"),
        (") = -1 ENOSYS (Function not implemented) (INJECTED)", "ENOSYS"),
        (") = -1 ECONNREFUSED (Connection refused) <0.000097>", "ECONNREFUSED"),
        (") = -1 (errno 18446744073709551343)", "-1"),
    ],
)
def test_result_is_the_errno_name_or_the_returned_value(tail: str, result: str) -> None:
    for prefix in (PREFIX, "[pid  4242] 19:17:50.815092 ", ""):
        assert [c.result for c in net(one(f"{prefix}connect(3, {DOC_DNS}, 16{tail}"))] == [result]


def test_io_uring_setup_that_returns_a_decorated_fd_is_a_hazard() -> None:
    line = "4242  io_uring_setup(4, {flags=0, sq_entries=4}) = 3<anon_inode:[io_uring]>"
    assert one(line) == [Hazard(HazardKind.IO_URING, 4242, None, 1, line)]


def test_instruction_pointer_prefix_is_skipped() -> None:
    # strace -f -i -ttt, as run on this machine.
    line = (
        "13223 1795668042.640807 [00007f8ecec6c7c0] connect(7, {sa_family=AF_INET, "
        'sin_port=htons(443), sin_addr=inet_addr("93.184.216.34")}, 16) = -1 ENETUNREACH '
        "(Network is unreachable)"
    )
    assert one(line) == [
        NetCall(
            CONNECT, 13223, 1795668042.640807, 7, v4("93.184.216.34", 443), "ENETUNREACH", line=1
        )
    ]


@pytest.mark.parametrize("ending", ["", "\n", "\r\n"])
def test_line_endings_do_not_matter(ending: str) -> None:
    line = f"{PREFIX}connect(3, {DOC_DNS}, 16) = 0{ending}"
    assert [c.dest for c in net(one(line))] == [v4("192.0.2.53", 53)]


@pytest.mark.parametrize(
    ("shown", "address", "family"),
    [
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1", AF_INET6),
        ("2001:DB8::1", "2001:db8::1", AF_INET6),
        ("::ffff:192.0.2.1", "192.0.2.1", AF_INET),
        ("::ffff:c000:201", "192.0.2.1", AF_INET),
        ("::", "::", AF_INET6),
    ],
)
def test_ipv6_addresses_are_canonical_and_v4_mapped_ones_are_ipv4(
    shown: str, address: str, family: str
) -> None:
    line = (
        f"{PREFIX}connect(3, {{sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), "
        f'inet_pton(AF_INET6, "{shown}", &sin6_addr), sin6_scope_id=0}}, 28) = 0'
    )
    assert [c.dest for c in net(one(line))] == [Endpoint(family, address, 443)]


def test_exec_from_a_thread_as_shown_in_the_notes() -> None:
    lines = [
        '2208  execve("/usr/bin/python3", ["python3", "-c", "..."], 0x7ffe27df37a0 /* 35 vars */'
        " <pid changed to 2207 ...>\n",
        "2207  +++ superseded by execve in pid 2208 +++\n",
        "2207  <... execve resumed>)             = -1 (errno 18446744073709551343)\n",
        "2207  connect(3, {sa_family=AF_INET, sin_port=htons(5050), "
        'sin_addr=inet_addr("127.0.0.1")}, 16) = -1 ECONNREFUSED (Connection refused)\n',
    ]
    assert list(parse(lines)) == [
        Exec(2207, "/usr/bin/python3", ("python3", "-c", "..."), None, 1),
        NetCall(CONNECT, 2207, None, 3, v4("127.0.0.1", 5050), "ECONNREFUSED", line=4),
    ]


def test_execveat_gives_its_path_and_argv() -> None:
    line = '4242  execveat(3, "bin/tool", ["tool", "-x"], 0x7ffe /* 2 vars */, 0) = 0'
    assert one(line) == [Exec(4242, "bin/tool", ("tool", "-x"), None, 1)]


def test_a_new_call_from_a_task_flushes_its_stale_pending_call() -> None:
    lines = [
        f"{PREFIX}connect(5, {DOC_DNS}, 16 <unfinished ...>",
        f"{PREFIX}connect(6, {DOC_DNS}, 16 <unfinished ...>",
        "4242  <... connect resumed>) = 0",
    ]
    assert [(c.fd, c.result, c.line) for c in net(parse(lines))] == [(5, "?", 1), (6, "0", 2)]


def test_parse_is_a_fresh_parser_over_the_lines() -> None:
    lines = lines_of("workload")
    assert list(parse_all(lines)) == list(Parser().records(lines))


def test_stats_count_lines_calls_and_unparsed_calls() -> None:
    parser = Parser()
    lines = [f"{PREFIX}connect(3, {DOC_DNS}, 16) = 0\n", "noise\n", "x sendto(\n", "y\n"]
    assert len(list(parser.records(lines))) == 2
    assert parser.stats == TraceStats(lines=4, calls=2, unparsed=1, foreign=3)


def test_a_sendmmsg_cut_short_by_strace_keeps_an_unseen_destination() -> None:
    # 40 messages to loopback; strace printed 32 of them, then "...".
    calls = net(read("mmsg_many"))
    assert [c.dest for c in calls] == [v4("127.0.0.1", 5601), UNSEEN]
    assert {c.result for c in calls} == {"40"}


@pytest.mark.parametrize(
    ("line", "hazard"),
    [
        # Real strace 6.1 output for tests/fixtures/strace/seccomp_notify.c.
        (
            "7208  1795672175.987172 seccomp(SECCOMP_SET_MODE_FILTER, "
            "SECCOMP_FILTER_FLAG_NEW_LISTENER, {len=4, filter=0x7ffea8ba91b0}) = 3\n",
            True,
        ),
        (
            "7208  1795672175.987172 seccomp(SECCOMP_SET_MODE_FILTER, 0, "
            "{len=4, filter=0x7ffea8ba91b0}) = 0\n",
            False,
        ),
        (
            "7208  1795672175.987172 seccomp(SECCOMP_SET_MODE_FILTER, "
            "SECCOMP_FILTER_FLAG_NEW_LISTENER, {len=4, filter=0x7ffea8ba91b0}) = -1 EACCES (x)\n",
            False,
        ),
    ],
)
def test_a_seccomp_listener_is_a_hazard_and_a_plain_filter_is_not(line: str, hazard: bool) -> None:
    records = one(line)
    assert records == (
        [Hazard(HazardKind.SECCOMP_NOTIFY, 7208, 1795672175.987172, 1, line.rstrip())]
        if hazard
        else []
    )


@pytest.mark.parametrize(
    ("line", "hazard"),
    [
        # Real strace 6.1 output of a Python AF_PACKET socket bound to lo.
        (
            "7962  1795672216.803596 bind(3, {sa_family=AF_PACKET, sll_protocol=htons(0 /* "
            'ETH_P_??? */), sll_ifindex=if_nametoindex("lo"), sll_hatype=ARPHRD_NETROM, '
            "sll_pkttype=PACKET_HOST, sll_halen=0}, 20) = 0\n",
            True,
        ),
        (
            "7962  1795672216.803596 bind(3, {sa_family=AF_INET, sin_port=htons(0), "
            'sin_addr=inet_addr("127.0.0.1")}, 16) = 0\n',
            False,
        ),
    ],
)
def test_a_bound_packet_socket_is_a_hazard_and_other_binds_are_not(line: str, hazard: bool) -> None:
    expected = [Hazard(HazardKind.RAW_PACKET, 7962, 1795672216.803596, 1, line.rstrip())]
    assert one(line) == (expected if hazard else [])


# In-band markers (see netaudit.markers): a connect to one is a Mark, not a call.

RUN = "0123456789abcdef"
REFUSED = "-1 ECONNREFUSED (Connection refused)"


def marker_line(
    name: str, tid: int = 4819, fd: str = "3", time: str = "1795673412.252222", shown: str = ""
) -> str:
    """A marker connect in the form of markers.log (strace -f -ttt -o); ``shown`` is the name
    as strace prints it, when it differs from the name."""
    size = len(name) + 3  # sa_family, the leading NUL, the name
    name = shown or name
    return (
        f'{tid}  {time} connect({fd}, {{sa_family=AF_UNIX, sun_path=@"{name}"}}, {size})'
        f" = {REFUSED}\n"
    )


def test_the_real_marker_connects_are_marks_and_the_look_alike_stays_a_call() -> None:
    parser = Parser()
    records = list(parser.records(lines_of("markers")))
    assert records == [
        Mark(4819, RUN, "", MarkVerb.START, -1, 1795673412.252222, 1),
        Mark(4819, RUN, "gw0", MarkVerb.BEGIN, 12, 1795673412.252822, 2),
        Mark(4819, RUN, "", MarkVerb.END, -1, 1795673412.253236, 3),
        Mark(4819, RUN, "", MarkVerb.FINISH, -1, 1795673412.253642, 4),
        NetCall(
            CONNECT, 4819, 1795673412.254055, 3, unix("@netaudit:zz:b:1"), "ECONNREFUSED", line=5
        ),
    ]
    assert parser.stats == TraceStats(lines=6, calls=1, unparsed=0)  # a Mark is not a call


def test_marker_line_builds_lines_exactly_as_strace_wrote_them() -> None:
    real = lines_of("markers")
    assert marker_line(f"netaudit:{RUN}:s") == real[0]
    assert marker_line(f"netaudit:{RUN}.gw0:b:12", time="1795673412.252822") == real[1]


def _marker_forms() -> list[str]:
    """Real marker lines (markers.log, markers_threads.log's complete ones) and the forms a
    run makes: a worker's, the control connection's, a decorated fd, -tt, a look-alike."""
    real = [
        line
        for name in ("markers", "markers_threads")
        for line in lines_of(name)
        if "netaudit:" in line and "unfinished" not in line and "resumed" not in line
    ]
    return [
        *real,
        marker_line(f"netaudit:{RUN}{RUN}:x").replace(REFUSED, "0"),
        marker_line(f"netaudit:{RUN}.gw_1-a:b:123456789"),
        marker_line(f"netaudit:{RUN}:e", fd="3<UNIX-DGRAM:[27552]>"),
        marker_line(f"netaudit:{RUN}:e", fd="3<UNIX:[27552->0]>"),
        marker_line(f"netaudit:{RUN}:b:7", time="12:30:01.252222"),
        marker_line(f"netaudit:{RUN}:b"),
        marker_line(f"netaudit:{RUN}:s:1"),
        marker_line(f"netaudit:{RUN}:e").replace(REFUSED, f"{REFUSED} <0.000021>"),
    ]


@pytest.mark.parametrize("line", _marker_forms())
def test_the_fast_path_reads_a_marker_as_the_careful_path_does(line: str) -> None:
    fast = list(Parser().records([line]))
    careful = Parser()._slow(line, 1)
    assert fast == careful
    assert [type(r) for r in fast] in ([Mark], [NetCall])


def test_a_real_marker_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Parser, line: str, n: int) -> list[Record]:
        raise AssertionError(f"the careful path read {line!r}")

    lines = [line for line in lines_of("markers") if f"netaudit:{RUN}" in line]
    expected = [Parser()._slow(line, n) for n, line in enumerate(lines, 1)]
    monkeypatch.setattr(Parser, "_slow", refuse)
    assert [[r] for r in Parser().records(lines)] == expected


def test_a_repeated_marker_line_is_a_mark_every_time() -> None:
    # Complete lines are cached by their text: a marker must not be cached as a call.
    line = marker_line(f"netaudit:{RUN}:e")
    records = list(parse([line, marker_line("netaudit:zz:b:1"), line, line]))
    assert [type(r).__name__ for r in records] == ["Mark", "NetCall", "Mark", "Mark"]
    assert [r.line for r in records] == [1, 2, 3, 4]


def test_a_look_alike_repeated_stays_a_call_every_time() -> None:
    line = marker_line(f"netaudit:{RUN}:s:1")
    assert [r.dest for r in net(parse([line, line]))] == [unix(f"@netaudit:{RUN}:s:1")] * 2


@pytest.mark.parametrize(
    "fd",
    ["3<socket:[27453]>", "3<UNIX-DGRAM:[27552]>", "3<UNIX:[27552->0]>"],  # -y, -yy
)
def test_a_marker_on_a_decorated_fd_is_still_a_mark(fd: str) -> None:
    (record,) = one(marker_line(f"netaudit:{RUN}.gw1:b:4", fd=fd))
    assert record == Mark(4819, RUN, "gw1", MarkVerb.BEGIN, 4, 1795673412.252222, 1)


def test_a_hex_escaped_marker_is_still_a_mark() -> None:
    name = f"netaudit:{RUN}:f"
    escaped = "".join(f"\\x{ord(c):02x}" for c in name)  # as strace -xx prints it
    line = marker_line(name, shown=escaped)
    assert "\\x6e\\x65\\x74" in line and ", 30) = " in line
    (record,) = one(line)
    assert record == Mark(4819, RUN, "", MarkVerb.FINISH, -1, 1795673412.252222, 1)


def test_only_a_connect_to_a_marker_address_is_a_mark() -> None:
    # A send to the same name is an ordinary call (no run sends to its markers).
    line = (
        f'4819  1795673412.3 sendto(3, "x", 1, 0, {{sa_family=AF_UNIX, '
        f'sun_path=@"netaudit:{RUN}:s"}}, 30) = {REFUSED}\n'
    )
    assert [c.dest for c in net(one(line))] == [unix(f"@netaudit:{RUN}:s")]


def test_a_marker_split_by_another_thread_is_still_a_mark() -> None:
    # The form of markers_threads.log: the mark comes out at its resumed line, with the line
    # number and time of its start.
    begin = f'connect(3, {{sa_family=AF_UNIX, sun_path=@"netaudit:{RUN}.gw1:b:0"}}, 36'
    other = f'connect(4, {{sa_family=AF_UNIX, sun_path=@"netaudit:{RUN}.gw0:b:0"}}, 36)'
    lines = [
        f"9628  1795673769.109036 {begin} <unfinished ...>\n",
        f"9627  1795673769.109063 {other} = {REFUSED}\n",
        f"9628  1795673769.109103 <... connect resumed>) = {REFUSED}\n",
    ]
    assert list(parse(lines)) == [
        Mark(9627, RUN, "gw0", MarkVerb.BEGIN, 0, 1795673769.109063, 2),
        Mark(9628, RUN, "gw1", MarkVerb.BEGIN, 0, 1795673769.109036, 1),
    ]


def test_a_marker_left_unfinished_at_the_end_is_still_a_mark() -> None:
    line = marker_line(f"netaudit:{RUN}:f").replace(f") = {REFUSED}\n", " <unfinished ...>\n")
    assert one(line) == [Mark(4819, RUN, "", MarkVerb.FINISH, -1, 1795673412.252222, 1)]


def test_split_marker_connects_from_two_real_threads_are_all_marks_in_order() -> None:
    lines = lines_of("markers_threads")
    assert sum("<unfinished ...>" in line for line in lines) == 15
    parser = Parser()
    records = list(parser.records(lines))
    marks = [r for r in records if isinstance(r, Mark)]
    assert not net(records)
    assert parser.stats.calls == 0
    for tid, worker in ((9627, "gw0"), (9628, "gw1")):
        mine = [m for m in marks if m.tid == tid]
        # Each thread's marks in the order it made them: BEGIN i, END, for i in 0..4.
        assert [(m.verb, m.test) for m in mine] == [
            step for i in range(5) for step in ((MarkVerb.BEGIN, i), (MarkVerb.END, -1))
        ]
        assert {(m.run, m.worker) for m in mine} == {(RUN, worker)}
        # Each keeps the line and time where its connect started, which names it.
        for m in mine:
            start = lines[m.line - 1]
            assert start.startswith(f"{tid}  ") and f".{worker}:" in start
            assert m.time == float(start.split()[1])
    assert len(marks) == 20


def test_sends_split_by_a_talking_thread_give_each_addressed_send_once() -> None:
    # pingpong.log: two threads talk over loopback TCP, and one of them also sends each
    # reply to 127.0.0.1:9 by UDP; strace split 290 of the sends, 43 of them addressed.
    lines = lines_of("pingpong")
    addressed = [n for n, line in enumerate(lines, 1) if "htons(9)" in line]
    split = [n for n, line in enumerate(lines, 1) if line.endswith("<unfinished ...>\n")]
    assert (len(addressed), len(split), len(set(addressed) & set(split))) == (200, 290, 43)
    parser = Parser()
    records = list(parser.records(lines))
    sends = [c for c in net(records) if c.syscall is SENDTO]
    assert [(c.line, c.tid, c.dest, c.result) for c in sends] == [
        (n, int(lines[n - 1].split()[0]), v4("127.0.0.1", 9), "4") for n in addressed
    ]
    # Only a split send with an address says where it started; the 247 sends to the
    # connected peer that strace split are not kept until their end.
    assert [r.line for r in records if isinstance(r, Started)] == sorted(
        set(addressed) & set(split)
    )
    assert parser.stats.calls == len(net(records))


def test_a_split_send_to_the_connected_peer_gives_nothing_whatever_its_end() -> None:
    start = '4242  1795634279.1 sendto(5, "ping", 4, 0, NULL, 0 <unfinished ...>\n'
    ends = [
        "4242  1795634279.2 <... sendto resumed>) = 4\n",
        "4242  1795634279.2 <... sendto resumed>) = -1 EPIPE (Broken pipe)\n",
        "4242  1795634279.2 +++ killed by SIGKILL +++\n",
        "",  # the log ends
    ]
    for end in ends:
        assert list(parse_all([start, end] if end else [start])) == []


def test_a_split_send_that_cannot_be_read_is_kept_unparsed() -> None:
    lines = [
        "4242  1795634279.1 sendto(5, <a form never seen> <unfinished ...>\n",
        "4242  1795634279.2 <... sendto resumed>) = 4\n",
    ]
    records = list(parse_all(lines))
    assert records[0] == Started(4242, 1795634279.1, 1)
    assert [(c.syscall, c.dest, c.line) for c in net(records)] == [(SENDTO, None, 1)]


def test_a_split_sending_call_says_where_it_started() -> None:
    lines = [
        "4242  1795634279.426813 connect(5, {sa_family=AF_INET, sin_port=htons(53), "
        'sin_addr=inet_addr("192.0.2.53")}, 16 <unfinished ...>\n',
        "4243  1795634279.426900 clone(child_stack=NULL, flags=SIGCHLD) = 4244\n",
        "4242  1795634279.527000 <... connect resumed>) = -1 ETIMEDOUT (Connection timed out)\n",
    ]
    records = list(parse_all(lines))
    assert records[0] == Started(4242, 1795634279.426813, 1)
    assert [type(r).__name__ for r in records] == ["Started", "Spawn", "NetCall"]
    call = records[2]
    assert isinstance(call, NetCall) and (call.tid, call.line) == (4242, 1)


#: The line strace was writing when the log was cut, and the one it wrote after the hole.
CUT_LINE = f"{PREFIX}connect(3, {DOC_DNS}, 16) = -1 ENETUNREACH (Network is unreachable)"
NEXT_LINE = (
    "4243  1795634279.500000 connect(4, {sa_family=AF_INET, sin_port=htons(443), "
    'sin_addr=inet_addr("203.0.113.8")}, 16) = -1 ENETUNREACH (Network is unreachable)'
)


@pytest.mark.parametrize("read", [0, 7, 30, 60, len(CUT_LINE) - 1, len(CUT_LINE)])
def test_a_hole_in_a_line_read_in_part_is_foreign_and_the_calls_on_both_sides_stay(
    read: int,
) -> None:
    """A reader that had read ``read`` bytes of a line when the log was cut finds the hole of
    NULs glued onto that part: the audit is incomplete, the part keeps the call it names
    (unparsed), and the line strace wrote after the hole is read as it is."""
    parser = Parser()
    line = CUT_LINE[:read] + "\0" * 4096 + NEXT_LINE + "\n"
    calls = net(parser.records([line]))
    assert parser.stats.foreign == 1
    assert calls[-1].dest == Endpoint(AF_INET, "203.0.113.8", 443)
    assert calls[-1].tid == 4243
    kept = calls[:-1]
    if "connect(" in CUT_LINE[:read]:
        assert [(c.tid, c.syscall, c.dest) for c in kept] == [(4242, Syscall.CONNECT, None)]
    else:
        assert kept == []


def test_nul_bytes_anywhere_in_a_line_are_foreign_even_on_the_fast_path() -> None:
    parser = Parser()
    whole = f"{PREFIX}connect(3, {DOC_DNS}, 16) = 0\n"
    list(parser.records([whole, whole]))  # learnt: the next one would take the fast path
    holed = whole.replace("htons(53)", "htons(\0\0)")
    assert [c.dest for c in net(parser.records([holed]))] == [None]
    assert parser.stats.foreign == 2  # the hole, and the rest of the line it cut in two


# The quick decoders for a log of many destinations (every line new to the caches).

QUICK_ADDRESSES = st.one_of(
    st.ip_addresses(v=4).map(lambda ip: ("AF_INET", str(ip))),
    st.ip_addresses(v=6).map(lambda ip: ("AF_INET6", str(ip))),
    st.ip_addresses(v=6).map(lambda ip: ("AF_INET6", ip.exploded)),  # not canonical
    st.sampled_from(
        [("AF_INET", "010.0.0.1"), ("AF_INET", "256.1.1.1"), ("AF_INET6", "::ffff:10.0.0.1"),
         ("AF_INET6", "2001:DB8::1"), ("AF_INET6", "1::2::3"), ("AF_INET6", "::1.2.3.4")]
    ),
)  # fmt: skip


def sockaddr_text(family: str, address: str, port: int, scope: str) -> str:
    if family == "AF_INET":
        return f'{{sa_family=AF_INET, sin_port=htons({port}), sin_addr=inet_addr("{address}")}}, 16'
    return (
        f"{{sa_family=AF_INET6, sin6_port=htons({port}), sin6_flowinfo=htonl(0), "
        f'inet_pton(AF_INET6, "{address}", &sin6_addr), sin6_scope_id={scope}}}, 28'
    )


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["connect", "sendto", "sendto-peer"]),
    QUICK_ADDRESSES,
    st.sampled_from([53, 443, 5353]),
    st.sampled_from(["0", 'if_nametoindex("lo")']),
    st.sampled_from(['"x"', '"\\0\\1q=1 = 2"', '"\\x12\\x34"...', '"a\\"b"']),
    st.sampled_from(["0", "-1 ENETUNREACH (Network is unreachable)", "12 <0.000021>"]),
)
def test_the_quick_decoders_read_a_line_as_the_general_decoder_does(
    call: str,
    address: tuple[str, str],
    port: int,
    scope: str,
    payload: str,
    result: str,
) -> None:
    where = sockaddr_text(*address, port, scope)
    args = {
        "connect": f"connect(7, {where})",
        "sendto": f"sendto(7, {payload}, 12, MSG_NOSIGNAL, {where})",
        "sendto-peer": f"sendto(7, {payload}, 12, 0, NULL, 0)",
    }[call]
    lines = [f"4000  1795634279.000137 {args} = {result}\n"] * 3  # new, seen again, cached
    quick = list(parse_all(lines))
    with pytest.MonkeyPatch.context() as general:
        general.setattr(parse_module, "_QUICK", {})
        general.setattr(parse_module, "_QUICK_LINE", {})
        assert quick == list(parse_all(lines))


def test_caches_stay_bounded_however_many_destinations_a_log_has() -> None:
    parser = Parser()
    lines = (
        f"4000  1795634279.{i:06d} connect({i % 900 + 3}, "
        f"{sockaddr_text('AF_INET', f'10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}', 443, '0')})"
        " = -1 ENETUNREACH (Network is unreachable)\n"
        for i in range(40_000)
    )
    assert sum(1 for _ in parser.records(lines)) == 40_000
    assert len(parser._whole) <= parse_module._LINES_MAX
    assert len(parser._fast) <= parse_module._LINES_MAX
    assert len(parser._addresses) <= parse_module._ADDRESSES_MAX
    assert len(parser._once) <= parse_module._LINES_MAX


@pytest.mark.parametrize(
    "line",
    [
        # No timestamp, and what follows the pid looks like one word and then a call.
        "12955 connect(8, g(ksa_family=AF_INET,sin_port=htons(5555)}, 16) = -1 EINPROGRESS",
        '12979 connect(22<socket\x1ce([27448]>, {sa_family=AF_UNIX, sun_path="s"}, 19) = 0',
        # A garbled word before the call that reads as a call of its own.
        '12012 q(795679098.376357 sendto(6, "ping", 4, 0, {sa_family=AF_\x04NET}, 16) = 4',
        '12971 04:\x1ef(0:16.005872 sendto(21, "x", 1, 0, {sa_family=AF_INET}, 16) = 1 <0.1>',
    ],
)
def test_a_garbled_line_keeps_the_call_it_names(line: str) -> None:
    (call,) = [r for r in parse_all([line]) if isinstance(r, NetCall)]
    assert call.syscall in (Syscall.CONNECT, Syscall.SENDTO)


def test_a_port_strace_would_not_print_is_kept_as_printed_not_read_as_another() -> None:
    sockaddr = '{sa_family=AF_INET, sin_port=htons(0443), sin_addr=inet_addr("192.0.2.1")}'
    (call,) = parse_all([f"10  1795634279.000137 connect(3, {sockaddr}, 16) = 0\n"])
    assert isinstance(call, NetCall) and call.dest is not None
    assert call.dest.port is None and "htons(0443)" in call.dest.address
