"""A pytest plugin for bench/where_hook.py (``-p where_on``): an untraced session with the
where-in-the-code recorder driven as the netaudit driver drives it, to time the hook alone."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from netaudit.pytest_plugin.where import WhereRecorder

_recorder: WhereRecorder | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _recorder
    _recorder = WhereRecorder(config.rootpath)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    assert _recorder is not None
    _recorder.begin(item.nodeid, getattr(item, "obj", None))
    try:
        return (yield)
    finally:
        _recorder.end()


def pytest_sessionfinish() -> None:
    assert _recorder is not None
    _recorder.close()
