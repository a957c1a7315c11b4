"""netaudit's pytest plugin: ``pytest --netaudit`` runs the session under strace and fails it
when a test reached a destination the allowlist does not allow.

How it starts (docs/internals.md has the long form): the start hook (netaudit_start) has
usually put the whole pytest process under strace before pytest imported anything, with a
supervisor that is not a pytest process; where it did not, this plugin supervises from its
first hook (fallback.py). In the traced session (and in its xdist workers, and in any
``pytest --netaudit`` a test runs) the objects roles.py registers mark each test's start in the
trace, and at the end ask the supervisor for the run's part, judge it and report it.

Hooks only, and thin: nothing of the engine is imported until the audit is on, so a session
that does not audit pays for this module alone.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

from .. import ENV_RUN, ENV_SUPERVISOR, ENV_UNAUDITED
from . import marks, options

#: The status of the traced session, once this process has supervised it.
_STATUS = pytest.StashKey[int]()
#: The run the supervisor started this process to drive.
_TOP_RUN = pytest.StashKey[str]()
#: This session runs unaudited: strace cannot trace here, and only enabled = true asked.
_UNAUDITED = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> Generator[None, None, None]:
    """Outermost, so that it runs before output capturing starts and conftests load."""
    from . import guard

    namespace = early_config.known_args_namespace
    # Kept for the session's children (xdist workers), which then skip as quietly; one that
    # asks with --netaudit (a nested run) is not lenient, and still fails closed.
    said = ENV_UNAUDITED in os.environ
    guard.check_values(early_config)
    project = options.project_config(early_config)
    wanted = options.enabled(namespace, project)
    if not getattr(namespace, "no_netaudit", False):
        guard.check_project(early_config, project, wanted)
    if ENV_SUPERVISOR in os.environ:
        run = os.environ.pop(ENV_RUN, None)  # for this process only, not for its children
        if run is not None:
            early_config.stash[_TOP_RUN] = run
        if wanted and options.runs_tests(namespace):
            # Checked now, before any conftest.py is imported: a mistake stops everything.
            early_config.stash[options.SETTINGS] = options.settings(
                early_config, namespace, project
            )
    elif wanted and options.runs_tests(namespace):
        lenient = options.lenient(namespace, project)
        if said and lenient:  # the start hook found that strace cannot trace, and said so
            early_config.stash[_UNAUDITED] = True
            return (yield)
        from . import fallback

        settings, _ = options.settings(early_config, namespace, project)
        status = fallback.supervise(early_config, settings, lenient)
        if status is None:
            os.environ[ENV_UNAUDITED] = "1"
            early_config.stash[_UNAUDITED] = True
            return (yield)
        early_config.stash[_STATUS] = status
        # Done: the traced session did everything; nothing of it may happen again here.
        fallback.stand_down(early_config, namespace, args, keep=_this_module())
    return (yield)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    if _STATUS in config.stash:
        return config.stash[_STATUS]
    if ENV_SUPERVISOR in os.environ or _UNAUDITED in config.stash:
        return None
    project = options.project_config(config)
    if not options.enabled(config.option, project) or not options.runs_tests(config.option):
        return None
    # Registered after the early hook (from a conftest.py): supervise from here.
    from . import fallback

    settings, _ = options.settings(config, config.option, project)
    return fallback.supervise(config, settings, options.lenient(config.option, project))


def pytest_configure(config: pytest.Config) -> None:
    marks.register(config)
    token = os.environ.get(ENV_SUPERVISOR)
    worker = getattr(config, "workerinput", None)
    if token is None and worker is None:
        return
    from . import roles

    roles.start(config, token, config.stash.get(_TOP_RUN, None))


def _this_module() -> object:
    import sys

    return sys.modules[__name__]
