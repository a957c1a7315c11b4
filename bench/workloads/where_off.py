"""A pytest plugin for bench/where_hook.py (``-p where_off``): pytest --netaudit exactly as
shipped, except that the where-in-the-code audit hook is never installed."""

from __future__ import annotations

import sys
from typing import Any

from netaudit.pytest_plugin import where


class _SysWithoutHooks:
    """``sys`` for the recorder's module, with addaudithook doing nothing."""

    def __getattr__(self, name: str) -> Any:
        return getattr(sys, name)

    @staticmethod
    def addaudithook(hook: object) -> None:
        return None


where.sys = _SysWithoutHooks()  # type: ignore[attr-defined,assignment]
