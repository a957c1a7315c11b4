"""[tool.netaudit] and the allowlist resolution order."""

from __future__ import annotations

from pathlib import Path

import pytest

from netaudit.errors import ConfigError
from netaudit.settings import find_pyproject, load_project_config, resolve, write_report


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_flag_comes_first(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.netaudit]\nallowlist = "conf.yaml"\n')
    write(tmp_path / "netaudit.yaml", "version: 1\n")
    choice = resolve(tmp_path, allowlist=str(tmp_path / "flag.yaml")).allowlist
    assert choice.path == tmp_path / "flag.yaml"
    assert choice.source == "command line"


def test_pyproject_comes_second_relative_to_its_own_directory(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.netaudit]\nallowlist = "policy/conf.yaml"\n')
    write(tmp_path / "netaudit.yaml", "version: 1\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    choice = resolve(sub).allowlist
    assert choice.path == tmp_path / "policy" / "conf.yaml"


def test_netaudit_yaml_in_the_current_directory_comes_third(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.other]\nx = 1\n")
    write(tmp_path / "netaudit.yaml", "version: 1\n")
    assert resolve(tmp_path).allowlist.path == tmp_path / "netaudit.yaml"


def test_with_nothing_configured_only_the_builtins_apply(tmp_path: Path) -> None:
    choice = resolve(tmp_path).allowlist
    assert choice.path is None
    assert choice.describe() == "built-in rules only"
    assert choice.load().builtins


def test_the_nearest_pyproject_is_used(tmp_path: Path) -> None:
    inner = write(tmp_path / "a" / "pyproject.toml", "")
    write(tmp_path / "pyproject.toml", "")
    assert find_pyproject(tmp_path / "a") == inner


def test_an_unknown_key_is_an_error_with_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "pyproject.toml",
        '[project]\nname = "x"\n\n[tool.netaudit]\nenabled = true\nalowlist = "a.yaml"\n',
    )
    with pytest.raises(ConfigError) as err:
        load_project_config(path)
    assert str(err.value).startswith(f"{path}:6: unknown key 'alowlist' in [tool.netaudit]")


def test_a_wrong_type_is_an_error_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "pyproject.toml", '[tool.netaudit]\nverbose = "yes"\n')
    with pytest.raises(ConfigError) as err:
        load_project_config(path)
    assert str(err.value) == (
        f"{path}:2: [tool.netaudit] verbose must be a boolean (true or false), not 'yes'"
    )


def test_invalid_toml_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "pyproject.toml", "[tool.netaudit\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_project_config(path)


def test_flags_override_pyproject_for_every_setting(tmp_path: Path) -> None:
    write(
        tmp_path / "pyproject.toml",
        '[tool.netaudit]\nverbose = true\nsuggest_rules = true\nreport = "out/r.json"\n'
        "names = true\n",
    )
    from_config = resolve(tmp_path)
    assert (from_config.verbose, from_config.suggest_rules, from_config.names) == (True,) * 3
    assert from_config.report == tmp_path / "out" / "r.json"
    flagged = resolve(tmp_path, verbose=False, suggest_rules=False, report="x.json", names=False)
    assert (flagged.verbose, flagged.suggest_rules, flagged.names) == (False,) * 3
    assert flagged.report == tmp_path / "x.json"


def test_a_missing_file_named_in_pyproject_is_an_error_at_that_line(tmp_path: Path) -> None:
    pyproject = write(
        tmp_path / "pyproject.toml",
        '[project]\nname = "x"\n\n[tool.netaudit]\nallowlist = "gone.yaml"\nreport = "no/r.json"\n',
    )
    write(tmp_path / "no", "a file where the report's folder would be\n")
    settings = resolve(tmp_path)
    with pytest.raises(ConfigError) as allowlist:
        settings.allowlist.load()
    assert (allowlist.value.path, allowlist.value.line) == (str(pyproject), 5)
    assert str(tmp_path / "gone.yaml") in allowlist.value.message
    with pytest.raises(ConfigError) as report:
        settings.check_report()
    assert (report.value.path, report.value.line) == (str(pyproject), 6)
    assert f"{tmp_path / 'no'} is a file, so the report's folder cannot be made" in (
        report.value.message
    )


