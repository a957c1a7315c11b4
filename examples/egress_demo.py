"""A small program with one of each kind of egress netaudit reports.

Every non-loopback destination is a documentation address (RFC 5737 / RFC 3849) reached by a
UDP connect(), which sends no packet: running this sends nothing off the machine.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading


def udp_connect(host: str, port: int, family: int = socket.AF_INET) -> None:
    """connect() on a UDP socket only picks a route; no packet leaves."""
    # With no route on this machine it fails; the attempt is still what gets audited.
    with socket.socket(family, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
        sock.connect((host, port))


def loopback_tcp() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname()):
            server.accept()[0].close()


def main() -> None:
    loopback_tcp()  # allowed: built-in "loopback (IPv4)"
    udp_connect("192.0.2.53", 53)  # allowed: "Internal DNS"
    udp_connect("198.51.100.3", 8080)  # allowed: "Staging API"
    udp_connect("203.0.113.10", 443)  # violation: undeclared host
    udp_connect("198.51.100.3", 22)  # violation: declared host, undeclared port
    udp_connect("2001:db8::10", 443, socket.AF_INET6)  # violation: IPv6
    worker = threading.Thread(target=udp_connect, args=("192.0.2.99", 9000))
    worker.start()  # violation, from a thread
    worker.join()
    child = (
        "import socket; "
        "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect_ex(('203.0.113.77', 5432))"
    )
    subprocess.run([sys.executable, "-c", child], check=True)  # violation, from a subprocess
    print("egress_demo: done")


if __name__ == "__main__":
    main()
