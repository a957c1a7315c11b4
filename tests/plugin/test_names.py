"""``pytest --netaudit --netaudit-names``: a suite that looks names up from a fake DNS server
in a private network namespace (tests/fakedns.py) and connects to the answers, documentation
addresses where a connect fails at once with ENETUNREACH: nothing leaves the machine."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from netaudit.rules import RESOLVED
from tests.fakedns import FakeDns
from tests.integration.test_names_run import row
from tests.netns import tool
from tests.runner import pytest_run

pytestmark = pytest.mark.strace


SUITE = """
import contextlib
import socket

def connect(name, port):
    for family, kind, proto, _, address in socket.getaddrinfo(name, port, proto=socket.IPPROTO_TCP):
        with socket.socket(family, kind, proto) as s, contextlib.suppress(OSError):
            s.connect(address)

def test_resolve_only():
    socket.getaddrinfo("api.example.test", 443, proto=socket.IPPROTO_TCP)

def test_api():
    connect("api.example.test", 443)

def test_bucket():
    connect("bucket2.s3.example.test", 443)

def test_shop():
    connect("www.shop.test", 443)

def test_hardcoded():
    with socket.socket() as s, contextlib.suppress(OSError):
        s.connect(("198.51.100.99", 443))
"""

ALLOWLIST = """\
version: 1
allowlist:
  - host: api.example.test
    port: 443
  - name: buckets
    host: "*.s3.example.test"
"""


def test_names_in_every_report_and_host_rules_under_pytest(
    fake_dns: FakeDns, tmp_path: Path
) -> None:
    (tmp_path / "test_lookups.py").write_text(SUITE, encoding="utf-8")
    (tmp_path / "netaudit.yaml").write_text(ALLOWLIST, encoding="utf-8")
    result = pytest_run(
        "--netaudit", "--netaudit-names", "--netaudit-verbose", "--netaudit-suggest-rules",
        "--netaudit-report", "report.json", cwd=tmp_path, netns=fake_dns.wrap,
    )  # fmt: skip
    out = "\n".join(result.outlines)
    assert result.ret == 1, out
    result.stdout.fnmatch_lines(["netaudit: strace * (*, seccomp-bpf, DNS names)"])
    # The verbose table: a test that only resolves made probes, shown as resolved, and queries.
    table = out[
        out.index("[test_lookups.py::test_resolve_only]") : out.index("[test_lookups.py::test_api]")
    ]
    assert row("AF_INET", "192.0.2.10:443 (api.example.test)", f"RESOLVED   {RESOLVED}") in table
    assert (
        row("AF_INET", "127.0.0.1:53 DNS A api.example.test", "OK         loopback (IPv4)") in table
    )
    assert "VIOLATION" not in table
    assert (
        row("AF_INET", "192.0.2.10:443 (api.example.test)", "OK         host api.example.test:443")
        in out
    )
    assert row("AF_INET", "203.0.113.62:443 (bucket2.s3.example.test)", "OK         buckets") in out
    # The violations: only the name-less address, and the name no rule allows.
    block = out[out.index("netaudit: 2 violations detected") :]
    assert "  [test_lookups.py::test_shop]" in block
    assert "    AF_INET 192.0.2.30:443 (edge.cdn.test, www.shop.test) (count=1, pids=[" in block
    assert "  [test_lookups.py::test_hardcoded]" in block
    assert "    AF_INET 198.51.100.99:443 (count=1, pids=[" in block  # never resolved: no name
    # Suggested rules prefer the name.
    assert "  host: edge.cdn.test\n  port: 443" in out
    report: dict[str, Any] = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    rows = report["destinations"]
    assert {r["kind"] for r in rows} == {"connection", "dns_query", "resolved"}
    shop = next(
        r
        for r in rows
        if r["test"].endswith("test_shop") and r["kind"] == "connection" and r["names"]
    )
    assert shop["names"] == ["edge.cdn.test", "www.shop.test"]
    queries = {r["query"]["name"] for r in rows if r["kind"] == "dns_query"}
    assert queries == {"api.example.test", "bucket2.s3.example.test", "www.shop.test"}


# -- the system resolver, without --netaudit-names ----------------------------------------------

#: The resolver the suite below gets: a documentation address, so every query fails at once
#: with ENETUNREACH in the private network namespace, and nothing leaves the machine.
RESOLVER = "192.0.2.53"

LOOKUP = """
import socket

def lookup(name):
    try:
        socket.getaddrinfo(name, 443, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        pass

def test_looks_a_name_up():
    lookup("api.example.test")

def test_also_looks_up():
    lookup("www.shop.test")
"""


def with_resolver(folder: Path) -> Callable[[Sequence[str]], list[str]]:
    """argv run in a private network and mount namespace whose /etc/resolv.conf names
    RESOLVER (a bind mount, seen in that namespace only)."""
    unshare, ip = tool("unshare"), tool("ip")
    if os.geteuid() != 0 or unshare is None or ip is None:
        pytest.fail("a resolv.conf of the test's own needs root, unshare and ip")
    conf = folder / "resolv.conf"
    conf.write_text(f"nameserver {RESOLVER}\noptions attempts:1 timeout:1\n")
    script = f'{ip} link set lo up && mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'

    def wrap(argv: Sequence[str]) -> list[str]:
        return [unshare, "-n", "-m", "/bin/sh", "-c", script, "resolver", str(conf), *argv]

    return wrap


def test_the_system_resolver_is_named_with_the_lookup_that_reached_it(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_lookup=LOOKUP)
    result = pytest_run(
        "--netaudit",
        "--netaudit-suggest-rules",
        cwd=pytester.path,
        netns=with_resolver(pytester.path),
    )
    assert result.ret == 1, "\n".join(result.outlines + result.errlines)
    source = (pytester.path / "test_lookup.py").read_text().splitlines()
    inner = next(n for n, line in enumerate(source, 1) if "socket.getaddrinfo(" in line)
    own = next(n for n, line in enumerate(source, 1) if 'lookup("api.example.test")' in line)
    result.stdout.fnmatch_lines(
        [
            "  [[]test_lookup.py::test_looks_a_name_up]",
            f"    AF_INET {RESOLVER}:53 (system resolver) (count=*, pids=[[]*])",
            "      by python*: *",
            f"      at test_lookup.py:{own} in test_looks_a_name_up > "
            f"test_lookup.py:{inner} in lookup",
        ]
    )
    # Its suggested rule allows the resolver only to the tests that used it, and says why.
    result.stdout.fnmatch_lines(
        [
            f"- name: system resolver AF_INET {RESOLVER}:53 (seen from *",
            "  family: AF_INET",
            f"  addr: {RESOLVER}",
            "  port: 53",
            "  tests:",
            "  - test_lookup.py::test_also_looks_up",
            "  - test_lookup.py::test_looks_a_name_up",
            "# A rule for the system resolver *",
        ]
    )
