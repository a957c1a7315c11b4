"""Suggested rules: they load back, allow every violation they came from, and nothing more."""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import replace
from random import Random
from typing import Union

from hypothesis import given, settings
from hypothesis import strategies as st

from netaudit.allowlist import Allowlist, ip_of, loads
from netaudit.model import Destination, Endpoint, Verdict
from netaudit.render.suggest import suggest_rules

_Key = tuple[str, Union[str, int, None]]


def seen(
    endpoint: Endpoint | None,
    test: str = "tests/test_api.py::test_fetch_data",
    programs: tuple[str, ...] = ("python3",),
    raw: str = "",
    rule: str | None = None,
) -> Destination:
    return Destination(
        test=test,
        endpoint=endpoint,
        raw=raw,
        verdict=Verdict(rule),
        count=1,
        pids=(12345,),
        programs=programs,
        syscalls=("connect",),
        results=(("-1 ENETUNREACH", 1),),
    )


def strict(text: str) -> Allowlist:
    """The suggested allowlist with the built-ins off, so that only its own rules can allow."""
    suggested = loads(text)
    assert suggested.builtins, "the suggestions leave the built-ins as they are"
    return replace(suggested, builtins=False)


def test_a_violation_becomes_a_named_rule_for_its_address_and_port() -> None:
    text = suggest_rules([seen(Endpoint("AF_INET", "93.184.216.34", 443))])
    assert text.endswith(
        "version: 1\n"
        "allowlist:\n"
        "- name: AF_INET 93.184.216.34:443 (seen from tests/test_api.py::test_fetch_data)\n"
        "  family: AF_INET\n"
        "  addr: 93.184.216.34\n"
        "  port: 443\n"
    )
    assert text.startswith("# Suggested allowlist rules")


def test_no_violations_give_an_empty_allowlist_that_loads() -> None:
    text = suggest_rules([])
    assert "allowlist: []\n" in text
    assert loads(text).rules == ()


def test_allowed_destinations_are_skipped() -> None:
    allowed = seen(Endpoint("AF_INET", "127.0.0.1", 5432), rule="loopback (IPv4)")
    assert loads(suggest_rules([allowed])).rules == ()


def test_one_endpoint_seen_in_several_tests_is_one_rule_naming_the_first_test() -> None:
    endpoint = Endpoint("AF_INET", "3.33.146.76", 443)
    text = suggest_rules(
        [seen(endpoint, test="tests/b.py::t"), seen(endpoint, test="tests/a.py::t")]
    )
    (rule,) = loads(text).rules
    assert rule.name == "AF_INET 3.33.146.76:443 (seen from tests/a.py::t and 1 more)"


def test_outside_a_test_session_the_programs_name_the_rule() -> None:
    destination = seen(Endpoint("AF_INET6", "2001:db8::1", 53), test="", programs=("curl", "dig"))
    (rule,) = loads(suggest_rules([destination])).rules
    assert rule.name == "AF_INET6 [2001:db8::1]:53 (seen from curl and 1 more)"


def test_a_long_test_id_is_shortened_in_the_name() -> None:
    destination = seen(Endpoint("AF_INET", "192.0.2.1", 80), test="tests/t.py::test[" + "x" * 200)
    (rule,) = loads(suggest_rules([destination])).rules
    assert len(rule.name) < 120 and rule.name.endswith("...)")


def test_a_v4_mapped_endpoint_is_suggested_as_the_ipv4_rule() -> None:
    (rule,) = loads(suggest_rules([seen(Endpoint("AF_INET6", "::ffff:10.0.0.1", 80))])).rules
    assert (rule.family, str(rule.networks[0])) == ("AF_INET", "10.0.0.1/32")


def test_unix_paths_and_abstract_names_are_escaped_to_match_only_themselves() -> None:
    text = suggest_rules(
        [seen(Endpoint("AF_UNIX", "/tmp/a*b[1]?.sock")), seen(Endpoint("AF_UNIX", "@@app-*"))]
    )
    assert "  path: /tmp/a[*]b[[]1][?].sock\n" in text
    assert "  abstract: '[@]app-[*]'\n" in text
    allowlist = strict(text)
    assert allowlist.match(Endpoint("AF_UNIX", "/tmp/a*b[1]?.sock")) is not None
    assert allowlist.match(Endpoint("AF_UNIX", "/tmp/aXb1x.sock")) is None
    assert allowlist.match(Endpoint("AF_UNIX", "@@app-1")) is None


