"""The bench's commands run inside a private network namespace: only loopback, up."""

from __future__ import annotations

import os
import signal
import sys

ENV_INSIDE = "NETAUDIT_BENCH_NETNS"


def inside() -> bool:
    return os.environ.get(ENV_INSIDE) == "1"


def reenter() -> None:
    """Runs this very command again inside a new network namespace (``unshare -n`` as root,
    else in a user namespace, where that is allowed); nothing it runs can leave the machine.
    Whatever needs the network (pip) must be done before."""
    if inside():
        return
    flags = "-n" if os.geteuid() == 0 else "-rn"
    script = 'ip link set lo up && exec "$@"'
    argv = ["unshare", flags, "/bin/sh", "-c", script, "netns", sys.executable, *sys.argv]
    os.environ[ENV_INSIDE] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(argv[0], argv)


def default_signals() -> None:
    """A shell starts a background job with SIGINT and SIGQUIT ignored, and every suite would
    inherit that (trio's REPL tests then wait forever for a KeyboardInterrupt): the suites
    run with the dispositions a terminal gives them."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGQUIT) is signal.SIG_IGN:
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