def test_a_missing_file_named_by_a_flag_is_an_error_about_that_file(tmp_path: Path) -> None:
    write(tmp_path / "no", "a file where the report's folder would be\n")
    settings = resolve(tmp_path, allowlist="gone.yaml", report="no/r.json")
    with pytest.raises(ConfigError) as allowlist:
        settings.allowlist.load()
    assert allowlist.value.path == str(tmp_path / "gone.yaml")
    with pytest.raises(ConfigError) as report:
        settings.check_report()
    assert report.value.path == str(tmp_path / "no" / "r.json")


def test_keep_trace_resolves_like_the_report_and_is_checked_before_the_run(
    tmp_path: Path,
) -> None:
    pyproject = write(tmp_path / "pyproject.toml", '[tool.netaudit]\nkeep_trace = "t/trace.log"\n')
    sub = tmp_path / "sub"
    sub.mkdir()
    assert resolve(sub).keep_trace == tmp_path / "t" / "trace.log"  # relative to the project
    assert resolve(sub, keep_trace="mine.log").keep_trace == sub / "mine.log"
    assert resolve(tmp_path / "sub", config=load_project_config(None)).keep_trace is None
    resolve(sub).check_report()  # a missing folder is made when the trace is kept
    (tmp_path / "t").write_text("a file, where the folder would be")
    with pytest.raises(ConfigError) as blocked:
        resolve(sub).check_report()
    assert (blocked.value.path, blocked.value.line) == (str(pyproject), 2)
    assert "keep_trace = " in blocked.value.message
    assert "so the keep trace's folder cannot be made there" in blocked.value.message


def test_a_report_in_folders_that_do_not_exist_yet_is_accepted_and_they_are_made(
    tmp_path: Path,
) -> None:
    settings = resolve(tmp_path, report="out/deep/r.json")
    settings.check_report()
    assert settings.report is not None
    write_report(settings.report, lambda file: print("{}", file=file))
    assert (tmp_path / "out" / "deep" / "r.json").read_text() == "{}\n"


def test_netaudit_yaml_in_pytests_rootdir_is_found_from_a_subfolder(tmp_path: Path) -> None:
    write(tmp_path / "netaudit.yaml", "version: 1\nallowlist: []\n")
    sub = tmp_path / "tests" / "sub"
    sub.mkdir(parents=True)
    found = resolve(sub, rootdir=tmp_path).allowlist
    assert found.path == tmp_path / "netaudit.yaml"
    assert found.describe() == (
        f"{tmp_path / 'netaudit.yaml'} (netaudit.yaml in pytest's rootdir; none in the current "
        "directory)"
    )
    assert resolve(sub).allowlist.path is None  # the command line has no rootdir
    write(sub / "netaudit.yaml", "version: 1\nallowlist: []\n")
    here = resolve(sub, rootdir=tmp_path).allowlist  # the current directory comes first
    assert (here.path, here.source) == (
        sub / "netaudit.yaml",
        "netaudit.yaml in the current directory",
    )


def test_the_system_resolvers_are_read_from_resolv_conf(tmp_path: Path) -> None:
    from netaudit import resolvers

    conf = write(
        tmp_path / "resolv.conf",
        "# comment\nnameserver 10.255.255.53\nnameserver fe80::1%eth0\nnameserver ::ffff:10.0.0.2\n"
        "nameserver bogus\nsearch example.test\n",
    )
    assert resolvers.nameservers(conf) == {"10.255.255.53", "fe80::1", "10.0.0.2"}
    assert resolvers.nameservers(tmp_path / "missing") == frozenset()