def test_names_with_line_break_characters_survive_the_round_trip() -> None:
    names = ["/tmp/\x85", "/tmp/\u2028", "/tmp/a\nb", "@\u2029", "/tmp/caf\u00e9", "@\x00"]
    allowlist = strict(suggest_rules([seen(Endpoint("AF_UNIX", name)) for name in names]))
    assert all(allowlist.match(Endpoint("AF_UNIX", name)) is not None for name in names)
    assert allowlist.match(Endpoint("AF_UNIX", "/tmp/ ")) is None


def test_what_no_rule_can_express_is_listed_in_comments_with_the_reason() -> None:
    text = suggest_rules(
        [
            seen(None, raw="connect(3, {sa_family=AF_INET, ...\x01"),
            seen(Endpoint("AF_PACKET", "sll_ifindex=1")),
            seen(Endpoint("INVALID", "0xdeadbeef")),
            seen(Endpoint("0x63 /* AF_??? */", 'sa_data="\\0"')),
            seen(Endpoint("AF_UNIX", "")),
            seen(Endpoint("AF_NETLINK", "pid=0")),
            seen(Endpoint("AF_INET", "not an address", 80)),
            seen(Endpoint("AF_INET", "192.0.2.1")),
        ]
    )
    assert loads(text).rules == ()
    comments = text[text.index("# Not allowed") :]
    assert comments == (
        "# Not allowed, and no rule can allow exactly these:\n"
        '#   0x63 /* AF_??? */ sa_data="\\\\0" (seen from tests/test_api.py::test_fetch_data)\n'
        "#     no rule can allow family 0x63 /* AF_??? */\n"
        "#   AF_INET 192.0.2.1 (seen from tests/test_api.py::test_fetch_data)\n"
        "#     no port was recorded, and a rule without a port allows every port\n"
        "#   AF_INET not an address:80 (seen from tests/test_api.py::test_fetch_data)\n"
        "#     'not an address' is not a well-formed AF_INET address\n"
        "#   AF_NETLINK pid=0 (seen from tests/test_api.py::test_fetch_data)\n"
        "#     rules cannot tell netlink sockets apart: only 'family: AF_NETLINK' (all) allows it\n"
        "#   AF_PACKET sll_ifindex=1 (seen from tests/test_api.py::test_fetch_data)\n"
        "#     no rule can allow family AF_PACKET\n"
        "#   AF_UNIX (unnamed) (seen from tests/test_api.py::test_fetch_data)\n"
        "#     unnamed: only a rule for all Unix sockets ('family: AF_UNIX' alone) allows it\n"
        "#   INVALID 0xdeadbeef (seen from tests/test_api.py::test_fetch_data)\n"
        "#     no rule can allow family INVALID\n"
        "#   UNPARSED connect(3, {sa_family=AF_INET, ...\\x01 "
        "(seen from tests/test_api.py::test_fetch_data)\n"
        "#     strace's line could not be parsed, so no rule can allow it\n"
    )


# --- the round trip, for generated destinations --------------------------------------------------

ports = st.integers(0, 65535)
ipv4 = st.builds(lambda ip, port: Endpoint("AF_INET", str(ip), port), st.ip_addresses(v=4), ports)
ipv6 = st.builds(
    lambda ip, port, scope: Endpoint("AF_INET6", str(ip), port, scope),
    st.ip_addresses(v=6) | st.ip_addresses(v=4).map(lambda ip: f"::ffff:{ip}"),
    ports,
    st.sampled_from(["0", "", "2"]),
)
names = st.text(
    st.sampled_from(list("ab/._-*?[]!@\\ \n")) | st.characters(), min_size=1, max_size=12
)
paths = names.filter(lambda name: not name.startswith("@")).map(lambda p: Endpoint("AF_UNIX", p))
abstract = names.map(lambda name: Endpoint("AF_UNIX", "@" + name))
endpoints = st.one_of(ipv4, ipv6, paths, abstract)
destinations = st.builds(
    seen,
    endpoints,
    test=st.sampled_from(["", "<session>", "tests/t.py::test_a", "tests/t.py::test_b[\n]"]),
    programs=st.lists(st.sampled_from(["python3", "/usr/bin/curl", "g\x00it"]), max_size=2).map(
        tuple
    ),
)


