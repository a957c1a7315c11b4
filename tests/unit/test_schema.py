"""The allowlist's JSON Schema (for editors) agrees with the loader: it accepts every file the
loader accepts, and refuses every mistake a schema can express."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from netaudit.allowlist import loads, schema
from netaudit.cli import main
from netaudit.errors import AllowlistError
from tests.unit.test_allowlist import BAD, EVERYTHING, SPEC_EXAMPLE
from tests.unit.test_policy import SCOPED

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).parents[2]

#: Mistakes only the loader sees: YAML-level ones (duplicate keys, yes/no, octal and base-60
#: numbers, merge keys), and ones that need code (host bits, v4-mapped addresses, globs,
#: unique names, a range's order). docs/allowlist.md ("Editor support") says so.
LOADER_ONLY = {
    "version-float",
    "duplicate-top-level-key",
    "builtins-yes",
    "duplicate-rule-key",
    "v4-mapped-addr",
    "v4-mapped-cidr",
    "cidr-host-bits",
    "port-float",
    "port-octal",
    "port-base-60",
    "port-hex",
    "port-range-backwards",
    "port-range-too-big",
    "glob-unclosed-class",
    "glob-backwards-range",
    "duplicate-rule-name",
    "duplicate-unnamed-rule",
    "built-in-name",
    "merge-key",
}


def validator() -> Any:
    document = json.loads(schema())
    jsonschema.Draft7Validator.check_schema(document)
    return jsonschema.Draft7Validator(document)


def schema_accepts(text: str) -> bool:
    return not list(validator().iter_errors(yaml.safe_load(text)))


def bundled() -> list[Path]:
    return sorted(ROOT.glob("examples/**/*.yaml"))


def documented() -> list[str]:
    """Every complete allowlist the docs show (```yaml blocks that start with version: 1)."""
    blocks = []
    for doc in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]:
        text = doc.read_text(encoding="utf-8")
        found = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
        blocks += [b for b in found if re.search(r"^version: 1$", b, re.MULTILINE)]
    return blocks


def test_there_are_bundled_and_documented_allowlists_to_check() -> None:
    assert len(bundled()) >= 2
    assert len(documented()) >= 3


@pytest.mark.parametrize(
    "text",
    [SPEC_EXAMPLE, EVERYTHING, SCOPED, *documented()]
    + [path.read_text(encoding="utf-8") for path in bundled()],
)
def test_every_valid_allowlist_passes_the_schema(text: str) -> None:
    loads(text)  # the loader's word first: each of these is valid
    assert schema_accepts(text)


@pytest.mark.parametrize(("text", "message"), BAD)
def test_the_schema_refuses_every_mistake_it_can_express(text: str, message: str) -> None:
    with pytest.raises(AllowlistError):
        loads(text)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return  # not YAML at all: the editor says so before any schema
    param_id = next(p.id for p in BAD if p.values[0] == text)
    refused = bool(list(validator().iter_errors(data)))
    assert refused != (param_id in LOADER_ONLY), param_id


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\nallowlist:\n  - family: AF_INET\n    tests: []\n",
        "version: 1\nallowlist:\n  - family: AF_INET\n    tests: [1]\n",
        "version: 1\nallowlist:\n  - family: AF_INET\n    tests: ''\n",
    ],
)
def test_bad_tests_globs_are_refused_by_both(text: str) -> None:
    with pytest.raises(AllowlistError):
        loads(text)
    assert not schema_accepts(text)


def test_netaudit_schema_prints_the_bundled_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(
        (ROOT / "src" / "netaudit" / "allowlist.schema.json").read_text(encoding="utf-8")
    )


def test_the_schema_ships_as_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "allowlist.schema.json" in config["tool"]["setuptools"]["package-data"]["netaudit"]
