"""A pytest plugin for bench/where_hook.py (``-p where_import``): imports what ``where_on``
imports and does nothing else, so that the untraced pair differs only by the hook."""

from __future__ import annotations

from netaudit.pytest_plugin import where

__all__ = ["where"]
