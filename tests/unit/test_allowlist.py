"""The allowlist DSL: what loads, what each rule allows, and how every mistake is reported."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import textwrap
from pathlib import Path
from typing import NoReturn

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from netaudit import allowlist as allowlist_module
from netaudit.allowlist import (
    BUILTIN_RULES,
    DEFAULT,
    Allowlist,
    Rule,
    glob_escape,
    load,
    loads,
)
from netaudit.errors import AllowlistError
from netaudit.model import Endpoint

#: The "Example allowlist" of the user's contract (spec/pytest-plugin.txt), verbatim.
SPEC_EXAMPLE = """\
version: 1
allowlist:
  - name: "Internal Postgres"
    family: AF_INET
    addr: 10.0.1.5
    port: 5432
  - name: "Redis cluster subnet"
    family: AF_INET
    cidr: 10.0.2.0/24
  - name: "IPv6 DNS"
    family: AF_INET6
    addr: "2001:4860:4860::8888"
"""

#: Every feature of the format in one file, used as the seed of the mutation fuzz test.
EVERYTHING = """\
version: 1
builtins: true
allowlist:
  - name: "dev servers"
    family: AF_INET
    addr: 127.0.0.1
    port: ["8000-8099", 22]
  - family: AF_INET6
    cidr: "2001:db8::/32"
  - name: docker
    family: AF_UNIX
    path: "/var/run/docker.sock"
  - name: "test abstract sockets"
    family: AF_UNIX
    abstract: "myapp-*"
  - family: AF_NETLINK
