"""Host names from the trace: DNS queries and answers in dns.log (real strace 6.1, see the
fixture README), names on destinations, probes shown as resolved, host rules, and every report.

The line numbers and pids below are those of the committed dns.log.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netaudit import attribute
from netaudit.allowlist import loads
from netaudit.attribute import Lineage
from netaudit.audit import audit_lines, judge
from netaudit.errors import AllowlistError
from netaudit.model import (
    AF_INET,
    AF_INET6,
    PROBE,
    AuditResult,
    Destination,
    Endpoint,
    NetCall,
    NetEvent,
    Process,
    Record,
    Resolved,
    RunInfo,
    Spawn,
    Syscall,
)
from netaudit.parse import Parser
from netaudit.render import json as json_report
from netaudit.render import text
from netaudit.render.suggest import suggest_rules
from netaudit.rules import DEFAULT, RESOLVED, host_matches

LOG = Path(__file__).resolve().parents[1] / "fixtures" / "strace" / "dns.log"
PID, CHILD = 19308, 19316
RESOLVER = Endpoint(AF_INET, "127.0.0.1", 53)


def lines() -> list[str]:
    return LOG.read_text(encoding="utf-8").splitlines(keepends=True)


def by_kind(result: AuditResult) -> dict[str, dict[str, Destination]]:
    kinds: dict[str, dict[str, Destination]] = {}
    for d in result.destinations:
        kinds.setdefault(d.kind, {})[text.label(d)] = d
    return kinds


# -- the parser ---------------------------------------------------------------------------


def test_a_repeated_query_is_read_each_time_and_a_send_to_port_53_that_is_none_is_fast() -> None:
    query = next(line for line in lines() if "sendto(" in line and "htons(53)" in line)
    # Strace's default -s 32 cuts the payload: no whole question, so no DNS query to tell.
    cut = query.split('"')[0] + '"\\x12\\x34\\x01\\x00"...' + query.split('"', 2)[2]
    parser = Parser()
    records = list(parser.records([query, query, cut, cut]))
    asked = [r.raw for r in records if isinstance(r, NetCall) and r.raw]
    assert asked == ["dns A msg.example.test"] * 2
    sends = [r for r in records if isinstance(r, NetCall) and not r.raw]
    assert [r.dest for r in sends] == [RESOLVER] * 4
    assert parser.stats.calls == 4
    assert len(parser._fast) == 1  # the cut send was learnt once; a query never is


def test_every_query_is_read_with_its_type_and_resolver() -> None:
    queries = [
        (r.line, r.syscall, r.dest, r.raw)
        for r in Parser().records(lines())
        if isinstance(r, NetCall) and r.raw
    ]
    assert queries == [
        (6, Syscall.SENDMMSG, RESOLVER, "dns A api.example.test"),  # glibc: connected, NULL name
        (6, Syscall.SENDMMSG, RESOLVER, "dns AAAA api.example.test"),
        (18, Syscall.SENDMMSG, RESOLVER, "dns A www.shop.test"),
        (18, Syscall.SENDMMSG, RESOLVER, "dns AAAA www.shop.test"),
        (23, Syscall.SENDMMSG, RESOLVER, "dns A nope.test"),
        (23, Syscall.SENDMMSG, RESOLVER, "dns AAAA nope.test"),
        (27, Syscall.SENDTO, RESOLVER, "dns A raw.example.test"),  # send() on a connected socket
        (30, Syscall.SENDTO, RESOLVER, "dns A msg.example.test"),  # sendto with an address
        (33, Syscall.SENDMMSG, RESOLVER, "dns A bucket1.s3.example.test"),
        (33, Syscall.SENDMMSG, RESOLVER, "dns AAAA bucket1.s3.example.test"),
        (43, Syscall.SENDTO, RESOLVER, "dns A local.example.test"),
    ]


def test_every_answer_is_read_from_recvfrom_and_recvmsg() -> None:
    answers = [r for r in Parser().records(lines()) if isinstance(r, Resolved)]
    assert [(r.line, r.tid, r.addresses) for r in answers] == [
        (7, PID, (("192.0.2.10", ("api.example.test",)),)),
        (8, PID, (("2001:db8::10", ("api.example.test",)),)),
        (19, PID, (("192.0.2.30", ("www.shop.test", "edge.cdn.test")),)),
        (28, PID, (("192.0.2.40", ("raw.example.test",)),)),  # recv() on a connected socket
        (31, PID, (("198.51.100.50", ("msg.example.test",)),)),  # recvmsg
        (34, PID, (("203.0.113.61", ("bucket1.s3.example.test",)),)),
        (44, PID, (("127.0.0.1", ("local.example.test",)),)),
    ]


def test_queries_do_not_count_as_calls() -> None:
    parser = Parser()
    calls = [r for r in parser.records(lines()) if isinstance(r, NetCall) and not r.raw]
    assert parser.stats.calls == len(calls)


def test_receives_from_other_ports_and_netlink_are_not_answers() -> None:
    noise = [
        '1 recvfrom(3<UDP:[127.0.0.1:5000->127.0.0.1:5353]>, "\\x12\\x34\\x81\\x80", 512, 0, '
        "NULL, NULL) = 4\n",
        "1 recvmsg(3<NETLINK:[ROUTE:1]>, {msg_name={sa_family=AF_NETLINK, nl_pid=0, "
        "nl_groups=00000000}, msg_iov=[{iov_base=[], iov_len=4096}]}, 0) = 20\n",
        '1 recvfrom(3<UDP:[127.0.0.1:5000->127.0.0.1:53]>, "\\x12", 512, 0, NULL, NULL) = -1 '
        "EAGAIN (Resource temporarily unavailable)\n",
    ]
    assert list(Parser().records(noise)) == []


def test_a_split_recvfrom_is_read_when_it_resumes() -> None:
    answer = next(line for line in lines() if " recvfrom(" in line and "\\x72\\x61\\x77" in line)
    pid, ts, call = answer.split(None, 2)
    head, _, rest = call.partition(", ")
    # As strace prints a call whose output it shows only at its end: "fd,  <unfinished ...>".
    split = [f"{pid} {ts} {head},  <unfinished ...>\n", f"{pid} {ts} <... recvfrom resumed>{rest}"]
    records = list(Parser().records(split))
    assert records == [Resolved(PID, (("192.0.2.40", ("raw.example.test",)),), float(ts), 1)]


# -- attribution and the audit ------------------------------------------------------------


def test_destinations_carry_the_names_their_address_was_resolved_from() -> None:
    kinds = by_kind(audit_lines(lines(), DEFAULT))
    connections = {label: d.names for label, d in kinds["connection"].items()}
    assert connections["192.0.2.10:443 (api.example.test)"] == ("api.example.test",)
    assert connections["[2001:db8::10]:443 (api.example.test)"] == ("api.example.test",)
    assert connections["192.0.2.30:443 (edge.cdn.test, www.shop.test)"]
    assert "192.0.2.40:80 (raw.example.test)" in connections
    assert "203.0.113.62:443" in connections  # a hard-coded address has no name


def test_a_child_connecting_to_what_its_parent_resolved_gets_the_name() -> None:
    kinds = by_kind(audit_lines(lines(), DEFAULT))
    child = kinds["connection"]["203.0.113.61:443 (bucket1.s3.example.test)"]
    assert child.pids == (CHILD,)


def test_udp_probes_are_resolved_not_connections_and_a_udp_send_is_egress() -> None:
    kinds = by_kind(audit_lines(lines(), DEFAULT))
    probes = kinds["resolved"]
    assert set(probes) == {
        "192.0.2.10:443 (api.example.test)",
        "[2001:db8::10]:443 (api.example.test)",
        "127.0.0.1:9999 (local.example.test)",
    }
    assert {d.verdict.rule for d in probes.values()} == {RESOLVED}
    assert all(d.syscalls == ("connect",) and d.socks[0].startswith("UDP") for d in probes.values())
    # The same socket then sent: that send is a connection, judged as any other.
    sent = kinds["connection"]["127.0.0.1:9999 (local.example.test)"]
    assert sent.syscalls == ("sendto",) and sent.verdict.rule == "loopback (IPv4)"
    # The TCP connects to the probed addresses stay connections and violations.
    tcp = kinds["connection"]["192.0.2.10:443 (api.example.test)"]
    assert tcp.socks == ("TCP",) and not tcp.verdict.allowed


def test_dns_queries_are_destinations_judged_by_their_resolver() -> None:
    queries = by_kind(audit_lines(lines(), DEFAULT))["dns_query"]
    assert len(queries) == 11
    assert "127.0.0.1:53 DNS AAAA api.example.test" in queries
    assert {d.verdict.rule for d in queries.values()} == {"loopback (IPv4)"}
    outside = loads("version: 1\nbuiltins: false\n")
    judged = judge(queries.values(), outside)
    assert not any(d.verdict.allowed for d in judged)  # the resolver is egress like any other


def test_a_udp_connect_to_an_address_no_answer_gave_is_a_connection() -> None:
    lineage = Lineage()
    udp = NetCall(Syscall.CONNECT, 7, None, 3, Endpoint(AF_INET, "192.0.2.9", 443), "0", "UDP")
    answer = Resolved(7, (("192.0.2.10", ("a.test",)),))
    events = [e for e in lineage.attribute([answer, udp]) if isinstance(e, NetEvent)]
    assert [(e.call.raw, e.names) for e in events] == [("", ())]


def test_an_answer_to_the_parent_names_a_child_call_but_does_not_make_it_a_probe() -> None:
    lineage = Lineage()
    answer = Resolved(7, (("2001:db8::10", ("a.test",)),))
    udp = NetCall(
        Syscall.CONNECT, 8, None, 3, Endpoint(AF_INET6, "2001:db8::10", 443), "0", "UDPv6"
    )
    events = [
        e for e in lineage.attribute([answer, Spawn(7, 8, False), udp]) if isinstance(e, NetEvent)
    ]
    assert [(e.call.raw, e.names, e.process) for e in events] == [
        ("", ("a.test",), Process(8, 7, "?"))
    ]


def test_the_latest_answer_for_an_address_names_it() -> None:
    lineage = Lineage()
    tcp = NetCall(Syscall.CONNECT, 7, None, 3, Endpoint(AF_INET, "192.0.2.10", 443), "0", "TCP")
    records: list[Record] = [
        Resolved(7, (("192.0.2.10", ("old.test",)),)),
        Resolved(7, (("192.0.2.10", ("new.test",)),)),
        tcp,
    ]
    events = [e for e in lineage.attribute(records) if isinstance(e, NetEvent)]
    assert [e.names for e in events] == [("new.test",)]


def test_a_reused_pid_does_not_inherit_the_old_process_names() -> None:
    lineage = Lineage()
    tcp = NetCall(Syscall.CONNECT, 8, None, 3, Endpoint(AF_INET, "192.0.2.10", 443), "0", "TCP")
    records: list[Record] = [
        Spawn(7, 8, False),
        Resolved(8, (("192.0.2.10", ("old.test",)),)),
        Spawn(7, 8, False),  # pid 8 exited (not traced) and a new child got its number
        tcp,
    ]
    events = [e for e in lineage.attribute(records) if isinstance(e, NetEvent)]
    assert [e.names for e in events] == [()]


def names_seen(records: list[Record], calls: list[tuple[int, str]]) -> list[tuple[str, ...]]:
    tail: list[Record] = [
        NetCall(Syscall.CONNECT, pid, None, 3, Endpoint(AF_INET, ip, 443), "0", "TCP")
        for pid, ip in calls
    ]
    events = Lineage().attribute([*records, *tail])
    return [e.names for e in events if isinstance(e, NetEvent)]


def test_names_are_kept_for_the_latest_processes_and_addresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(attribute, "NAMED_PROCESSES", 2)
    monkeypatch.setattr(attribute, "NAMES_PER_PROCESS", 2)
    spawns: list[Record] = [Spawn(1, pid, False) for pid in (2, 3, 4)]
    one = [Resolved(1, tuple((f"192.0.2.{n}", (f"n{n}.test",)) for n in range(3)))]
    assert names_seen([*spawns, *one], [(1, "192.0.2.0"), (1, "192.0.2.2")]) == [
        (),
        ("n2.test",),
    ]
    each: list[Record] = [Resolved(pid, (("192.0.2.9", (f"p{pid}.test",)),)) for pid in (2, 3, 4)]
    assert names_seen([*spawns, *each], [(2, "192.0.2.9"), (4, "192.0.2.9")]) == [
        (),  # pid 2's names went when pids 3 and 4 got theirs (its parent has none)
        ("p4.test",),
    ]


# -- host rules ---------------------------------------------------------------------------

HOST_RULES = """\
version: 1
allowlist:
  - host: API.example.test.
    port: 443
  - name: buckets
    host: "*.s3.example.test"
  - family: AF_INET6
    host: "*.example.test"
    port: 443
