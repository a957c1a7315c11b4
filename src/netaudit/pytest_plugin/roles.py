"""Which part a traced pytest process plays in its run, and the objects each part registers.

* The session (or an xdist controller, or a ``pytest --netaudit`` a test runs): marks its
  tests, and judges and reports the whole run at its end (Reporter).
* An xdist worker: marks the tests it runs; its controller reports.
* A session the supervisor started that turns out to audit nothing (an opt-out, --collect-only):
  it only says so, so that the supervisor does not take its silence for a failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .. import markers
from . import junit, options
from .boundaries import Boundaries
from .link import Link, Role
from .reporting import Reporter
from .where import WhereRecorder
from .xdist import WHERE_KEY, XdistGlue, worker_role

if TYPE_CHECKING:
    from ..settings import Settings


def start(config: pytest.Config, token: str | None, top_run: str | None) -> None:
    """From pytest_configure, in a traced process (token) or an xdist worker of an audited
    run; ``top_run`` is the run the supervisor started this process for, if it did."""
    worker = worker_role(config)
    if worker is not None:
        role = Role(*worker)
    elif token is not None:
        role = Role(token, top_run or markers.new_run_id())
    else:
        return
    project = options.project_config(config)
    if not options.enabled(config.option, project) or not options.runs_tests(config.option):
        if top_run is not None:
            Link(role, {}, audit=False, reason="not audited").close()
        return
    found = config.stash.get(options.SETTINGS, None)
    settings, allowlist = found or options.settings(config, config.option, project)
    link = Link(role, settings.to_wire(), live=settings.block)
    config.add_cleanup(link.close)
    _check_block(link, settings, top=top_run is not None)
    if top_run is not None:  # a nested run shares its parent's trace, as it was started
        _check_trace(link, settings.names, settings.io_uring)
    where = WhereRecorder(config.rootpath)
    config.add_cleanup(where.close)
    boundaries = Boundaries(link, where, link.welcome.strace_cpu)
    config.add_cleanup(boundaries.close)
    manager = config.pluginmanager
    manager.register(boundaries, "netaudit-boundaries")
    properties = junit.wanted(config)
    if properties or settings.fail_tests:
        failures = settings.fail_tests or (properties and settings.junit_failures)
        verdicts = junit.Verdicts(link, boundaries, allowlist, failures, properties)
        manager.register(verdicts, "netaudit-junit")
    if role.worker:
        manager.register(_Worker(config, where), "netaudit-worker")
        return
    reporter = Reporter(config, settings, allowlist, link, where, boundaries)
    manager.register(reporter, "netaudit-reporter")
    if manager.hasplugin("xdist"):
        manager.register(XdistGlue(role.token, role.run, where.add), "netaudit-xdist")


def _check_trace(link: Link, names: bool, io_uring: str) -> None:
    """The trace must have been started as this session's settings ask (the start hook read
    them before pytest did)."""
    welcome = link.welcome
    if (names and not welcome.names) or io_uring != welcome.io_uring:
        link.close()
        raise options.usage_error(
            "this session's strace was started with "
            f"names={welcome.names}, io_uring={welcome.io_uring!r}, but its settings say "
            f"names={names}, io_uring={io_uring!r}: the start hook read the configuration "
            "differently from pytest; run with NETAUDIT_EARLY_START=0, and please report this"
        )


def _check_block(link: Link, settings: Settings, *, top: bool) -> None:
    """Block mode is decided before the session starts (the filter is installed before the
    command runs): the session's settings must be what the supervisor judges by. A run
    started inside a session (a nested ``pytest --netaudit``) is judged by that session's."""
    welcome = link.welcome
    path = settings.allowlist.path
    mine = (settings.block_errno, None if path is None else str(path)) if settings.block else None
    theirs = (welcome.block_errno, welcome.allowlist) if welcome.block else None
    if (top and mine != theirs) or (not top and settings.block and not welcome.block):
        link.close()
        said = "without block mode" if theirs is None else f"block_errno, allowlist = {theirs}"
        wanted = "no block mode" if mine is None else f"block_errno, allowlist = {mine}"
        raise pytest.UsageError(
            f"netaudit: this session's supervisor was started {said}, but its settings say "
            f"{wanted}: "
            + (
                "the start hook read the configuration differently from pytest; run with "
                "NETAUDIT_EARLY_START=0, and please report this"
                if top
                else "a session inside an audited session that does not block cannot block "
                "(block mode is set when the outermost session starts)"
            )
        )


class _Worker:
    """An xdist worker's end: the call sites its audit hook recorded go to the controller."""

    def __init__(self, config: pytest.Config, where: WhereRecorder) -> None:
        self.config = config
        self.where = where

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self) -> None:
        self.where.close()
        workeroutput = getattr(self.config, "workeroutput", None)
        if isinstance(workeroutput, dict):
            workeroutput[WHERE_KEY] = self.where.export()  # xdist sends it after this hook
