"""Writes a scan-like strace log: N network events to about N/4 distinct destinations.

    genscan.py N PATH           netaudit's capture format (-f -ttt)
    genscan.py N PATH --connect -f -tt, successful connect()s only: the form netaudit 0.6.1
                                reads (it skips -ttt lines and failed calls), for a fair race

Where bench/genlog.py repeats a few dozen destinations, this one hardly repeats any: loopback
connects to random ephemeral ports, connects to many different IPv4 and IPv6 addresses,
addressed UDP sends (IPv4 and IPv6), and sends on connected sockets, which name no address;
threads and children come and go as in genlog.py. The addresses are documentation and private
ranges: the log is text, nothing is ever sent.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.genlog import spawn, stamp

LOOPBACK = 'connect({fd}, {{sa_family=AF_INET, sin_port=htons({port}), sin_addr=inet_addr("127.0.0.1")}}, 16) = -1 ECONNREFUSED (Connection refused)'
CONNECT4 = 'connect({fd}, {{sa_family=AF_INET, sin_port=htons({port}), sin_addr=inet_addr("{ip4}")}}, 16) = -1 ENETUNREACH (Network is unreachable)'
CONNECT6 = 'connect({fd}, {{sa_family=AF_INET6, sin6_port=htons({port}), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "{ip6}", &sin6_addr), sin6_scope_id=0}}, 28) = -1 ENETUNREACH (Network is unreachable)'
SENDTO4 = 'sendto({fd}, "{payload}", {size}, 0, {{sa_family=AF_INET, sin_port=htons({port}), sin_addr=inet_addr("{ip4}")}}, 16) = {size}'
SENDTO6 = 'sendto({fd}, "{payload}", {size}, MSG_NOSIGNAL, {{sa_family=AF_INET6, sin6_port=htons({port}), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "{ip6}", &sin6_addr), sin6_scope_id=0}}, 28) = {size}'
CONNECTED = 'sendto({fd}, "{payload}", {size}, MSG_NOSIGNAL, NULL, 0) = {size}'

#: (form, weight, how many distinct destinations it draws from, per 1,000,000 events):
#: about 260,000 distinct destinations in all, 28,000 of them loopback ports
FORMS = [
    (LOOPBACK, 25, 0),
    (CONNECT4, 25, 120_000),
    (CONNECT6, 12, 70_000),
    (SENDTO4, 12, 50_000),
    (SENDTO6, 6, 25_000),
    (CONNECTED, 20, 0),
]
PORTS = (22, 53, 80, 123, 443, 514, 3306, 5432, 6379, 8080, 8443, 9200)


def ip4(index: int) -> str:
    """The index-th address of 10.0.0.0/8."""
    return f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"


def ip6(index: int) -> str:
    return f"2001:db8:{index >> 16:x}:{index & 0xFFFF:x}::{index % 97 + 1:x}"


def main() -> None:
    events, path = int(sys.argv[1]), sys.argv[2]
    clock = "--connect" in sys.argv[3:]
    forms = [(f, w, n) for f, w, n in FORMS if not clock or f.startswith("connect(")]
    rng = random.Random(11)
    weights = [w for _, w, _ in forms]
    kinds = range(len(forms))
    t = 1795634279.0
    pid = 7000
    live = [pid]
    scale = events / 1_000_000
    with open(path, "w") as out:
        out.write(
            f'{pid}  {stamp(t, clock)} execve("/usr/bin/python3", ["python3", "scan.py"], 0x7ffe /* 35 vars */) = 0\n'
        )
        for i in range(events):
            t += 0.000137
            if i % 500 == 0:
                spawn(out, rng, live, 7001 + i // 500, stamp(t, clock))
                if len(live) > 64:
                    live.pop(1)
            kind = rng.choices(kinds, weights)[0]
            form, _, pool = forms[kind]
            # Each form draws from addresses of its own: a pool per form, 2**20 apart.
            index = rng.randrange(max(1, int(pool * scale))) + (kind << 20)
            size = rng.randint(8, 64)
            line = form.format(
                fd=rng.randint(3, 900),
                port=rng.randint(32768, 60999) if form is LOOPBACK else PORTS[index % len(PORTS)],
                ip4=ip4(index),
                ip6=ip6(index),
                payload=f"q{i:x}\\0\\1",
                size=size,
            )
            if clock:
                line = line.split(" = ")[0] + " = 0"
            out.write(f"{rng.choice(live)}  {stamp(t, clock)} {line}\n")


if __name__ == "__main__":
    main()