"""


def test_host_rules_allow_by_the_names_the_trace_saw_exact_and_wildcard() -> None:
    allowlist = loads(HOST_RULES, "allow.yaml")
    result = audit_lines(lines(), allowlist)
    verdicts = {
        text.label(d): d.verdict.rule for d in result.destinations if d.kind == "connection"
    }
    assert verdicts["192.0.2.10:443 (api.example.test)"] == "host api.example.test:443"
    assert verdicts["[2001:db8::10]:443 (api.example.test)"] == "host api.example.test:443"
    assert verdicts["203.0.113.61:443 (bucket1.s3.example.test)"] == "buckets"
    # Never resolved in the trace: the same address as bucket2 gets no name, and no host rule.
    assert verdicts["203.0.113.62:443"] is None
    assert verdicts["192.0.2.40:80 (raw.example.test)"] is None  # port 443 only
    assert verdicts["192.0.2.30:443 (edge.cdn.test, www.shop.test)"] is None


def test_a_host_rule_with_a_family_allows_only_that_family() -> None:
    rule = loads(HOST_RULES).rules[2]
    names = frozenset({"x.example.test"})
    assert rule.matches(Endpoint(AF_INET6, "2001:db8::1", 443), names)
    assert not rule.matches(Endpoint(AF_INET, "192.0.2.1", 443), names)
    assert not rule.matches(Endpoint(AF_INET6, "2001:db8::1", 443))  # no name, no match


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("a.test", "a.test", True),
        ("a.test", "b.a.test", False),
        ("*.s3.test", "bucket.s3.test", True),
        ("*.s3.test", "a.b.s3.test", True),
        ("*.s3.test", "s3.test", False),
        ("*.s3.test", "evils3.test", False),
    ],
)
def test_host_patterns(pattern: str, name: str, matches: bool) -> None:
    assert host_matches(pattern, name) is matches


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("host: 192.0.2.1", "allow.yaml:3: host '192.0.2.1' is an IP address in rule #1 (use addr"),
        ("host: a.*.test", "allow.yaml:3: host 'a.*.test' has a '*' that is not its first label"),
        (
            "host: 'a.test:443'",
            "allow.yaml:3: host 'a.test:443' is not a host name in rule #1 (put",
        ),
        ("host: 'a b.test'", "allow.yaml:3: host 'a b.test' is not a host name in rule #1"),
        ("host: a.test\n    addr: 192.0.2.1", "allow.yaml:4: both 'host' and 'addr' in rule #1"),
        ("host: a.test\n    cidr: 192.0.2.0/24", "allow.yaml:4: both 'host' and 'cidr' in rule #1"),
        ("family: AF_UNIX\n    host: a.test", "allow.yaml:4: 'host' does not apply to AF_UNIX"),
        ("host: 5", "allow.yaml:3: 'host' must be a host name like api.example.com, not a number"),
    ],
)
def test_a_bad_host_rule_is_an_error_at_its_line(rule: str, message: str) -> None:
    with pytest.raises(AllowlistError) as raised:
        loads(f"version: 1\nallowlist:\n  - {rule}\n", "allow.yaml")
    assert str(raised.value).startswith(message)


def test_check_lists_host_rules_with_their_names() -> None:
    table = text.rules_table(loads(HOST_RULES, "allow.yaml"))
    assert (
        "line 5    buckets                          AF_INET/AF_INET6 host *.s3.example.test"
        in table
    )


def test_resolved_is_a_name_no_rule_may_take() -> None:
    with pytest.raises(AllowlistError, match="taken by a built-in rule"):
        loads(f"version: 1\nallowlist:\n  - name: '{RESOLVED}'\n    family: AF_UNIX\n")


# -- reports ------------------------------------------------------------------------------


def test_the_text_report_shows_names_probes_and_queries() -> None:
    result = audit_lines(lines(), DEFAULT)
    report = text.report(result, verbose=True)
    assert "    AF_INET 192.0.2.10:443 (api.example.test) (count=1, pids=[19308])" in report
    # Too long for the address column: the row goes on below it, in the same columns.
    wide = f"{'':<42} "
    assert f"AF_INET      192.0.2.10:443 (api.example.test)\n{wide}RESOLVED   {RESOLVED}" in report
    assert f"AF_INET      127.0.0.1:53 DNS A msg.example.test\n{wide}OK         loopback" in report
    assert "    AF_INET 203.0.113.62:443 (count=1, pids=[19308])" in report


def test_the_json_report_has_names_kind_and_query() -> None:
    result = audit_lines(lines(), DEFAULT)
    document = json.loads(json_report.to_json(result, RunInfo("now", "host", "0")))
    rows = {(r["kind"], r["display"], r["raw"]): r for r in document["destinations"]}
    tcp = rows[("connection", "192.0.2.30:443", None)]
    assert tcp["names"] == ["edge.cdn.test", "www.shop.test"] and tcp["query"] is None
    query = rows[("dns_query", "127.0.0.1:53", "dns AAAA bucket1.s3.example.test")]
    assert query["query"] == {"type": "AAAA", "name": "bucket1.s3.example.test"}
    assert rows[("resolved", "192.0.2.10:443", PROBE)]["verdict"] == "allowed"


def test_suggested_rules_prefer_the_name_and_load_back_to_allow_what_they_came_from() -> None:
    result = audit_lines(lines(), DEFAULT)
    suggested = suggest_rules(result.violations)
    assert "  host: api.example.test\n  port: 443\n" in suggested
    assert "  host: edge.cdn.test\n  port: 443\n" in suggested  # the shorter name of the chain
    assert "  addr: 203.0.113.62\n" in suggested  # never resolved: by address
    again = audit_lines(lines(), loads(suggested))
    assert again.clean
