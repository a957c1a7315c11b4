"""Runs the netaudit command line as a user would: its own process, its output captured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.netns import Netns


def netaudit(
    *args: str, cwd: Path, netns: Netns | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m netaudit ARGS`` in ``cwd``; inside a private network namespace if given."""
    argv = [sys.executable, "-m", "netaudit", *args]
    return subprocess.run(
        netns(argv) if netns else argv, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
