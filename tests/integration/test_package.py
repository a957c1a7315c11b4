"""The sdist and the wheel, built from this checkout and installed into fresh venvs as a user
would install them.

Offline: the build runs without isolation (setuptools and build come with the test extras),
and each fresh venv gets its dependencies copied from this environment, file by file as
their RECORD lists them, so pip resolves them without a package index.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
#: What a checkout holds besides its sources: never part of a build.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv*", "__pycache__", "*.egg-info", "build", "dist", ".work", ".*_cache",
    ".hypothesis",
)  # fmt: skip
ENTRY_POINT = """
import json
from importlib import metadata
found = metadata.entry_points()
group = found.select(group="pytest11") if hasattr(found, "select") else found.get("pytest11", [])
print(json.dumps({ep.name: ep.value for ep in group}))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"wheel": ..., "sdist": ...}: `python -m build` makes the sdist, then the wheel from
    the sdist, so a file missing from the sdist fails the wheel too."""
    scratch = tmp_path_factory.mktemp("build")
    source, out = scratch / "netaudit", scratch / "dist"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    argv = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == len(sdists) == 1, list(out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def fresh_venv(folder: Path, *seeds: str) -> Path:
    """A venv with no pip and nothing installed but ``seeds``, copied from this environment."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.check_output([str(python), "-c", where], text=True).strip())
    for name in seeds:
        dist = metadata.distribution(name)
        for file in dist.files or ():
            source = Path(str(dist.locate_file(file)))
            if ".." not in file.parts and source.is_file():  # scripts live outside site
                (site / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, site / file)
    return python


def dependencies() -> list[str]:
    """netaudit's own requirements on this Python, as its installed metadata states them."""
    wanted = [Requirement(line) for line in metadata.requires("netaudit") or ()]
    return [r.name for r in wanted if r.marker is None or r.marker.evaluate({"extra": ""})]


def pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """This environment's pip acting on ``python``'s venv, with no index and no pip config."""
    argv = [sys.executable, "-m", "pip", "--isolated", "--python", str(python), *args]
    return subprocess.run(argv, capture_output=True, text=True)


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_each_distribution_installs_into_a_fresh_venv_and_runs(
    built: dict[str, Path], kind: str, tmp_path: Path
) -> None:
    # An sdist is built on install: without isolation, from a setuptools that is there.
    backend = ("setuptools",) if kind == "sdist" else ()
    python = fresh_venv(tmp_path / "venv", *dependencies(), *backend)
    installed = pip(python, "install", "--no-index", "--no-build-isolation", str(built[kind]))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    checked = pip(python, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr

    netaudit = str(python.parent / "netaudit")
    said = subprocess.run([netaudit, "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert said.stdout == f"netaudit {metadata.version('netaudit')}\n", said.stderr
    where = subprocess.run(
        [str(python), "-c", "import netaudit; print(netaudit.__file__)"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    package = Path(where.stdout.strip()).parent
    assert package.is_relative_to(tmp_path / "venv"), where.stderr
    assert (package / "py.typed").is_file()
    plugin = subprocess.check_output([str(python), "-c", ENTRY_POINT], text=True)
    assert json.loads(plugin) == {
        "netaudit": "netaudit.pytest_plugin",
        "netaudit_options": "netaudit.pytest_plugin.always",
    }
    schema = subprocess.check_output([netaudit, "schema"], text=True, cwd=tmp_path)
    assert json.loads(schema)["title"]  # package data (the schema) is in the distribution
    # The start hook: its .pth file at the top of site-packages, and its module beside it;
    # both go with an uninstall, so no stale hook is left to run at every start.
    site = package.parent
    assert "netaudit_start" in (site / "netaudit-early.pth").read_text()
    assert (site / "netaudit_start.py").is_file()
    removed = pip(python, "uninstall", "-y", "netaudit")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not (site / "netaudit-early.pth").exists()
    assert not (site / "netaudit_start.py").exists()
