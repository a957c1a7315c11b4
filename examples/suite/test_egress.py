"""One test per kind of finding `pytest --netaudit` reports.

Nothing here sends a packet off the machine: see egress.py and README.md.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

from egress import tcp_attempt, udp_connect


def test_external_tcp() -> None:
    """Violation: TCP to an undeclared host (a UDP connect() outside a private namespace)."""
    tcp_attempt("203.0.113.10", 443)


def test_udp_dns_lookalike() -> None:
    """Violation: UDP to port 53 of an undeclared host; connect() only, nothing sent."""
    udp_connect("198.51.100.53", 53)


def test_subprocess() -> None:
    """Violation made by a child process: the audit follows children, too."""
    child = (
        "import socket; "
        "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect_ex(('192.0.2.7', 8080))"
    )
    done = subprocess.run([sys.executable, "-c", child], check=False)
    assert done.returncode == 0


def test_thread() -> None:
    """Violation made by another thread, over IPv6: it still belongs to this test."""
    worker = threading.Thread(target=udp_connect, args=("2001:db8::1", 443, socket.AF_INET6))
    worker.start()
    worker.join()
    assert not worker.is_alive()


def test_loopback_allowed() -> None:
    """Allowed by the built-in rule "loopback (IPv4)": a real TCP exchange on 127.0.0.1."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5) as client:
            peer, _ = server.accept()
            with peer:
                client.sendall(b"ping")
                assert peer.recv(4) == b"ping"
                peer.sendall(b"pong")
                assert client.recv(4) == b"pong"


def test_allowed_by_rule() -> None:
    """Allowed by the rule "Example database" in netaudit.yaml."""
    udp_connect("198.51.100.20", 5432)
