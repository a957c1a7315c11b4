"""netaudit's build backend: setuptools', plus the start hook's .pth file in every wheel.

A .pth file must sit at the top of site-packages, which setuptools cannot put there from
pyproject.toml alone, and not at all in an editable install. So each wheel setuptools builds
(a regular one or an editable one) gets ``netaudit-early.pth`` added, with its RECORD line,
and pip or any other installer puts it in place and removes it on uninstall.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403 - the rest of the PEP 517/660 interface

PTH_NAME = "netaudit-early.pth"
#: Runs at every interpreter start: a string test first, so that a process that is not
#: pytest's command line (argv[0] is its script, or "-m" until the module is known) pays
#: almost nothing; netaudit_start.start() then decides (docs/internals.md).
PTH = (
    b'import sys; (getattr(sys, "argv", None) or [""])[0].endswith(("-m", "pytest", "py.test"))'
    b' and __import__("netaudit_start").start()\n'
)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):  # type: ignore[no-untyped-def]
    name = _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
    add_pth(os.path.join(wheel_directory, name))
    return name


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):  # type: ignore[no-untyped-def]
    name = _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
    add_pth(os.path.join(wheel_directory, name))
    return name


def add_pth(wheel: str) -> None:
    """Rewrites the wheel with the .pth file at its top and a line for it in RECORD."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(PTH).digest()).rstrip(b"=").decode()
    record_line = f"{PTH_NAME},sha256={digest},{len(PTH)}\n"
    temporary = wheel + ".tmp"
    with (
        zipfile.ZipFile(wheel) as old,
        zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as new,
    ):
        for item in old.infolist():
            data = old.read(item.filename)
            if item.filename.endswith(".dist-info/RECORD"):
                new.writestr(PTH_NAME, PTH)
                data += record_line.encode()
            new.writestr(item, data)
    os.replace(temporary, wheel)