"""


def doc(text: str) -> Allowlist:
    return loads(textwrap.dedent(text), "allow.yaml")


def rule(family: str, body: str = "") -> Rule:
    """The single rule of a one-rule allowlist."""
    lines = f"- name: r\n  family: {family}\n" + textwrap.indent(textwrap.dedent(body), "  ")
    return loads("version: 1\nallowlist:\n" + lines).rules[0]


def inet(address: str, port: int = 443) -> Endpoint:
    return Endpoint("AF_INET", address, port)


def inet6(address: str, port: int = 443) -> Endpoint:
    return Endpoint("AF_INET6", address, port)


def unix(address: str) -> Endpoint:
    return Endpoint("AF_UNIX", address)


def allowed_by(allowlist: Allowlist, endpoint: Endpoint | None) -> str | None:
    found = allowlist.match(endpoint)
    return None if found is None else found.name


# --- the spec's example --------------------------------------------------------------------------


def test_the_spec_example_loads_unchanged_with_its_three_rules() -> None:
    allowlist = loads(SPEC_EXAMPLE, "netaudit.yaml")
    assert allowlist.path == "netaudit.yaml"
    assert allowlist.builtins is True
    assert allowlist.rules == (
        Rule(
            "Internal Postgres",
            "AF_INET",
            networks=(ipaddress.ip_network("10.0.1.5/32"),),
            ports=((5432, 5432),),
            source="netaudit.yaml",
            line=3,
        ),
        Rule(
            "Redis cluster subnet",
            "AF_INET",
            networks=(ipaddress.ip_network("10.0.2.0/24"),),
            source="netaudit.yaml",
            line=7,
        ),
        Rule(
            "IPv6 DNS",
            "AF_INET6",
            networks=(ipaddress.ip_network("2001:4860:4860::8888/128"),),
            source="netaudit.yaml",
            line=10,
        ),
    )


def test_the_spec_example_allows_what_it_says_and_reports_the_rule_names() -> None:
    allowlist = loads(SPEC_EXAMPLE)
    assert allowed_by(allowlist, inet("10.0.1.5", 5432)) == "Internal Postgres"
    assert allowed_by(allowlist, inet("10.0.1.5", 5433)) is None
    assert allowed_by(allowlist, inet("10.0.2.200", 6379)) == "Redis cluster subnet"
    assert allowed_by(allowlist, inet("10.0.3.1", 6379)) is None
    assert allowed_by(allowlist, inet6("2001:4860:4860::8888", 53)) == "IPv6 DNS"
    assert allowed_by(allowlist, inet("127.0.0.1", 5432)) == "loopback (IPv4)"
    assert allowed_by(allowlist, inet("93.184.216.34")) is None


def test_every_feature_loads_in_one_file() -> None:
    names = [r.name for r in loads(EVERYTHING).rules]
    assert names == [
        "dev servers",
        "AF_INET6 2001:db8::/32",
        "docker",
        "test abstract sockets",
        "AF_NETLINK (any)",
    ]


# --- IP rules ------------------------------------------------------------------------------------


def test_an_addr_rule_allows_that_address_only() -> None:
    r = rule("AF_INET", "addr: 10.0.1.5")
    assert r.matches(inet("10.0.1.5", 1))
    assert not r.matches(inet("10.0.1.6", 1))


def test_a_rule_without_addr_or_cidr_allows_every_address_of_its_family_only() -> None:
    r = rule("AF_INET6", "port: 53")
    assert r.matches(inet6("2001:db8::1", 53))
    assert not r.matches(inet("192.0.2.1", 53))


def test_a_cidr_rule_allows_its_whole_network() -> None:
    r = rule("AF_INET", "cidr: 10.0.2.0/24")
    assert r.matches(inet("10.0.2.0")) and r.matches(inet("10.0.2.255"))
    assert not r.matches(inet("10.0.3.0"))


def test_an_ipv6_rule_matches_whatever_way_the_address_is_written() -> None:
    r = rule("AF_INET6", 'addr: "2001:DB8:0:0::1"')
    assert r.matches(inet6("2001:db8::1"))


def test_the_scope_id_of_an_ipv6_endpoint_does_not_matter() -> None:
    assert rule("AF_INET6", 'addr: "fe80::1"').matches(Endpoint("AF_INET6", "fe80::1", 53, "2"))


@pytest.mark.parametrize(
    ("port", "inside", "outside"),
    [
        ("5432", [5432], [5431, 5433]),
        ('"5432"', [5432], [5431]),
        ('"8000-8099"', [8000, 8050, 8099], [7999, 8100]),
        ("8000-8099", [8000, 8099], [8100]),
        ('[22, "8000-8001"]', [22, 8000, 8001], [23, 8002]),
        ("0", [0], [1]),
        ('"0-65535"', [0, 65535], []),
    ],
)
def test_a_port_is_a_number_a_range_or_a_list(
    port: str, inside: list[int], outside: list[int]
) -> None:
    r = rule("AF_INET", f"port: {port}")
    assert all(r.matches(inet("192.0.2.1", p)) for p in inside)
    assert not any(r.matches(inet("192.0.2.1", p)) for p in outside)


def test_a_port_rule_does_not_match_an_endpoint_without_a_port() -> None:
    assert not rule("AF_INET", "port: 53").matches(Endpoint("AF_INET", "192.0.2.1"))


def test_an_ip_rule_does_not_match_a_malformed_ip_endpoint() -> None:
    assert not rule("AF_INET").matches(Endpoint("AF_INET", 'sa_data="\\25"'))


def test_a_v4_mapped_ipv6_endpoint_is_judged_as_the_ipv4_address_it_is() -> None:
    allowlist = loads(SPEC_EXAMPLE)
    assert allowed_by(allowlist, inet6("::ffff:10.0.1.5", 5432)) == "Internal Postgres"
    assert allowed_by(allowlist, inet6("::ffff:127.0.0.1", 5555)) == "loopback (IPv4)"
    assert not rule("AF_INET6").matches(inet6("::ffff:10.0.1.5"))


# --- Unix and netlink rules ----------------------------------------------------------------------


def test_a_path_rule_allows_that_path_only() -> None:
    r = rule("AF_UNIX", "path: /var/run/docker.sock")
    assert r.matches(unix("/var/run/docker.sock"))
    assert not r.matches(unix("/run/docker.sock"))
    assert not r.matches(unix("@/var/run/docker.sock"))
    assert not r.matches(unix(""))


@pytest.mark.parametrize(
    ("pattern", "inside", "outside"),
    [
        ("/run/*.sock", ["/run/a.sock", "/run/.sock"], ["/run/a/b.sock", "/run/a.socket"]),
        ("/run/**.sock", ["/run/a.sock", "/run/a/b/c.sock"], ["/tmp/a.sock"]),
        ("/tmp/**", ["/tmp/x", "/tmp/a/b"], ["/tmp"]),
        ("/run/?.sock", ["/run/a.sock"], ["/run/ab.sock", "/run//.sock"]),
        ("/run/[ab].sock", ["/run/a.sock", "/run/b.sock"], ["/run/c.sock"]),
        ("/run/[!ab].sock", ["/run/c.sock"], ["/run/a.sock", "/run//.sock"]),
        ("/run/[a-c]", ["/run/b"], ["/run/d"]),
        ("/run/[]]", ["/run/]"], ["/run/a"]),
        ("/run/[!]]", ["/run/a"], ["/run/]"]),
        ("/run/[*]", ["/run/*"], ["/run/a"]),
        ("/run/[[]x]", ["/run/[x]"], ["/run/x"]),
        ("/run/a.b+c(d)", ["/run/a.b+c(d)"], ["/run/aXb+c(d)"]),
        ("relative.sock", ["relative.sock"], ["/relative.sock", "x/relative.sock"]),
        ("/run/x\\*", ["/run/x\\", "/run/x\\abc"], ["/run/x*y/z"]),
    ],
)
def test_path_globs_do_not_cross_slashes_except_double_star(
    pattern: str, inside: list[str], outside: list[str]
) -> None:
    r = Rule("r", "AF_UNIX", paths=(pattern,))
    assert all(r.matches(unix(p)) for p in inside)
    assert not any(r.matches(unix(p)) for p in outside)


def test_abstract_globs_match_any_character_including_slashes() -> None:
    r = rule("AF_UNIX", 'abstract: "myapp-*"')
    assert r.matches(unix("@myapp-1"))
    assert r.matches(unix("@myapp-a/b\nc"))
    assert not r.matches(unix("@other"))
    assert not r.matches(unix("myapp-1"))


def test_an_abstract_name_starting_with_at_is_written_with_a_class() -> None:
    assert rule("AF_UNIX", 'abstract: "[@]x"').matches(unix("@@x"))


def test_a_unix_rule_without_path_or_abstract_allows_every_unix_socket() -> None:
    r = rule("AF_UNIX")
    assert all(r.matches(unix(a)) for a in ("/x", "@x", ""))
    assert not r.matches(inet("127.0.0.1"))


def test_an_unnamed_unix_socket_is_allowed_only_by_a_rule_for_every_unix_socket() -> None:
    assert not rule("AF_UNIX", "path: '*'").matches(unix(""))
    assert not rule("AF_UNIX", "abstract: '*'").matches(unix(""))


def test_a_netlink_rule_allows_every_netlink_socket() -> None:
    r = rule("AF_NETLINK")
    assert r.matches(Endpoint("AF_NETLINK", "pid=0"))
    assert not r.matches(unix("/x"))


@pytest.mark.parametrize(
    "text",
    ["plain", "a*b", "?", "[x]", "[!]", "**/x", "@lead", "@", "]", "a\\b", "\n\x00\udcff", ""],
)
def test_glob_escape_matches_exactly_its_text(text: str) -> None:
    pattern = glob_escape(text)
    as_path = Rule("r", "AF_UNIX", paths=(pattern,))
    as_abstract = Rule("r", "AF_UNIX", abstract=(pattern,))
    if text and not text.startswith("@"):
        assert as_path.matches(unix(text))
        assert not as_path.matches(unix(text + "x"))
    assert as_abstract.matches(unix("@" + text))
    assert not as_abstract.matches(unix("@" + text + "x"))


# --- derived names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "body", "name"),
    [
        ("AF_INET", "addr: 10.0.1.5\nport: 5432", "AF_INET 10.0.1.5:5432"),
        ("AF_INET", "addr: 10.0.1.5", "AF_INET 10.0.1.5"),
        ("AF_INET", "cidr: 10.0.2.0/24", "AF_INET 10.0.2.0/24"),
        ("AF_INET", "port: [80, 8000-8099]", "AF_INET *:80,8000-8099"),
        ("AF_INET", "", "AF_INET (any)"),
        ("AF_INET6", 'addr: "2001:db8::1"\nport: 443', "AF_INET6 [2001:db8::1]:443"),
        ("AF_UNIX", "path: /run/*.sock", "AF_UNIX /run/*.sock"),
        ("AF_UNIX", "abstract: myapp-*", "AF_UNIX @myapp-*"),
        ("AF_UNIX", "", "AF_UNIX (any)"),
        ("AF_NETLINK", "", "AF_NETLINK (any)"),
    ],
)
def test_a_rule_without_a_name_is_named_after_what_it_allows(
    family: str, body: str, name: str
) -> None:
    text = f"version: 1\nallowlist:\n- family: {family}\n" + textwrap.indent(body, "  ")
    assert loads(text).rules[0].name == name


# --- order, built-ins and the switch -------------------------------------------------------------


def test_the_first_matching_rule_in_file_order_wins() -> None:
    allowlist = doc(
        """\
        version: 1
        allowlist:
          - {name: narrow, family: AF_INET, addr: 10.0.0.1, port: 80}
          - {name: wide, family: AF_INET, cidr: 10.0.0.0/8}
        """
    )
    assert allowed_by(allowlist, inet("10.0.0.1", 80)) == "narrow"
    assert allowed_by(allowlist, inet("10.0.0.1", 81)) == "wide"


def test_user_rules_come_before_the_built_ins() -> None:
    allowlist = doc(
        """\
        version: 1
        allowlist:
          - {name: local postgres, family: AF_INET, addr: 127.0.0.1, port: 5432}
        """
    )
    assert allowed_by(allowlist, inet("127.0.0.1", 5432)) == "local postgres"
    assert allowed_by(allowlist, inet("127.0.0.1", 5433)) == "loopback (IPv4)"
    assert allowlist.all_rules() == allowlist.rules + BUILTIN_RULES


@pytest.mark.parametrize(
    ("endpoint", "name"),
    [
        (inet("127.0.0.1"), "loopback (IPv4)"),
        (inet("127.255.255.254"), "loopback (IPv4)"),
        (inet("0.0.0.0"), "loopback (IPv4)"),
        (inet6("::ffff:127.0.0.1"), "loopback (IPv4)"),
        (inet6("::ffff:0.0.0.0"), "loopback (IPv4)"),
        (inet6("::1"), "loopback (IPv6)"),
        (inet6("::"), "loopback (IPv6)"),
        (unix("/var/run/nscd/socket"), "Unix sockets"),
        (unix("@abstract"), "Unix sockets"),
        (unix(""), "Unix sockets"),
        (Endpoint("AF_NETLINK", "pid=0"), "Netlink"),
    ],
)
def test_the_built_ins_allow_the_local_host_unix_and_netlink(endpoint: Endpoint, name: str) -> None:
    assert allowed_by(DEFAULT, endpoint) == name


@pytest.mark.parametrize(
    "endpoint",
    [
        inet("128.0.0.1"),
        inet("0.0.0.1"),
        inet6("::2"),
        inet6("fe80::1"),
        Endpoint("AF_PACKET", "sll_protocol=htons(ETH_P_802_EX1)"),
        Endpoint("AF_UNSPEC", 'sa_data="\\0"'),
        Endpoint("0x63 /* AF_??? */", 'sa_data="\\0"'),
        Endpoint("INVALID", "0xdeadbeef"),
        Endpoint("INVALID", "NULL"),
        None,
    ],
)
def test_nothing_else_is_ever_allowed_by_the_built_ins(endpoint: Endpoint | None) -> None:
    assert DEFAULT.match(endpoint) is None


def test_builtins_false_switches_every_built_in_off() -> None:
    allowlist = doc("version: 1\nbuiltins: false\nallowlist: []\n")
    assert allowlist.builtins is False
    assert allowlist.all_rules() == ()
    assert allowed_by(allowlist, inet("127.0.0.1")) is None
    assert allowed_by(allowlist, unix("/var/run/nscd/socket")) is None


def test_the_allowlist_key_may_be_left_out_for_built_ins_only() -> None:
    assert doc("version: 1\n").all_rules() == BUILTIN_RULES


def test_the_default_allowlist_is_the_built_ins_only() -> None:
    assert (DEFAULT.rules, DEFAULT.path, DEFAULT.builtins) == ((), None, True)
    assert [r.name for r in DEFAULT.all_rules()] == [
        "loopback (IPv4)",
        "loopback (IPv6)",
        "Unix sockets",
        "Netlink",
    ]
    assert all(r.builtin for r in BUILTIN_RULES)


def test_a_rule_cannot_be_built_for_a_family_it_could_not_narrow() -> None:
    with pytest.raises(ValueError, match="AF_PACKET"):
        Rule("raw", "AF_PACKET")
    with pytest.raises(ValueError, match="narrows"):
        Rule("bad", "AF_UNIX", ports=((1, 1),))


# --- every mistake, with its exact message -------------------------------------------------------

BAD = [
    pytest.param(
        "version: 1\nallowlist: [\n",
        "allow.yaml:3: invalid YAML: expected the node content, but found '<stream end>' "
        "(while parsing a flow node)",
        id="bad-yaml",
    ),
    pytest.param(
        "version: 1\nallowlist:\n- name: x\n\tfamily: AF_INET\n",
        "allow.yaml:4: invalid YAML: found character '\\t' that cannot start any token "
        "(while scanning for the next token)",
        id="tab-indentation",
    ),
    pytest.param(
        "version: 1\n---\nversion: 1\n",
        "allow.yaml:2: invalid YAML: but found another document "
        "(expected a single document in the stream)",
        id="two-documents",
    ),
    pytest.param(
        "version: 1\x00\n",
        "allow.yaml:1: invalid YAML: unacceptable character #x0000: "
        "special characters are not allowed",
        id="nul-byte",
    ),
    pytest.param(
        "", "allow.yaml: the file is empty; an allowlist starts with 'version: 1'", id="empty"
    ),
    pytest.param(
        "# only a comment\n",
        "allow.yaml: the file is empty; an allowlist starts with 'version: 1'",
        id="comments-only",
    ),
    pytest.param(
        "- name: x\n  family: AF_INET\n",
        "allow.yaml:1: the top level is a list; an allowlist is a mapping with 'version: 1' and "
        "'allowlist:' (see docs/allowlist.md)",
        id="top-level-list",
    ),
    pytest.param(
        "hello\n",
        "allow.yaml:1: the top level is a string 'hello'; an allowlist is a mapping with "
        "'version: 1' and 'allowlist:' (see docs/allowlist.md)",
        id="top-level-string",
    ),
    pytest.param(
        "allowlist: []\n",
        "allow.yaml:1: missing 'version: 1' at the top level",
        id="missing-version",
    ),
    pytest.param(
        "version: 2\nallowlist: []\n",
        "allow.yaml:1: unsupported version 2; this netaudit reads version 1",
        id="version-2",
    ),
    pytest.param(
        'version: "1"\n',
        "allow.yaml:1: 'version' must be the number 1, not a string '1'",
        id="version-string",
    ),
    pytest.param(
        "version: 1.0\n",
        "allow.yaml:1: 'version' must be the number 1, not a floating-point number '1.0'",
        id="version-float",
    ),
    pytest.param(
        "version: 1\nallowlists: []\n",
        "allow.yaml:2: unknown key 'allowlists' at the top level (did you mean 'allowlist'?)",
        id="unknown-top-level-key-typo",
    ),
    pytest.param(
        "version: 1\nrules: []\n",
        "allow.yaml:2: unknown key 'rules' at the top level (valid: version, builtins, allowlist)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        "version: 1\nallowlist: []\nallowlist: []\n",
        "allow.yaml:3: duplicate key 'allowlist' at the top level (first at line 2)",
        id="duplicate-top-level-key",
    ),
    pytest.param(
        "version: 1\n1: x\n",
        "allow.yaml:2: a key at the top level is a number '1'; keys must be strings",
        id="number-key",
    ),
    pytest.param(
        "version: 1\nbuiltins: yes\n",
        "allow.yaml:2: 'builtins' must be true or false, not 'yes'",
        id="builtins-yes",
    ),
    pytest.param(
        'version: 1\nbuiltins: "false"\n',
        "allow.yaml:2: 'builtins' must be true or false, not a string 'false'",
        id="builtins-string",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  name: x\n",
        "allow.yaml:3: 'allowlist' must be a list of rules, not a mapping",
        id="allowlist-mapping",
    ),
    pytest.param(
        "version: 1\nallowlist:\n",
        "allow.yaml:2: 'allowlist' must be a list of rules, not empty",
        id="allowlist-null",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - AF_INET 10.0.0.1\n",
        "allow.yaml:3: rule #1 must be a mapping of keys, not a string 'AF_INET 10.0.0.1'",
        id="rule-not-mapping",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    adr: 10.0.0.1\n",
        "allow.yaml:5: unknown key 'adr' in rule 'x' (did you mean 'addr'?)",
        id="unknown-rule-key-typo",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - family: AF_INET\n    protocol: tcp\n",
        "allow.yaml:4: unknown key 'protocol' in rule #1 "
        "(valid: name, family, host, addr, cidr, port, path, abstract, tests)",
        id="unknown-rule-key",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    port: 1\n    port: 2\n",
        "allow.yaml:6: duplicate key 'port' in rule 'x' (first at line 5)",
        id="duplicate-rule-key",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: 42\n    family: AF_INET\n",
        "allow.yaml:3: 'name' must be a string (quote it), not a number '42' in rule #1",
        id="name-number",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: no\n    family: AF_INET\n",
        "allow.yaml:3: 'name' must be a string (quote it), not a boolean 'no' in rule #1",
        id="name-boolean",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name:\n    family: AF_INET\n",
        "allow.yaml:3: 'name' must be a string (quote it), not empty in rule #1",
        id="name-null",
    ),
    pytest.param(
        'version: 1\nallowlist:\n  - name: ""\n    family: AF_INET\n',
        "allow.yaml:3: 'name' is an empty string in rule #1",
        id="name-empty",
    ),
    pytest.param(
        'version: 1\nallowlist:\n  - name: "a\\tb"\n    family: AF_INET\n',
        "allow.yaml:3: 'name' 'a\\tb' holds a control character in rule 'a\\tb'",
        id="name-control-character",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    addr: 10.0.0.1\n",
        "allow.yaml:3: missing 'family' in rule 'x' "
        "(one of AF_INET, AF_INET6, AF_UNIX, AF_NETLINK)",
        id="missing-family",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_PACKET\n",
        "allow.yaml:4: unknown family 'AF_PACKET' in rule 'x' "
        "(a rule can name AF_INET, AF_INET6, AF_UNIX, AF_NETLINK)",
        id="unknown-family",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: af_inet\n",
        "allow.yaml:4: unknown family 'af_inet' in rule 'x' "
        "(a rule can name AF_INET, AF_INET6, AF_UNIX, AF_NETLINK)",
        id="lowercase-family",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    addr: 10.0.0.1\n"
        "    cidr: 10.0.0.0/8\n",
        "allow.yaml:6: both 'addr' and 'cidr' in rule 'x'; use one",
        id="addr-with-cidr",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    addr: 2001:db8::1\n",
        "allow.yaml:5: addr '2001:db8::1' is IPv6 but the family is AF_INET in rule 'x' "
        "(use AF_INET6)",
        id="ipv6-addr-under-af-inet",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET6\n    cidr: 10.0.0.0/8\n",
        "allow.yaml:5: cidr '10.0.0.0/8' is IPv4 but the family is AF_INET6 in rule 'x' "
        "(use AF_INET)",
        id="ipv4-cidr-under-af-inet6",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET6\n    addr: ::ffff:10.0.0.1\n",
        "allow.yaml:5: addr '::ffff:10.0.0.1' is IPv4-mapped in rule 'x' "
        "(such calls are audited as AF_INET: write family AF_INET, addr 10.0.0.1)",
        id="v4-mapped-addr",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET6\n"
        "    cidr: ::ffff:10.0.0.0/104\n",
        "allow.yaml:5: cidr '::ffff:10.0.0.0/104' is IPv4-mapped in rule 'x' "
        "(such calls are audited as AF_INET: write family AF_INET, cidr 10.0.0.0/8)",
        id="v4-mapped-cidr",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    addr: 10.0.0.256\n",
        "allow.yaml:5: invalid IP address '10.0.0.256' in rule 'x'",
        id="invalid-address",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    addr: 10.0.1.5/24\n",
        "allow.yaml:5: invalid IP address '10.0.1.5/24' in rule 'x' "
        "(addr is one address; write a network as cidr)",
        id="network-as-addr",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    addr: example.com\n",
        "allow.yaml:5: invalid IP address 'example.com' in rule 'x'",
        id="host-name-address",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    addr: 167772161\n",
        "allow.yaml:5: 'addr' must be an IP address (quote IPv6 addresses), "
        "not a number '167772161' in rule 'x'",
        id="integer-address",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET6\n    addr: 1:2:3:4:5:6:7:8\n",
        "allow.yaml:5: 'addr' must be an IP address (quote IPv6 addresses), "
        "not a number '1:2:3:4:5:6:7:8' in rule 'x'",
        id="unquoted-ipv6-read-as-base-60",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    addr: 1e3\n",
        "allow.yaml:5: invalid IP address '1e3' in rule 'x'",
        id="exponent-address",
    ),
    pytest.param(
        'version: 1\nallowlist:\n  - name: x\n    family: AF_INET6\n    addr: "fe80::1%eth0"\n',
        "allow.yaml:5: addr 'fe80::1%eth0' has a scope id in rule 'x' (leave '%...' out)",
        id="scoped-address",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    addr:\n",
        "allow.yaml:5: 'addr' must be an IP address (quote IPv6 addresses), not empty in rule 'x'",
        id="null-address",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    cidr: 10.0.2.1/24\n",
        "allow.yaml:5: cidr '10.0.2.1/24' has host bits set in rule 'x' "
        "(did you mean 10.0.2.0/24?)",
        id="cidr-host-bits",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    cidr: 10.0.2.0\n",
        "allow.yaml:5: cidr '10.0.2.0' has no prefix length in rule 'x' (use addr for one address)",
        id="cidr-without-prefix",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    cidr: 10.0.2.0/33\n",
        "allow.yaml:5: invalid network '10.0.2.0/33' in rule 'x'",
        id="cidr-bad-prefix",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    port: 70000\n",
        "allow.yaml:5: port 70000 is out of range 0-65535 in rule 'x'",
        id="port-too-big",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    port: -1\n",
        "allow.yaml:5: port -1 is negative in rule 'x' (ports are 0-65535)",
        id="port-negative",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    port: 80.0\n",
        "allow.yaml:5: 'port' must be a port number, a range \"lo-hi\" or a list of them, "
        "not a floating-point number '80.0' in rule 'x'",
        id="port-float",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    port: yes\n",
        "allow.yaml:5: 'port' must be a port number, a range \"lo-hi\" or a list of them, "
        "not a boolean 'yes' in rule 'x'",
        id="port-yes",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    port: 010\n",
        "allow.yaml:5: port 010 is not a plain decimal number in rule 'x' "
        "(YAML would read it as 8; write ports in plain decimal)",
        id="port-octal",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    port: 1:30\n",
        "allow.yaml:5: port 1:30 is not a plain decimal number in rule 'x' "
        "(YAML would read it as 90; write ports in plain decimal)",
        id="port-base-60",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    port: 0x50\n",
        "allow.yaml:5: port 0x50 is not a plain decimal number in rule 'x' "
        "(YAML would read it as 80; write ports in plain decimal)",
        id="port-hex",
    ),
    pytest.param(
        'version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    port: "9000-8000"\n',
        "allow.yaml:5: port range '9000-8000' runs backwards in rule 'x' (write '8000-9000')",
        id="port-range-backwards",
    ),
    pytest.param(
        'version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    port: "80-90000"\n',
        "allow.yaml:5: port 90000 is out of range 0-65535 in rule 'x'",
        id="port-range-too-big",
    ),
    pytest.param(
        'version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    port: "80 - 90"\n',
        "allow.yaml:5: invalid port '80 - 90' in rule 'x' "
        '(a port number, a range "lo-hi" or a list of them)',
        id="port-range-spaces",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    port: []\n",
        "allow.yaml:5: 'port' is an empty list in rule 'x' (leave it out for any port)",
        id="port-empty-list",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    port:\n      - 80\n"
        "      - [81]\n",
        "allow.yaml:7: 'port' must be a port number, a range \"lo-hi\" or a list of them, "
        "not a list in rule 'x'",
        id="port-nested-list",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    port:\n",
        "allow.yaml:5: 'port' must be a port number, a range \"lo-hi\" or a list of them, "
        "not empty in rule 'x'",
        id="port-null",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_UNIX\n    port: 80\n",
        "allow.yaml:5: 'port' does not apply to AF_UNIX in rule 'x' "
        "(host, addr, cidr and port are for AF_INET and AF_INET6 rules)",
        id="port-on-unix",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_NETLINK\n    port: 80\n",
        "allow.yaml:5: 'port' does not apply to AF_NETLINK in rule 'x' "
        "(host, addr, cidr and port are for AF_INET and AF_INET6 rules)",
        id="port-on-netlink",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    path: /run/x.sock\n",
        "allow.yaml:5: 'path' does not apply to AF_INET in rule 'x' "
        "(path and abstract are for AF_UNIX rules)",
        id="path-on-inet",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_UNIX\n    path: /a\n    abstract: b\n",
        "allow.yaml:6: both 'path' and 'abstract' in rule 'x'; use one",
        id="path-with-abstract",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_UNIX\n    path: '/run/[x'\n",
        "allow.yaml:5: bad glob '/run/[x' in rule 'x': '[' is not closed "
        "(write '[[]' for a literal '[')",
        id="glob-unclosed-class",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_UNIX\n    path: '/run/[z-a]'\n",
        "allow.yaml:5: bad glob '/run/[z-a]' in rule 'x': range 'z-a' in '[...]' runs backwards",
        id="glob-backwards-range",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_UNIX\n    path: '@x'\n",
        "allow.yaml:5: path '@x' starts with '@' in rule 'x' "
        "(use 'abstract' for abstract names; '[@]' is a literal @)",
        id="path-looks-abstract",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_UNIX\n    abstract: '@x'\n",
        "allow.yaml:5: abstract '@x' starts with '@' in rule 'x' "
        "(write the name without it; '[@]' is a literal @)",
        id="abstract-with-at",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_UNIX\n    path: ''\n",
        "allow.yaml:5: 'path' is an empty string in rule 'x'",
        id="path-empty",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_UNIX\n    path: [/a, /b]\n",
        "allow.yaml:5: 'path' must be a string (a path or glob), not a list in rule 'x'",
        id="path-list",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_NETLINK\n"
        "  - name: x\n    family: AF_UNIX\n",
        "allow.yaml:5: duplicate rule name 'x' (first at line 3); names must differ",
        id="duplicate-rule-name",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - family: AF_INET\n    addr: 10.0.0.1\n"
        "  - family: AF_INET\n    addr: 10.0.0.1\n",
        "allow.yaml:5: duplicate rule name 'AF_INET 10.0.0.1' (first at line 3); names must differ",
        id="duplicate-unnamed-rule",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: Unix sockets\n    family: AF_UNIX\n    path: /x\n",
        "allow.yaml:3: rule name 'Unix sockets' is taken by a built-in rule; choose another",
        id="built-in-name",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: !custom AF_INET\n",
        "allow.yaml:4: 'family' must be a family name, not a value tagged !custom 'AF_INET' "
        "in rule 'x'",
        id="custom-tag",
    ),
    pytest.param(
        "version: 1\nallowlist:\n  - name: x\n    family: AF_INET\n    <<: {port: 80}\n",
        "allow.yaml:5: merge keys ('<<') in rule 'x' are not supported; write keys out",
        id="merge-key",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_a_bad_allowlist_is_one_error_naming_file_line_and_rule(text: str, message: str) -> None:
    with pytest.raises(AllowlistError) as raised:
        loads(text, "allow.yaml")
    assert str(raised.value) == message


def test_an_allowlist_error_carries_its_path_and_line() -> None:
    with pytest.raises(AllowlistError) as raised:
        loads("version: 1\nallowlist:\n  - {name: x, family: AF_INET, port: yes}\n", "a.yaml")
    assert (raised.value.path, raised.value.line) == ("a.yaml", 3)


def test_too_deep_nesting_is_an_allowlist_error() -> None:
    with pytest.raises(AllowlistError, match="nested too deeply"):
        loads("[" * 5000)


# --- reading files -------------------------------------------------------------------------------


def test_load_reads_the_file_and_records_where_each_rule_came_from(tmp_path: Path) -> None:
    path = tmp_path / "netaudit.yaml"
    path.write_text(SPEC_EXAMPLE)
    allowlist = load(path)
    assert allowlist.path == str(path)
    assert [(r.source, r.line) for r in allowlist.rules] == [(str(path), n) for n in (3, 7, 10)]


def test_a_missing_file_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(AllowlistError) as raised:
        load(path)
    assert str(raised.value) == f"{path}: no such file; create it or name an existing one"


def test_a_directory_is_not_an_allowlist(tmp_path: Path) -> None:
    with pytest.raises(AllowlistError) as raised:
        load(tmp_path)
    assert str(raised.value) == f"{tmp_path}: is a directory; name the allowlist file itself"


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (PermissionError(errno.EACCES, "Permission denied"), "permission denied; make it readable"),
        (OSError(errno.EIO, "Input/output error"), "cannot be read: Input/output error"),
    ],
)
def test_an_unreadable_file_says_why(
    monkeypatch: pytest.MonkeyPatch, error: OSError, message: str
) -> None:
    # A fake open(): the tests run as root, which can read any file.
    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise error

    monkeypatch.setattr(allowlist_module, "open", refuse, raising=False)
    with pytest.raises(AllowlistError) as raised:
        load("netaudit.yaml")
    assert str(raised.value) == f"netaudit.yaml: {message}"


def test_a_file_that_is_not_utf8_says_so_and_where(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\n# caf\xe9\n")
    with pytest.raises(AllowlistError) as raised:
        load(path)
    assert str(raised.value) == f"{path}:2: not UTF-8 text; save the file as UTF-8"


def test_an_error_inside_a_file_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "netaudit.yaml"
    path.write_text(SPEC_EXAMPLE.replace("port: 5432", "port: 5432.0"))
    with pytest.raises(AllowlistError, match=rf"^{path}:6: 'port' must be"):
        load(path)


# --- fuzzing: nothing but AllowlistError ---------------------------------------------------------


def loads_or_allowlist_error(text: str) -> None:
    with contextlib.suppress(AllowlistError):
        loads(text)


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("version:1 allowlist-[]{}#&*!|>'\"%@,?\n\t\\AF_INET6.0/x"))
    )
)
def test_yaml_ish_text_never_raises_anything_but_allowlist_error(text: str) -> None:
    loads_or_allowlist_error(text)


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_arbitrary_text_never_raises_anything_but_allowlist_error(text: str) -> None:
    loads_or_allowlist_error(text)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(EVERYTHING)),
            st.integers(0, 4),
            st.sampled_from(
                [
                    "",
                    " ",
                    "\n",
                    ":",
                    "-",
                    "[",
                    "]",
                    "{",
                    "'",
                    '"',
                    "#",
                    "*",
                    "&a",
                    "!!",
                    "0",
                    "x",
                    "\t",
                ]
            ),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_valid_documents_never_raise_anything_but_allowlist_error(
    edits: list[tuple[int, int, str]],
) -> None:
    text = EVERYTHING
    for at, cut, insert in edits:
        text = text[:at] + insert + text[at + cut :]
    loads_or_allowlist_error(text)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.sampled_from(["AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK", "10.0.0.1", "::1", "1-2"]),
)
keys = st.sampled_from(
    [
        "version",
        "builtins",
        "allowlist",
        "name",
        "family",
        "addr",
        "cidr",
        "port",
        "path",
        "abstract",
        "x",
    ]
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, max_size=4))
def test_arbitrary_yaml_structures_never_raise_anything_but_allowlist_error(
    data: dict[str, object],
) -> None:
    loads_or_allowlist_error(yaml.safe_dump(data))
