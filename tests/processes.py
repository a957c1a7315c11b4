"""Programs the real-strace tests run, and how a test sees whether a process is still running.

Shared by tests/integration (``netaudit run``) and tests/plugin (``pytest --netaudit``), which
check the same behaviour through the two front ends.
"""

from __future__ import annotations

#: A daemon that ignores SIGTERM, so only SIGKILL ends it. ``argv[1]`` is a file it appends
#: to: its pid first, then the errno of a loopback connect() every 10 ms (ECONNREFUSED while
#: strace traces it; ENOSYS if it outlived strace's --seccomp-bpf filter).
STUBBORN_DAEMON = """
import os, signal, socket, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
out = open(sys.argv[1], "a", buffering=1)
out.write(f"{os.getpid()}\\n")
while True:
    s = socket.socket()
    out.write(f"{s.connect_ex(('127.0.0.1', 1))}\\n")
    s.close()
    time.sleep(0.01)
"""

#: Prints, as one JSON object, each open descriptor of its process and what it points to.
FD_LISTER = (
    "import json, os\n"
    "fds = {}\n"
    "for fd in os.listdir('/proc/self/fd'):\n"
    "    try: fds[fd] = os.readlink('/proc/self/fd/' + fd)\n"
    "    except OSError: pass\n"
    "print(json.dumps(fds))\n"
)


def alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for init to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
