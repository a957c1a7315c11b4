"""Per-test policy: the netaudit marker's arguments, rules scoped to tests, and how a test's
calls are judged with both."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from netaudit.allowlist import loads
from netaudit.audit import judge
from netaudit.cli import main
from netaudit.errors import AllowlistError
from netaudit.model import SESSION, AuditResult, Destination, Endpoint, RunInfo, Verdict
from netaudit.policy import TestPolicy, from_wire, normalise, policies, short_rule
from netaudit.render import text
from netaudit.render.json import to_json
from netaudit.rules import DEFAULT, Allowlist, scope_matches

DOC = Endpoint("AF_INET", "192.0.2.10", 53)
PG = Endpoint("AF_INET", "10.0.0.5", 5432)
V6 = Endpoint("AF_INET6", "2001:db8::1", 443)
DOCKER = Endpoint("AF_UNIX", "/run/docker.sock")
LOOP = Endpoint("AF_INET", "127.0.0.1", 9)

Marks = Sequence[tuple[Sequence[object], Mapping[str, object]]]


def marker(*kwargs: Mapping[str, object]) -> TestPolicy:
    """The policy of a test whose markers (closest first) have these keyword arguments."""
    wire = normalise([((), k) for k in kwargs], "tests/test_x.py", 7)
    assert wire is not None
    # What the judging side gets: the wire form, through JSON, as the supervisor carries it.
    return from_wire(json.loads(json.dumps(wire)), "tests/test_x.py::test_y", "tests/test_x.py", 7)


def like(text: str, pattern: str) -> bool:
    """``pattern`` with ``*`` for any text, and nothing else special (messages hold brackets)."""
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), text, re.DOTALL) is not None


def dest(endpoint: Endpoint, test: str = "tests/test_x.py::test_y") -> Destination:
    return Destination(test, endpoint, "", Verdict(None), 1, (1,), ("python3",), ("connect",), ())


@pytest.mark.parametrize(
    ("short", "allowed", "refused"),
    [
        ("10.0.0.5:5432", PG, Endpoint("AF_INET", "10.0.0.5", 5433)),
        ("10.0.0.5", Endpoint("AF_INET", "10.0.0.5", 1), Endpoint("AF_INET", "10.0.0.6", 5432)),
        ("10.0.0.0/8", PG, Endpoint("AF_INET", "11.0.0.5", 5432)),
        ("10.0.0.5:5000-6000", PG, Endpoint("AF_INET", "10.0.0.5", 6001)),
        ("[2001:db8::1]:443", V6, Endpoint("AF_INET6", "2001:db8::1", 80)),
        ("2001:db8::1", V6, Endpoint("AF_INET6", "2001:db8::2", 443)),
        ("2001:db8::/32", V6, Endpoint("AF_INET6", "2001:db9::1", 443)),
        ("AF_UNIX:/run/docker.sock", DOCKER, Endpoint("AF_UNIX", "/run/other.sock")),
        ("AF_UNIX:@app-*", Endpoint("AF_UNIX", "@app-1"), Endpoint("AF_UNIX", "/app-1")),
        ("AF_UNIX", DOCKER, PG),
        ("AF_NETLINK", Endpoint("AF_NETLINK", "pid=0"), DOCKER),
    ],
)
def test_a_short_string_allows_what_the_same_allowlist_rule_would(
    short: str, allowed: Endpoint, refused: Endpoint
) -> None:
    (rule,) = marker({"allow": [short]}).allow
    assert rule.matches(allowed)
    assert not rule.matches(refused)
    # The very rule the allowlist file would make of the dict the string stands for.
    as_file = loads(json.dumps({"version": 1, "allowlist": [short_rule(short, 1, "f", 1)]}))
    assert as_file.rules[0].matches(allowed) and not as_file.rules[0].matches(refused)


@pytest.mark.parametrize(
    ("short", "name", "refused_name"),
    [
        ("api.example.test:443", "api.example.test", "www.example.test"),
        ("*.example.test:443", "a.b.example.test", "example.test"),
    ],
)
def test_a_short_host_name_is_a_host_rule(short: str, name: str, refused_name: str) -> None:
    (rule,) = marker({"allow": [short]}).allow
    assert rule.matches(V6, frozenset({name}))
    assert not rule.matches(V6, frozenset({refused_name}))
    assert not rule.matches(Endpoint("AF_INET6", "2001:db8::1", 80), frozenset({name}))
    assert not rule.matches(V6)  # a host rule needs the name the trace saw


def test_inline_dicts_use_the_allowlist_syntax_and_name_the_marker() -> None:
    rules = marker(
        {"allow": [{"name": "pg", "family": "AF_INET", "addr": "10.0.0.5", "port": (5432, 6432)}]}
    ).allow
    assert [r.name for r in rules] == ["pg (marker on tests/test_x.py::test_y)"]
    assert rules[0].matches(PG) and rules[0].matches(Endpoint("AF_INET", "10.0.0.5", 6432))
    assert (rules[0].source, rules[0].line) == ("tests/test_x.py", 7)


def test_allow_adds_up_across_levels_and_the_closest_strict_wins() -> None:
    policy = marker(
        {"allow": ["10.0.0.5:5432"], "strict": False},  # the function's
        {"allow": ["10.0.0.5:5432", "AF_UNIX:/run/docker.sock"], "strict": True},  # the class's
        {"strict": True},  # the module's
    )
    assert [r.name for r in policy.allow] == [
        "AF_INET 10.0.0.5:5432 (marker on tests/test_x.py::test_y)",
        "AF_UNIX /run/docker.sock (marker on tests/test_x.py::test_y)",
    ]
    assert policy.strict is False
    assert marker({}, {"strict": True}).strict is True


def test_a_test_without_a_marker_has_no_policy() -> None:
    assert normalise([], "tests/test_x.py", 7) is None


BAD_MARKERS = [
    pytest.param(
        (("10.0.0.5:5432",), {}),
        "tests/test_x.py:7: the netaudit marker takes keyword arguments only: "
        "netaudit(allow=[...]) or netaudit(strict=True)",
        id="positional",
    ),
    pytest.param(
        ((), {"alow": []}),
        "tests/test_x.py:7: unknown argument 'alow' to the netaudit marker "
        "(it takes allow, strict)",
        id="unknown-argument",
    ),
    pytest.param(
        ((), {"strict": "yes"}),
        "tests/test_x.py:7: strict= of the netaudit marker must be True or False, not 'yes'",
        id="strict-not-bool",
    ),
    pytest.param(
        ((), {"allow": "10.0.0.5:5432"}),
        "tests/test_x.py:7: allow= of the netaudit marker must be a list, not str "
        "(write allow=['10.0.0.5:5432'])",
        id="allow-not-a-list",
    ),
    pytest.param(
        ((), {"allow": [5432]}),
        "tests/test_x.py:7: entry #1 of the netaudit marker's allow is int; write a rule dict*",
        id="entry-not-str-or-dict",
    ),
    pytest.param(
        ((), {"allow": ["10.0.0.256:5432"]}),
        "tests/test_x.py:7: entry #1 of the netaudit marker's allow, '10.0.0.256:5432': "
        "'10.0.0.256' is not an IP address or a host name (short forms: *",
        id="bad-address",
    ),
    pytest.param(
        ((), {"allow": ["db.*.internal:5432"]}),
        "tests/test_x.py:7: the netaudit marker's allow: host 'db.*.internal' has a '*' that is "
        "not its first label*",
        id="bad-host",
    ),
    pytest.param(
        ((), {"allow": ["10.0.0.5:"]}),
        "tests/test_x.py:7: entry #1 of the netaudit marker's allow, '10.0.0.5:': "
        "no port after ':'*",
        id="empty-port",
    ),
    pytest.param(
        ((), {"allow": ["[2001:db8::1:443"]}),
        "tests/test_x.py:7: entry #1 * an IPv6 address in [...] is not closed*",
        id="unclosed-bracket",
    ),
    pytest.param(
        ((), {"allow": ["AF_NETLINK:0"]}),
        "tests/test_x.py:7: entry #1 * AF_NETLINK takes nothing after it*",
        id="netlink-address",
    ),
    pytest.param(
        ((), {"allow": ["10.0.0.5:99999"]}),
        "tests/test_x.py:7: the netaudit marker's allow: port 99999 is out of range 0-65535 "
        "in entry #1",
        id="port-range",
    ),
    pytest.param(
        ((), {"allow": ["10.0.0.0/8:1", {"family": "AF_INET", "addr": "10.0.0.5", "path": "/x"}]}),
        "tests/test_x.py:7: the netaudit marker's allow: 'path' does not apply to AF_INET "
        "in entry #2 (path and abstract are for AF_UNIX rules)",
        id="dict-key-for-another-family",
    ),
    pytest.param(
        ((), {"allow": [{"family": "AF_INET", "adr": "10.0.0.5"}]}),
        "tests/test_x.py:7: the netaudit marker's allow: unknown key 'adr' in entry #1 "
        "(did you mean 'addr'?)",
        id="dict-unknown-key",
    ),
    pytest.param(
        ((), {"allow": [{"family": "AF_INET", "port": object()}]}),
        "tests/test_x.py:7: the netaudit marker's allow: each allowed destination must be "
        "a string or a dict of strings and numbers",
        id="dict-value-not-yaml",
    ),
    pytest.param(
        ((), {"allow": [{"family": "AF_INET", "tests": ["x"]}]}),
        "tests/test_x.py:7: the netaudit marker's allow: 'tests' in 'AF_INET (any) for x' "
        "does not apply to a marker (it is for this test)",
        id="dict-with-tests",
    ),
    pytest.param(
        ((), {"allow": [{"name": "a", "family": "AF_UNIX"}, {"name": "a", "family": "AF_INET"}]}),
        "tests/test_x.py:7: the netaudit marker's allow: duplicate rule name 'a'; "
        "names must differ",
        id="duplicate-names",
    ),
]


@pytest.mark.parametrize(("mark", "message"), BAD_MARKERS)
def test_a_bad_marker_is_one_error_at_the_tests_file_and_line(
    mark: tuple[Sequence[object], Mapping[str, object]], message: str
) -> None:
    with pytest.raises(AllowlistError) as raised:
        normalise([mark], "tests/test_x.py", 7)
    assert like(str(raised.value), message), str(raised.value)


def test_a_marker_allows_for_its_own_test_only() -> None:
    policy = marker({"allow": ["192.0.2.10:53"]})
    mine, other = dest(DOC), dest(DOC, "tests/test_x.py::test_other")
    judged = judge([mine, other, dest(DOC, SESSION)], DEFAULT, {mine.test: policy})
    assert [d.verdict for d in judged] == [
        Verdict("AF_INET 192.0.2.10:53 (marker on tests/test_x.py::test_y)", "marker"),
        Verdict(None),
        Verdict(None),
    ]


def test_strict_switches_the_builtins_off_for_its_test_only() -> None:
    strict = marker({"strict": True})
    judged = judge([dest(LOOP), dest(LOOP, "t::other")], DEFAULT, {dest(LOOP).test: strict})
    assert [d.verdict for d in judged] == [Verdict(None), Verdict("loopback (IPv4)", "builtin")]


def test_strict_keeps_the_allowlists_rules_and_the_markers_own() -> None:
    allowlist = loads(
        "version: 1\nallowlist:\n  - name: pg\n    family: AF_INET\n    addr: 10.0.0.5\n"
    )
    policy = marker({"allow": ["127.0.0.1:9"], "strict": True})
    judged = judge([dest(PG), dest(LOOP)], allowlist, {dest(PG).test: policy})
    assert [d.verdict for d in judged] == [
        Verdict("pg", "allowlist"),
        Verdict("AF_INET 127.0.0.1:9 (marker on tests/test_x.py::test_y)", "marker"),
    ]


def test_policies_come_back_from_the_supervisors_json_with_the_tests_location() -> None:
    wire = normalise([((), {"allow": ["10.0.0.5:5432"]})], "t.py", 3)
    found = policies([("t.py::a", json.dumps(wire))], {"t.py::a": "t.py:3"})
    (rule,) = found["t.py::a"].allow
    assert (rule.name, rule.source, rule.line) == (
        "AF_INET 10.0.0.5:5432 (marker on t.py::a)",
        "t.py",
        3,
    )


SCOPED = """\
version: 1
allowlist:
  - name: pg for integration
    family: AF_INET
    addr: 10.0.0.5
    tests: ["tests/integration/*"]
  - family: AF_INET
    cidr: 192.0.2.0/24
    tests: "<session>"
  - family: AF_UNIX
    path: /run/docker.sock
    tests: ["*::test_docker*", "tests/e2e/test_[ab].py::*"]
