"""Run a test's workload in a private network namespace, so that no packet can leave the machine.

Every test that needs an "external" destination uses this (through the ``netns`` fixture in
``tests/conftest.py``). Inside the namespace only loopback exists, and it is up: a connect to
any other address fails at once with ENETUNREACH, strace still records the attempt, and local
servers on 127.0.0.1 keep working.

Wrap the *whole* traced command, so that strace and the tracee are both inside::

    netns(["netaudit", "run", "--", sys.executable, "-c", CODE])
    netns(strace_argv(tracer, log, [sys.executable, "-c", CODE]))

As root this is ``unshare -n``; otherwise ``unshare -rn`` (a user namespace that maps the caller
to root) is tried. Which one works is probed once, by really running a command that way.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence

#: What the ``netns`` fixture hands out: ``netns(argv)`` is argv run inside the namespace.
Netns = Callable[[Sequence[str]], list[str]]

#: The first address of TEST-NET-1 (RFC 5737): never routed, and unreachable inside anyway.
EXTERNAL_V4 = "192.0.2.1"


class NetnsUnavailable(RuntimeError):
    """No private network namespace can be made here; the message says why."""


def tool(name: str) -> str | None:
    """The path of a system tool, also found in the sbin folders a non-login PATH may lack."""
    found = shutil.which(name)
    for folder in ("/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        candidate = os.path.join(folder, name)
        if found is None and os.access(candidate, os.X_OK):
            found = candidate
    return found


@functools.cache
def _probe() -> tuple[tuple[str, ...], str]:
    """The command prefix that works here, or () and the reason none does."""
    unshare, ip, cat = tool("unshare"), tool("ip"), tool("cat")
    if unshare is None or ip is None or cat is None:
        return (), "needs unshare (util-linux), ip (iproute2) and cat"
    script = f'{ip} link set lo up && exec "$@"'
    reasons = []
    for flags in (["-n"], ["-rn"]) if os.geteuid() == 0 else (["-rn"],):
        prefix = (unshare, *flags, "/bin/sh", "-c", script, "netns")
        try:
            done = subprocess.run(
                [*prefix, cat, "/proc/net/dev"], capture_output=True, text=True, timeout=20
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            reasons.append(f"unshare {' '.join(flags)}: {exc}")
            continue
        names = [line.split(":")[0].strip() for line in done.stdout.splitlines()[2:]]
        if done.returncode == 0 and names == ["lo"]:
            return prefix, ""
        said = done.stderr.strip() or f"interfaces {names}"
        reasons.append(f"unshare {' '.join(flags)}: exit {done.returncode}: {said}")
    return (), "; ".join(reasons)


def unavailable_reason() -> str:
    """Why no private network namespace can be made here ("" when one can)."""
    return _probe()[1]


def isolated(argv: Sequence[str]) -> list[str]:
    """``argv``, prefixed so that it runs in a fresh network namespace with only ``lo`` (up)."""
    prefix, reason = _probe()
    if not prefix:
        raise NetnsUnavailable(reason)
    return [*prefix, *argv]
