"""Helpers that attempt egress without ever sending a packet off this machine.

Every non-loopback address used by the example suite is a documentation address (RFC 5737 /
RFC 3849), and the attempt is either a UDP connect(), which only picks a route and sends
nothing, or a TCP connect made only where no route leaves the machine.
"""

from __future__ import annotations

import contextlib
import socket


def in_private_netns() -> bool:
    """True when this process's network namespace has no interface but ``lo``.

    Reads /proc/self/net/dev, which follows the reading process's namespace. /sys/class/net
    does not: it shows the namespace that mounted sysfs, so after a plain ``unshare -n`` it
    still lists the host's interfaces. Any doubt answers False, the safe side.
    """
    try:
        with open("/proc/self/net/dev") as dev:
            lines = dev.read().splitlines()[2:]
    except OSError:
        return False
    return [line.split(":")[0].strip() for line in lines] == ["lo"]


def udp_connect(host: str, port: int, family: int = socket.AF_INET) -> None:
    """connect() a UDP socket: the call is audited, yet no packet is sent."""
    # Without a route (e.g. in a private namespace) connect() fails; the attempt still counts.
    with socket.socket(family, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
        sock.connect((host, port))


def tcp_attempt(host: str, port: int) -> None:
    """Attempt a TCP connect, but only where it cannot leave the machine."""
    if not in_private_netns():
        # Outside a private namespace a TCP connect would send a SYN out of the machine.
        # A UDP connect() to the same address and port is audited alike and sends nothing.
        udp_connect(host, port)
        return
    # Only `lo` exists here, so the connect fails at once (ENETUNREACH) without a packet.
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        pass
