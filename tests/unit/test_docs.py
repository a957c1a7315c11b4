"""The user docs name what exists: every option of the command line and of the plugin."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from netaudit.cli import build_parser

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_docs_cli_names_every_option_of_every_command() -> None:
    text = (DOCS / "cli.md").read_text()
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{name} {option}"
        for name, parser in commands.choices.items()
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help" and f"`{option}" not in text
    ]
    assert missing == []


def test_the_plugin_options_table_lists_exactly_the_plugins_options(tmp_path: Path) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "netaudit", "--help"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    registered = set(re.findall(r"^\s+(--(?:no-)?netaudit[a-z-]*)", shown.stdout, re.MULTILINE))
    assert "--netaudit" in registered, shown.stdout + shown.stderr
    options = (DOCS / "pytest-plugin.md").read_text().split("## Options\n", 1)[1]
    table = options.strip().split("\n\n")[0]
    documented = set(re.findall(r"^\| `(--(?:no-)?netaudit[a-z-]*)", table, re.MULTILINE))
    assert documented == registered
