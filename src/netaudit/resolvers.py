"""The system's resolver: the nameservers of /etc/resolv.conf.

Every lookup of a name through the C library goes to one of them on port 53, so a report says
so (``10.0.0.2:53 (system resolver)``) rather than show a bare address, and a rule that allows
one says what it permits: any test it covers may look up any name, which can carry data out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from .model import Destination

RESOLV_CONF = Path("/etc/resolv.conf")
DNS_PORT = 53


def nameservers(path: Path = RESOLV_CONF) -> frozenset[str]:
    """The addresses of the ``nameserver`` lines (as the audit writes addresses); none when
    the file cannot be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    found = set()
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                ip = ipaddress.ip_address(words[1].partition("%")[0])
            except ValueError:
                continue
            mapped = getattr(ip, "ipv4_mapped", None)
            found.add(str(mapped or ip))
    return frozenset(found)


def mark(destinations: Iterable[Destination], servers: frozenset[str]) -> Iterator[Destination]:
    """The destinations, each that goes to a system nameserver on port 53 marked so."""
    for d in destinations:
        endpoint = d.endpoint
        if (
            servers
            and endpoint is not None
            and endpoint.port == DNS_PORT
            and endpoint.address in servers
        ):
            d = replace(d, resolver=True)
        yield d
