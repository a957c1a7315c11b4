"""`netaudit run --names` end to end: the real strace on a program that looks names up from a
fake DNS server in a private network namespace (tests/fakedns.py). Every answer is a
documentation address, where a connect fails at once with ENETUNREACH: nothing leaves."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from netaudit.errors import EXIT_VIOLATIONS
from netaudit.rules import RESOLVED
from tests.fakedns import FakeDns
from tests.runner import netaudit


def row(family: str, label: str, rest: str) -> str:
    """A row of the verbose table: an address too long for its column (29 characters) has a
    line of its own, and the row goes on below it, in the same columns."""
    if len(label) <= 29:
        return f"{family:<12} {label:<29} {rest}"
    return f"{family:<12} {label}\n{'':<42} {rest}"


pytestmark = pytest.mark.strace

PROGRAM = Path(__file__).resolve().parents[1] / "fixtures" / "strace" / "dns_lookup.py"
ALLOWLIST = """\
version: 1
allowlist:
  - host: api.example.test
    port: 443
  - name: buckets
    host: "*.s3.example.test"
    port: 443
"""


def run(fake_dns: FakeDns, tmp_path: Path, *flags: str) -> tuple[int, str, str]:
    """The exit status, the command's output, and netaudit's report (on stderr)."""
    allowlist = tmp_path / "netaudit.yaml"
    allowlist.write_text(ALLOWLIST, encoding="utf-8")
    done = netaudit(
        "run", *flags, "--", sys.executable, str(PROGRAM), cwd=tmp_path, netns=fake_dns.wrap
    )
    return done.returncode, done.stdout, done.stderr


def test_names_host_rules_probes_and_queries_in_the_text_report(
    fake_dns: FakeDns, tmp_path: Path
) -> None:
    status, _, out = run(fake_dns, tmp_path, "--names", "--verbose", "--suggest-rules")
    assert status == EXIT_VIOLATIONS, out
    # Allowed by name, exact and wildcard; the child's connect is named from its parent.
    host = "OK         host api.example.test:443"
    assert row("AF_INET", "192.0.2.10:443 (api.example.test)", host) in out
    assert row("AF_INET6", "[2001:db8::10]:443 (api.example.test)", host) in out
    assert row("AF_INET", "203.0.113.61:443 (bucket1.s3.example.test)", "OK         buckets") in out
    # getaddrinfo's UDP probes are resolved, not connections.
    assert row("AF_INET", "192.0.2.10:443 (api.example.test)", f"RESOLVED   {RESOLVED}") in out
    # DNS queries are events of their own.
    loopback = "OK         loopback (IPv4)"
    assert row("AF_INET", "127.0.0.1:53 DNS AAAA www.shop.test", loopback) in out
    assert row("AF_INET", "127.0.0.1:53 DNS A nope.test", loopback) in out
    # Violations: by name when known, by address when the name was never resolved here.
    violations = out[out.index("violations detected") :]
    assert (
        "    AF_INET 192.0.2.30:443 (edge.cdn.test, www.shop.test) (count=1, pids=[" in violations
    )
    assert "    AF_INET 192.0.2.40:80 (raw.example.test) (count=1" in violations
    assert "    AF_INET 203.0.113.62:443 (count=1" in violations
    assert "RESOLVED" not in violations and "DNS" not in violations
    # Suggestions prefer the name.
    assert "- name: host edge.cdn.test:443 (seen from python" in out
    assert "  host: edge.cdn.test\n  port: 443\n" in out
    assert "  addr: 203.0.113.62\n" in out


def test_names_in_the_json_report(fake_dns: FakeDns, tmp_path: Path) -> None:
    status, _, err = run(fake_dns, tmp_path, "--names", "--report", "report.json")
    assert status == EXIT_VIOLATIONS, err
    document = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert "recvfrom" in document["run"]["syscalls"]
    rows = document["destinations"]
    named = {r["display"]: r["names"] for r in rows if r["kind"] == "connection" and r["names"]}
    assert named["192.0.2.10:443"] == ["api.example.test"]
    assert named["127.0.0.1:9999"] == ["local.example.test"]  # a UDP socket that sent
    queries = {(q["query"]["type"], q["query"]["name"]) for q in rows if q["kind"] == "dns_query"}
    assert ("A", "msg.example.test") in queries and ("AAAA", "api.example.test") in queries
    resolved = {r["display"] for r in rows if r["kind"] == "resolved"}
    assert resolved == {"192.0.2.10:443", "[2001:db8::10]:443", "127.0.0.1:9999"}


def test_without_names_host_rules_allow_nothing_and_probes_are_connections(
    fake_dns: FakeDns, tmp_path: Path
) -> None:
    status, _, err = run(fake_dns, tmp_path, "--report", "report.json")
    assert status == EXIT_VIOLATIONS, err
    warning = f"2 host rule(s) (the first at {tmp_path / 'netaudit.yaml'}:3) allow nothing"
    assert f"netaudit: warning: {warning} without DNS names traced" in err
    rows = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))["destinations"]
    assert {r["kind"] for r in rows} == {"connection"}
    assert not any(r["names"] for r in rows)
    assert not any(r["rule"] and r["rule"].startswith("host") for r in rows)
