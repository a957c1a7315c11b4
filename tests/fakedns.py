"""A private network namespace with a fake DNS server of its own, for tests of host names.

``FakeDns(zone).wrap(argv)`` runs argv in a fresh network and mount namespace (only ``lo``,
up) where a small UDP server on 127.0.0.1:53 answers for the names of ``zone`` and a
``resolv.conf`` naming it is bind-mounted over /etc/resolv.conf, in that namespace only.
Names are made up (``.test``, RFC 2606) and answers are documentation addresses
(192.0.2.0/24, 2001:db8::/32), so a connect to one fails at once with ENETUNREACH: nothing
leaves the machine. Unknown names get NXDOMAIN.

A zone maps a name to its addresses, or to ``"CNAME other.name"``.

Run as a script, this file is the server itself (stdlib only): ``fakedns.py ZONE_JSON READY``.
It dies with the shell that started it, and after ``_LIFETIME`` seconds at most.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import struct
import sys
import tempfile
from collections.abc import Mapping, Sequence

if __name__ != "__main__":  # run as a script (the server), it has the stdlib only
    from tests.netns import tool

Zone = Mapping[str, Sequence[str]]

#: The names the tests and the fixture logs use.
EXAMPLE_ZONE: dict[str, list[str]] = {
    "api.example.test": ["192.0.2.10", "2001:db8::10"],
    "www.shop.test": ["CNAME edge.cdn.test"],
    "edge.cdn.test": ["192.0.2.30"],
    "raw.example.test": ["192.0.2.40"],
    "msg.example.test": ["198.51.100.50"],
    "bucket1.s3.example.test": ["203.0.113.61"],
    "bucket2.s3.example.test": ["203.0.113.62"],
    "local.example.test": ["127.0.0.1"],
}

_LIFETIME = 600
_TTL = 60
#: The shell around the command: namespace set-up, the server, the command, the server's end.
_SCRIPT = """
ip link set lo up && mount --bind "$1/resolv.conf" /etc/resolv.conf || exit 97
"$2" -I "$3" "$1/zone.json" "$1/ready.$$" &
server=$!
tries=0
until [ -e "$1/ready.$$" ]; do
    tries=$((tries + 1))
    [ $tries -gt 400 ] && { kill $server; echo "fakedns: the server did not start" >&2; exit 98; }
    sleep 0.05
done
shift 3
"$@"
status=$?
kill $server 2>/dev/null
wait $server 2>/dev/null
rm -f "$1/ready.$$"
exit $status
"""


def unavailable_reason() -> str:
    """Why the namespace cannot be made here ("" when it can): it needs root for the mount."""
    if os.geteuid() != 0:
        return "a fake DNS server needs root (mount --bind in a private mount namespace)"
    missing = [name for name in ("unshare", "ip", "mount") if tool(name) is None]
    return f"needs {', '.join(missing)}" if missing else ""


class FakeDns:
    """Owns a private 0700 directory (resolv.conf, the zone) until ``close()``."""

    def __init__(self, zone: Zone) -> None:
        self.zone = {name.lower(): list(values) for name, values in zone.items()}
        self.dir = tempfile.mkdtemp(prefix="netaudit-fakedns-")
        os.chmod(self.dir, 0o700)
        try:
            with open(os.path.join(self.dir, "resolv.conf"), "w") as conf:
                conf.write("nameserver 127.0.0.1\noptions attempts:1 timeout:2\n")
            with open(os.path.join(self.dir, "zone.json"), "w") as data:
                json.dump(self.zone, data)
        except BaseException:
            self.close()
            raise

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace with the server answering."""
        unshare = tool("unshare") or "unshare"
        return [
            unshare, "-n", "-m", "/bin/sh", "-c", _SCRIPT, "fakedns",
            self.dir, sys.executable, os.path.abspath(__file__), *argv,
        ]  # fmt: skip

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# -- the server ---------------------------------------------------------------------------


def _die_with_parent() -> None:
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    signal.alarm(_LIFETIME)


def _question(query: bytes) -> tuple[str, int, int] | None:
    """The name, type and end of the first question of a query."""
    labels, at = [], 12
    while at < len(query) and query[at]:
        length = query[at]
        labels.append(query[at + 1 : at + 1 + length].decode("ascii", "replace").lower())
        at += 1 + length
    if at + 5 > len(query):
        return None
    qtype = struct.unpack("!H", query[at + 1 : at + 3])[0]
    return ".".join(labels), qtype, at + 5


def _encode(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"


def respond(query: bytes, zone: Zone) -> bytes | None:
    """The answer to one query: A/AAAA records (after any CNAME chain), or NXDOMAIN."""
    asked = _question(query)
    if asked is None:
        return None
    name, qtype, end = asked
    records: list[bytes] = []
    current, seen = name, set()
    while current in zone and current not in seen:
        seen.add(current)
        values = zone[current]
        if values and values[0].startswith("CNAME "):
            target = values[0].split()[1]
            data = _encode(target)
            records.append(_encode(current) + struct.pack("!HHIH", 5, 1, _TTL, len(data)) + data)
            current = target
            continue
        for value in values:
            ip = ipaddress.ip_address(value)
            if (ip.version, qtype) in ((4, 1), (6, 28)):
                rdata = ip.packed
                records.append(
                    _encode(current) + struct.pack("!HHIH", qtype, 1, _TTL, len(rdata)) + rdata
                )
        break
    rcode = 0 if name in zone else 3
    flags = 0x8180 | rcode
    header = query[:2] + struct.pack("!HHHHH", flags, 1, len(records), 0, 0)
    return header + query[12:end] + b"".join(records)


def serve(zone_path: str, ready: str) -> None:
    _die_with_parent()
    with open(zone_path) as data:
        zone: dict[str, list[str]] = json.load(data)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 53))
    with open(ready, "w"):
        pass
    while True:
        query, peer = sock.recvfrom(4096)
        answer = respond(query, zone)
        if answer is not None:
            sock.sendto(answer, peer)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
