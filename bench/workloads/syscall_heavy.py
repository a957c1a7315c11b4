"""Stats and reads many small files: lots of syscalls, none of them traced."""

from __future__ import annotations

import os
import sys
import tempfile

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 150


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="netaudit-bench-") as directory:
        paths = []
        for i in range(2000):
            path = os.path.join(directory, f"f{i}")
            with open(path, "w") as f:
                f.write("x" * (i % 200))
            paths.append(path)
        total = 0
        for _ in range(ROUNDS):
            for path in paths:
                total += os.stat(path).st_size
                with open(path, "rb") as f:
                    total += len(f.read())
    print(total)


if __name__ == "__main__":
    main()