"""


def scoped() -> Allowlist:
    return loads(SCOPED, "allow.yaml")


def test_scoped_rules_load_with_their_globs_and_a_name_that_says_so() -> None:
    rules = scoped().rules
    assert [(r.name, r.tests) for r in rules] == [
        ("pg for integration", ("tests/integration/*",)),
        ("AF_INET 192.0.2.0/24 for <session>", ("<session>",)),
        (
            "AF_UNIX /run/docker.sock for *::test_docker*, tests/e2e/test_[ab].py::*",
            ("*::test_docker*", "tests/e2e/test_[ab].py::*"),
        ),
    ]


@pytest.mark.parametrize(
    ("test", "endpoint", "rule"),
    [
        ("tests/integration/test_db.py::test_q", PG, "pg for integration"),
        ("tests/integration/sub/test_db.py::TestQ::test_q[1]", PG, "pg for integration"),
        ("tests/unit/test_db.py::test_q", PG, None),
        (SESSION, PG, None),
        ("", PG, None),  # netaudit run and analyze: no tests, so no scoped rule applies
        (SESSION, DOC, "AF_INET 192.0.2.0/24 for <session>"),
        ("tests/test_x.py::test_y", DOC, None),
        ("tests/a/test_k.py::TestK::test_docker_up", DOCKER, "AF_UNIX /run/docker.sock for *"),
        ("tests/e2e/test_b.py::test_x", DOCKER, "AF_UNIX /run/docker.sock for *"),
        ("tests/e2e/test_c.py::test_x", DOCKER, "Unix sockets"),
    ],
)
def test_a_scoped_rule_allows_only_events_of_matching_tests(
    test: str, endpoint: Endpoint, rule: str | None
) -> None:
    (judged,) = judge([dest(endpoint, test)], scoped())
    found = judged.verdict.rule
    assert found == rule or (rule is not None and found is not None and found.startswith(rule[:-1]))


@pytest.mark.parametrize(
    ("scope", "test", "matches"),
    [
        ("tests/sub/", "tests/sub/test_deep.py::test_x", True),
        ("tests/sub", "tests/sub/deeper/test_deep.py::TestC::test_x", True),
        ("tests/sub", "tests/subway/test_x.py::test_x", False),
        ("tests/sub/test_deep.py", "tests/sub/test_deep.py::test_x", True),
        ("tests/sub/test_deep.py", "tests/sub/test_deep.pyc::test_x", False),
        ("tests/test_p.py::TestC", "tests/test_p.py::TestC::test_x", True),
        ("tests/test_p.py::test_p[53]", "tests/test_p.py::test_p[53]", True),  # copied nodeid
        ("tests/test_p.py::test_p[53]", "tests/test_p.py::test_p[5]", False),
        ("tests/test_p.py::test_p", "tests/test_p.py::test_p[53]", True),  # each parameter
        ("tests/test_p.py::test_p", "tests/test_p.py::test_p_other", False),
        ("tests/*::test_p[53]", "tests/test_p.py::test_p5", True),  # a glob stays a glob
        ("<session>", SESSION, True),
        ("tests/sub/", SESSION, False),
    ],
)
def test_a_scope_matches_what_it_names_literally_and_as_a_glob(
    scope: str, test: str, matches: bool
) -> None:
    assert scope_matches(scope, test) is matches


def test_scopes_that_match_no_test_of_the_run_are_found_with_their_rule() -> None:
    allowlist = loads(
        "version: 1\nallowlist:\n"
        "  - name: db\n    family: AF_INET\n    tests: ['tests/sub/', 'tests/typo.py']\n"
        "  - family: AF_UNIX\n    tests: '<session>'\n",
        "allow.yaml",
    )
    unmatched = allowlist.unmatched_scopes(["tests/sub/test_a.py::test_x", SESSION])
    assert [(rule.name, rule.line, scope) for rule, scope in unmatched] == [
        ("db", 3, "tests/typo.py")
    ]
    assert text.unmatched_scope_lines(unmatched, 1) == [
        "netaudit: warning: allow.yaml:3: tests: 'tests/typo.py' of rule 'db' matched none of "
        "the 1 test this run ran (nor <session>)"
    ]


def test_a_glob_star_matches_the_session_too_as_documented() -> None:
    allowlist = loads("version: 1\nallowlist:\n  - family: AF_INET\n    tests: ['*']\n")
    (judged,) = judge([dest(PG, SESSION)], allowlist)
    assert judged.verdict.allowed


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("tests: []", "allow.yaml:6: 'tests' is an empty list in rule 'r' (leave it out*"),
        ("tests: ''", "allow.yaml:6: 'tests' is an empty string in rule 'r'"),
        (
            "tests: [1]",
            "allow.yaml:6: 'tests' must be a nodeid glob or a list of them, not a number*",
        ),
        (
            "tests: {a: 1}",
            "allow.yaml:6: 'tests' must be a nodeid glob or a list of them, not a mapping*",
        ),
        ("tests: ['t[']", "allow.yaml:6: bad glob 't[' in 'tests' in rule 'r': '[' is not closed*"),
        (
            "tests: ['a', 't[z-a]']",
            "allow.yaml:6: bad glob 't[z-a]' in 'tests' in rule 'r': range*",
        ),
    ],
)
def test_a_bad_tests_key_is_an_error_at_its_line(body: str, message: str) -> None:
    text = f"version: 1\nallowlist:\n  - name: r\n    family: AF_INET\n    port: 1\n    {body}\n"
    with pytest.raises(AllowlistError) as raised:
        loads(text, "allow.yaml")
    assert like(str(raised.value), message), str(raised.value)


def test_check_lists_scoped_rules_with_their_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "netaudit.yaml").write_text(SCOPED)
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "  line 3    pg for integration" in out
    assert "AF_INET 10.0.0.5/32 only in tests tests/integration/*" in out
    assert out.rstrip().endswith(
        "scoped to some tests (pytest --netaudit only): 'pg for integration', "
        "'AF_INET 192.0.2.0/24 for <session>', "
        "'AF_UNIX /run/docker.sock for *::test_docker*, tests/e2e/test_[ab].py::*'"
    )


def test_the_json_report_says_what_kind_of_rule_allowed_each_destination() -> None:
    policy = marker({"allow": ["192.0.2.10:53"]})
    allowlist = loads(
        "version: 1\nallowlist:\n  - name: pg\n    family: AF_INET\n    addr: 10.0.0.5\n"
    )
    judged = judge([dest(DOC), dest(PG), dest(LOOP), dest(V6)], allowlist, {dest(DOC).test: policy})
    report = json.loads(to_json(AuditResult(judged), RunInfo("now", "host", "0")))
    assert [(d["rule"], d["allowed_by"]) for d in report["destinations"]] == [
        ("AF_INET 192.0.2.10:53 (marker on tests/test_x.py::test_y)", "marker"),
        ("pg", "allowlist"),
        ("loopback (IPv4)", "builtin"),
        (None, None),
    ]


def test_a_tests_marker_and_the_allowlists_scoped_rules_apply_together() -> None:
    policy = marker({"allow": ["192.0.2.10:53"], "strict": True})
    test = "tests/integration/test_db.py::test_q"
    judged = judge([dest(PG, test), dest(DOC, test), dest(DOCKER, test)], scoped(), {test: policy})
    assert [d.verdict for d in judged] == [
        Verdict("pg for integration", "allowlist"),
        Verdict("AF_INET 192.0.2.10:53 (marker on tests/test_x.py::test_y)", "marker"),
        Verdict(None),  # strict: no built-in "Unix sockets" for this test
    ]
