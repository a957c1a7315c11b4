"""Writes a realistic strace log of N network events.

    genlog.py N PATH            netaudit's capture format (-f -ttt), every kind of call
    genlog.py N PATH --connect  -f -tt, successful connect()s only: the form netaudit 0.6.1
                                reads (it skips -ttt lines and failed calls), for a fair race

A mix of the forms a real suite produces: loopback TCP, UDP to resolvers, external HTTPS,
Unix sockets, IPv6, sendto/sendmmsg, threads and children, clone and execve lines.
"""

from __future__ import annotations

import random
import sys
from typing import TextIO

FORMS = [
    'connect({fd}, {{sa_family=AF_INET, sin_port=htons({port}), sin_addr=inet_addr("127.0.0.1")}}, 16) = -1 ECONNREFUSED (Connection refused)',
    'connect({fd}, {{sa_family=AF_INET, sin_port=htons(443), sin_addr=inet_addr("93.184.216.{host}")}}, 16) = -1 ENETUNREACH (Network is unreachable)',
    'connect({fd}, {{sa_family=AF_INET, sin_port=htons({port}), sin_addr=inet_addr("10.0.{host}.5")}}, 16) = -1 EINPROGRESS (Operation now in progress)',
    'connect({fd}, {{sa_family=AF_UNIX, sun_path="/var/run/nscd/socket"}}, 110) = -1 ENOENT (No such file or directory)',
    'connect({fd}, {{sa_family=AF_INET6, sin6_port=htons({port}), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "2001:db8::{host:x}", &sin6_addr), sin6_scope_id=0}}, 28) = -1 ENETUNREACH (Network is unreachable)',
    'sendto({fd}, "\\x12\\x34\\x01\\x00", 33, MSG_NOSIGNAL, {{sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("192.0.2.{host}")}}, 16) = 33',
    'sendmmsg({fd}, [{{msg_hdr={{msg_name={{sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("127.0.0.53")}}, msg_namelen=16, msg_iov=[{{iov_base="\\x01", iov_len=1}}], msg_iovlen=1, msg_controllen=0, msg_flags=0}}, msg_len=1}}], 1, 0) = 1',
    'connect({fd}, {{sa_family=AF_INET, sin_port=htons({port}), sin_addr=inet_addr("127.0.0.1")}}, 16) = 0',
]
WEIGHTS = [30, 10, 8, 10, 5, 7, 5, 25]


CONNECT_ONLY = [form.split(" = ")[0] + " = 0" for form in FORMS if form.startswith("connect(")]


def stamp(t: float, clock: bool) -> str:
    if not clock:
        return f"{t:.6f}"
    seconds = t % 86400
    return f"{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}:{seconds % 60:09.6f}"


def spawn(out: TextIO, rng: random.Random, live: list[int], child: int, when: str) -> bool:
    """A new thread or child of a live task, as strace shows it; True for a child."""
    parent = rng.choice(live)
    thread = rng.random() < 0.5
    flags = "CLONE_VM|CLONE_THREAD|CLONE_SETTLS" if thread else "CLONE_CHILD_SETTID|SIGCHLD"
    out.write(
        f"{parent}  {when} clone(child_stack=NULL, flags={flags}, child_tidptr=0x7f) = {child}\n"
    )
    out.write(f"{child}  {when} set_robust_list(0x7f66, 24) = 0\n")
    live.append(child)
    return not thread


def main() -> None:
    events, path = int(sys.argv[1]), sys.argv[2]
    connect_only = "--connect" in sys.argv[3:]
    forms, weights = (CONNECT_ONLY, [30, 10, 8, 10, 5, 25]) if connect_only else (FORMS, WEIGHTS)
    rng = random.Random(7)
    t = 1795634279.0
    pid = 4000
    live = [pid]
    with open(path, "w") as out:
        out.write(
            f'{pid}  {stamp(t, connect_only)} execve("/usr/bin/python3", ["python3", "-m", "pytest"], 0x7ffe /* 35 vars */) = 0\n'
        )
        for i in range(events):
            t += 0.000137
            if i % 500 == 0:
                child = 4001 + i // 500
                if spawn(out, rng, live, child, stamp(t, connect_only)) and rng.random() < 0.5:
                    out.write(
                        f'{child}  {stamp(t, connect_only)} execve("/usr/bin/curl", ["curl", "-s"], 0x7ffe /* 35 vars */) = 0\n'
                    )
            form = rng.choices(forms, weights)[0]
            line = form.format(
                fd=rng.randint(3, 40),
                port=rng.choice((5432, 6379, 8080, 9000)),
                host=rng.randint(1, 20),
            )
            out.write(f"{rng.choice(live)}  {stamp(t, connect_only)} {line}\n")


if __name__ == "__main__":
    main()
