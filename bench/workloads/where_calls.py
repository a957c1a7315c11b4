"""Per-call cost of the where-in-the-code hook, untraced: ``where_calls.py on|off`` prints
the microseconds of one loopback UDP sendto() made by a helper that a test function calls,
with the recorder on or off (a hook cannot be removed, so each variant is its own process)."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

CALLS = 20_000

sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sink.bind(("127.0.0.1", 0))
ADDRESS = sink.getsockname()
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def helper() -> float:
    started = time.perf_counter()
    for _ in range(CALLS):
        out.sendto(b"x", ADDRESS)
    return (time.perf_counter() - started) / CALLS * 1e6


def test_calls() -> float:
    return min(helper() for _ in range(3))


if __name__ == "__main__":
    if sys.argv[1] == "on":
        from netaudit.pytest_plugin.where import WhereRecorder

        WhereRecorder(Path(__file__).parent).begin("bench::test_calls", test_calls)
    print(f"{test_calls():.3f}")
