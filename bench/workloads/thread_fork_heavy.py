"""Starts threads, forks children without exec, and runs subprocesses.

New threads and forks are where strace's seccomp fast path needs set_robust_list traced.
"""

from __future__ import annotations

import os
import subprocess
import threading


def spin(n: int) -> None:
    for _ in range(n):
        os.getppid()


def main() -> None:
    """Work spread over 4 long threads, 40 forked children, 100 short threads, 100 subprocesses."""
    threads = [threading.Thread(target=spin, args=(1_000_000,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in range(40):
        pid = os.fork()
        if pid == 0:
            spin(50_000)
            os._exit(0)
        os.waitpid(pid, 0)
    for _ in range(100):
        subprocess.run(["/bin/true"], check=True)
    for _ in range(100):
        t = threading.Thread(target=spin, args=(10_000,))
        t.start()
        t.join()


if __name__ == "__main__":
    main()
