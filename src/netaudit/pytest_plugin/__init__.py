"""netaudit's pytest plugin: ``pytest --netaudit`` runs the session under strace and fails it
when a test reached a destination the allowlist does not allow.

How it starts (docs/pytest-plugin.md has the long form): the pytest the user started becomes
the supervisor. Before any conftest.py is imported it runs the very same command again as a
child under strace, follows the trace as it is written, and returns the child's status. In
the child (and in its xdist workers, and in any ``pytest --netaudit`` a test runs) a Driver
marks each test's start and end in the trace, and at the end asks the supervisor for its
run's part, judges it and reports it through the terminal reporter.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Generator

import pytest

from .. import markers
from ..supervisor import ENV_RUN, ENV_SUPERVISOR
from . import launch, marks, options
from .driver import Driver, Role
from .xdist import XdistGlue, worker_role

#: The status of the traced session, once this process has supervised it.
_STATUS = pytest.StashKey[int]()
#: The run a supervisor started this process to drive.
_TOP_RUN = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> Generator[None, None, None]:
    """Outermost, so that it runs before output capturing starts and conftests load."""
    if ENV_SUPERVISOR in os.environ:
        run = os.environ.pop(ENV_RUN, None)  # for this process only, not for its children
        if run is not None:
            early_config.stash[_TOP_RUN] = run
    else:
        namespace = early_config.known_args_namespace
        status = _supervise(early_config, namespace)
        if status is not None:
            # Done: this process must not import the project's conftests untraced, nor
            # trip over their options, on its way to returning the status.
            early_config.stash[_STATUS] = status
            namespace.noconftest = True
            args[:] = [str(early_config.invocation_params.dir)]
    return (yield)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    if _STATUS in config.stash:
        return config.stash[_STATUS]
    if ENV_SUPERVISOR in os.environ:
        return None
    # Registered after the early hook (from a conftest.py): supervise from here.
    return _supervise(config, config.option)


def _supervise(config: pytest.Config, namespace: argparse.Namespace) -> int | None:
    project = options.project_config(config)
    if not options.enabled(namespace, project) or not options.runs_tests(namespace):
        return None
    return launch.supervise(config, *options.settings(config, namespace, project))


def pytest_configure(config: pytest.Config) -> None:
    marks.register(config)
    role = _role(config)
    if role is None:
        return
    project = options.project_config(config)
    if not options.enabled(config.option, project) or not options.runs_tests(config.option):
        return
    driver = Driver(config, *options.settings(config, config.option, project), role)
    config.add_cleanup(driver.close)
    config.pluginmanager.register(driver, "netaudit-driver")
    if role.reports and config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(
            XdistGlue(role.token, role.run, driver.where.add), "netaudit-xdist"
        )


def _role(config: pytest.Config) -> Role | None:
    """The run this process drives: an xdist worker's, the one its supervisor started it for,
    or a new one (a ``pytest --netaudit`` run from inside a traced session)."""
    worker = worker_role(config)
    if worker is not None:
        return Role(*worker)
    token = os.environ.get(ENV_SUPERVISOR)
    if token is None:
        return None
    run = config.stash.get(_TOP_RUN, None) or markers.new_run_id()
    return Role(token, run)
