"""The data model and errors: display forms, and values that cross processes."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest

from netaudit.errors import (
    AllowlistError,
    CommandError,
    ConfigError,
    NetauditError,
    TraceError,
    TracerUnavailable,
)
from netaudit.model import Endpoint


@pytest.mark.parametrize(
    ("endpoint", "shown"),
    [
        (Endpoint("AF_INET", "93.184.216.34", 443), "93.184.216.34:443"),
        (Endpoint("AF_INET6", "2001:db8::1", 443), "[2001:db8::1]:443"),
        (Endpoint("AF_INET6", "fe80::1", 53, "lo"), "[fe80::1%lo]:53"),
        (Endpoint("AF_UNIX", "/run/x.sock"), "/run/x.sock"),
        (Endpoint("AF_UNIX", "@abstract"), "@abstract"),
        (Endpoint("AF_UNIX"), "(unnamed)"),
        (Endpoint("AF_NETLINK", "pid=0"), "pid=0"),
    ],
)
def test_an_endpoint_shows_as_reports_print_it(endpoint: Endpoint, shown: str) -> None:
    assert str(endpoint) == shown


def test_an_endpoint_unpickled_in_another_process_hashes_as_there() -> None:
    # xdist workers send results to the controller: string hashes differ per process.
    data = pickle.dumps(Endpoint("AF_INET", "192.0.2.1", 80))
    check = (
        "import pickle, sys; e = pickle.loads(sys.stdin.buffer.read()); "
        "assert hash(e) == hash(('AF_INET', '192.0.2.1', 80, '')), 'stale hash'; "
        "assert {e: 1}[type(e)('AF_INET', '192.0.2.1', 80)] == 1"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run([sys.executable, "-c", check], input=data, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


@pytest.mark.parametrize(
    "error",
    [
        AllowlistError("unknown key 'adr'", "a.yaml", 4),
        ConfigError("bad", "pyproject.toml"),
        TraceError("strace was killed"),
        TracerUnavailable("strace was not found"),
        CommandError("command is not executable: x", exit_code=126),
    ],
)
def test_errors_survive_pickling_with_message_and_exit_code(error: NetauditError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.exit_code) == (type(error), str(error), error.exit_code)
