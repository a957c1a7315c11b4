"""The recipe for the real suites: each project's test suite from its PyPI sdist, in scratch
venvs under a cache folder outside the repository (nothing of theirs is committed).

For each suite two venvs share one set of pinned versions: ``<suite>-ours`` has this checkout
installed (editable), ``<suite>-peer`` the PyPI netaudit 0.6.1; both enable their plugin with
``pytest --netaudit``. The cache is ``$NETAUDIT_BENCH_CACHE`` or ``~/.cache/netaudit-bench``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("NETAUDIT_BENCH_CACHE", Path.home() / ".cache" / "netaudit-bench"))
PEER = "netaudit==0.6.1"
#: The interpreter the venvs are made from (the real one, not a pyenv shim).
BASE_PYTHON = str(Path(getattr(sys, "_base_executable", sys.executable)).resolve())


@dataclass(frozen=True)
class Suite:
    name: str
    sdist: str
    #: What the suite's tests need besides the project itself (from its test requirements,
    #: less linters, coverage and tools that need the network).
    requires: tuple[str, ...]
    #: pytest's arguments, run from the unpacked sdist; ``{site}`` is the venv's site-packages.
    args: tuple[str, ...]

    @property
    def source(self) -> Path:
        return CACHE / "sdist" / self.sdist.replace("==", "-")

    def venv(self, flavour: str) -> Path:
        return CACHE / f"{self.name}-{flavour}"

    def python(self, flavour: str) -> str:
        return str(self.venv(flavour) / "bin" / "python")

    def pytest_args(self, flavour: str) -> list[str]:
        site = self.venv(flavour) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
        return [arg.format(site=site / "site-packages") for arg in self.args]


URLLIB3 = Suite(
    "urllib3",
    "urllib3==2.8.0",
    ("anyio[trio]", "h2", "httpx", "hypercorn", "pysocks", "pytest-socket", "pytest-timeout",
     "quart", "quart-trio", "trio", "cryptography", "idna", "pyopenssl", "trustme", "brotli",
     "zstandard"),
    # Left out: a race in the test itself. Its connect callback asserts, outside the try that
    # releases urllib3's HTTP/2 probe lock, that no pool thread is reused; in a namespace the
    # tarpit address fails at once, threads are reused, and then the lock stays held: the
    # test fails, or (seen 2 times in 8 traced, 0 in 8 untraced) its other threads wait
    # for that lock forever and the session hangs.
    ("test", "-k", "not test_http2_probe_blocked_per_thread"),
)  # fmt: skip
TRIO = Suite(
    "trio",
    "trio==0.35.0",
    ("async_generator", "pyOpenSSL", "trustme", "cryptography"),
    # As trio's CI runs it: the installed package's tests, with the sdist's configuration;
    # tests that need linters (astor, pylint, jedi, mypy) skip.
    ("-c", "pyproject.toml", "--rootdir", ".", "--skip-optional-imports", "{site}/trio"),
)
SUITES = {suite.name: suite for suite in (URLLIB3, TRIO)}


def pip(venv: Path, *args: str) -> None:
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *args], check=True)


def ensure(suite: Suite, flavours: tuple[str, ...] = ("ours", "peer")) -> None:
    """Downloads and unpacks the sdist, and makes the venvs that are missing."""
    sdists = CACHE / "sdist"
    if not suite.source.exists():
        sdists.mkdir(parents=True, exist_ok=True)
        print(f"bench: fetching the sdist {suite.sdist}", file=sys.stderr)
        subprocess.run(
            [BASE_PYTHON, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             "-d", str(sdists), suite.sdist],
            check=True,
        )  # fmt: skip
        archive = sdists / (suite.source.name + ".tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(sdists)
    pinned = CACHE / f"{suite.name}-constraints.txt"
    for flavour in flavours:
        venv = suite.venv(flavour)
        if (venv / ".ready").exists():
            if flavour == "ours" and not from_this_checkout(venv):
                pip(venv, "--no-deps", "-e", str(REPO))  # made by another clone or worktree
            continue
        print(f"bench: making {venv}", file=sys.stderr)
        subprocess.run([BASE_PYTHON, "-m", "venv", "--clear", str(venv)], check=True)
        plugin = ["-e", str(REPO)] if flavour == "ours" else [PEER]
        extra = ["-c", str(pinned)] if flavour != "ours" and pinned.exists() else []
        pip(venv, *extra, str(suite.source), "pytest", "pytest-xdist", *suite.requires, *plugin)
        if flavour == "ours":
            frozen = subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "freeze", "--exclude-editable"],
                check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            # Not the project itself: it comes from the sdist, which a pin would conflict with.
            project = suite.sdist.split("==")[0].lower()
            names = [line.split("==")[0].split(" @")[0].lower() for line in frozen.splitlines()]
            lines = [line for line, name in zip(frozen.splitlines(), names)
                     if name not in ("netaudit", project)]  # fmt: skip
            pinned.write_text("\n".join(lines) + "\n")
        (venv / ".ready").touch()


def from_this_checkout(venv: Path) -> bool:
    """Whether the venv's editable netaudit is this checkout's source, not another one's."""
    found = venv.glob("lib/python*/site-packages/__editable__*netaudit*.pth")
    return any(str(REPO / "src") in pth.read_text().splitlines() for pth in found)


def peer_venv() -> Path:
    """The PyPI netaudit alone, with this checkout's pytest and pytest-xdist versions."""
    venv = CACHE / "peer"
    if not (venv / ".ready").exists():
        from importlib.metadata import version

        print(f"bench: installing {PEER} into {venv}", file=sys.stderr)
        subprocess.run([BASE_PYTHON, "-m", "venv", "--clear", str(venv)], check=True)
        pins = [f"{name}=={version(name)}" for name in ("pytest", "pytest-xdist")]
        pip(venv, PEER, *pins)
        (venv / ".ready").touch()
    return venv
