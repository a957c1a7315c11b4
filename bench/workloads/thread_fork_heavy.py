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
    threads = [threading.Thread(target=spin, args=(40_000,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in range(20):
        pid = os.fork()
        if pid == 0:
            spin(10_000)
            os._exit(0)
        os.waitpid(pid, 0)
    for _ in range(50):
        subprocess.run(["/bin/true"], check=True)
    for _ in range(50):
        t = threading.Thread(target=spin, args=(1000,))
        t.start()
        t.join()


if __name__ == "__main__":
    main()