def key(endpoint: Endpoint) -> _Key:
    """What a rule distinguishes: the IP (v4-mapped as IPv4) and port, or the socket name."""
    ip = ip_of(endpoint)
    return (str(ip), endpoint.port) if ip is not None else (endpoint.family, endpoint.address)


def neighbours(endpoint: Endpoint) -> list[Endpoint]:
    """Endpoints one step away: another port or address, a longer or shorter name."""
    ip = ip_of(endpoint)
    if ip is not None:
        port = endpoint.port or 0
        near = [replace(endpoint, port=p) for p in (port - 1, port + 1) if 0 <= p <= 65535]
        family = "AF_INET" if ip.version == 4 else "AF_INET6"
        for step in (-1, 1):
            with contextlib.suppress(ipaddress.AddressValueError):
                near.append(Endpoint(family, str(ip + step), port))
        return near
    address = endpoint.address
    addresses = [address + "x", address + "/", "x" + address, address[:-1]]
    if address.startswith("@"):
        addresses += ["@x" + address[1:], address[1:]]
    else:
        addresses.append("@" + address)
    return [Endpoint("AF_UNIX", a) for a in addresses]


@settings(max_examples=200, deadline=None)
@given(st.lists(destinations, max_size=8))
def test_suggested_rules_allow_every_violation_and_nothing_more(seen: list[Destination]) -> None:
    allowlist = strict(suggest_rules(seen))
    keys = {key(d.endpoint) for d in seen if d.endpoint is not None}
    assert len(allowlist.rules) == len(keys)
    for destination in seen:
        assert destination.endpoint is not None
        assert allowlist.match(destination.endpoint) is not None
        for near in neighbours(destination.endpoint):
            if key(near) not in keys:
                assert allowlist.match(near) is None, near


@settings(max_examples=50, deadline=None)
@given(st.lists(destinations, max_size=6), st.randoms(use_true_random=False))
def test_suggestions_do_not_depend_on_the_order_destinations_arrive_in(
    seen: list[Destination], rng: Random
) -> None:
    shuffled = list(seen)
    rng.shuffle(shuffled)
    assert suggest_rules(shuffled) == suggest_rules(seen)


@settings(max_examples=100, deadline=None)
@given(st.text(), st.text().filter(lambda f: f not in ("AF_INET", "AF_INET6", "AF_UNIX")))
def test_any_unparsed_line_or_other_family_is_only_ever_a_comment(raw: str, family: str) -> None:
    text = suggest_rules([seen(None, raw=raw), seen(Endpoint(family, raw))])
    assert strict(text).rules == ()
    assert "\n# Not allowed, and no rule can allow exactly these:\n" in text


def test_a_system_resolver_is_allowed_only_to_the_tests_that_used_it_and_says_why() -> None:
    from netaudit.audit import judge

    resolver = Endpoint("AF_INET", "10.255.255.53", 53)
    used = [
        replace(seen(resolver, test), resolver=True)
        for test in ("tests/test_p.py::test_p[53]", "tests/test_a.py::test_a")
    ]
    text = suggest_rules(used)
    assert "- name: system resolver AF_INET 10.255.255.53:53 (seen from " in text
    assert "  tests:\n  - tests/test_a.py::test_a\n  - tests/test_p.py::test_p[53]\n" in text
    assert "# A rule for the system resolver" in text and "any name" in text
    allowlist = strict(text)
    assert all(d.verdict.allowed for d in judge(used, allowlist))
    other = replace(used[0], test="tests/test_b.py::test_b")
    assert not judge([other], allowlist)[0].verdict.allowed  # not for every test
