"""What stays when the plugin is switched off with ``-p no:netaudit``: its options and its
marker, so that a project's ``addopts = "--netaudit"`` and ``--strict-markers`` still parse,
and the run goes on unaudited, as asked, with a header line that says so.

A plugin of its own (entry point ``netaudit_options``), as pytest blocks plugins by name: the
main plugin (``netaudit``) registers the same options and marker when this one is not loaded
(``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` with ``-p netaudit``); each registers them once.
"""

from __future__ import annotations

import pytest

from . import marks, options

#: The main plugin's name, as ``-p no:netaudit`` blocks it.
MAIN = "netaudit"


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    marks.register(config)


def pytest_report_header(config: pytest.Config) -> list[str]:
    manager = config.pluginmanager
    if manager.has_plugin(MAIN) or not getattr(config.option, "netaudit", False):
        return []
    return ["netaudit: not auditing: the plugin is switched off (-p no:netaudit)"]
