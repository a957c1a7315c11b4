"""The capture module without the real strace: argv building and the pre-flight, on small fakes."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from netaudit.errors import CommandError, TraceError, TracerUnavailable
from netaudit.trace import (
    TRACED_SYSCALLS,
    TracedRun,
    Tracer,
    find_tracer,
    has_hole,
    strace_argv,
    tampered,
)

TRACE_SET = "trace=" + ",".join(TRACED_SYSCALLS)
DENIED = (
    "strace: test_ptrace_get_syscall_info: PTRACE_TRACEME: Operation not permitted\n"
    "strace: ptrace(PTRACE_TRACEME, ...): Operation not permitted\n"
)


def fake_strace(
    folder: Path,
    *,
    version: str = "strace -- version 6.1",
    seccomp: tuple[int, str] = (0, ""),
    plain: tuple[int, str] = (0, ""),
) -> Path:
    """An executable that answers ``-V`` and trial runs the way a given strace would.

    Each trial run appends its arguments to ``calls`` beside it.
    """
    path = folder / "strace"
    calls = folder / "calls"
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = -V ]; then printf "%s\\n" "{version}"; exit 0; fi\n'
        f'echo "$*" >> "{calls}"\n'
        'case " $* " in *" --seccomp-bpf "*)\n'
        f"  printf '{seccomp[1]}' >&2; exit {seccomp[0]};;\n"
        "esac\n"
        f"printf '{plain[1]}' >&2; exit {plain[0]}\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def trial_runs(folder: Path) -> list[str]:
    calls = folder / "calls"
    return calls.read_text().splitlines() if calls.exists() else []


# --- argv ------------------------------------------------------------------------------------


def test_argv_with_seccomp_bpf() -> None:
    tracer = Tracer("/usr/bin/strace", "6.1", seccomp_bpf=True)
    argv = strace_argv(tracer, "/tmp/d/trace.log", ["python3", "-c", "pass"])
    assert argv == [
        "/usr/bin/strace", "-f", "--seccomp-bpf", "-q", "-e", "signal=SIGKILL", "-ttt",
        "-o", "/tmp/d/trace.log", "-e", TRACE_SET, "--", "python3", "-c", "pass",
    ]  # fmt: skip


def test_argv_with_names_reads_dns_payloads_and_socket_peers() -> None:
    tracer = Tracer("/usr/bin/strace", "6.1", seccomp_bpf=True)
    argv = strace_argv(tracer, "/tmp/d/trace.log", ["true"], names=True)
    assert argv == [
        "/usr/bin/strace", "-f", "--seccomp-bpf", "-q", "-e", "signal=SIGKILL", "-ttt",
        "-o", "/tmp/d/trace.log", "-yy", "-x", "-s", "512",
        "-e", TRACE_SET + ",recvfrom,recvmsg", "--", "true",
    ]  # fmt: skip


def test_argv_without_seccomp_bpf_falls_back_to_plain_ptrace() -> None:
    tracer = Tracer("/usr/bin/strace", "5.2", seccomp_bpf=False)
    argv = strace_argv(tracer, "/tmp/d/trace.log", ["true"])
    assert "--seccomp-bpf" not in argv
    assert argv[:2] == ["/usr/bin/strace", "-f"]


def test_argv_puts_double_dash_before_a_command_that_looks_like_an_option() -> None:
    tracer = Tracer("/s", "6.1", True)
    argv = strace_argv(tracer, "/l", ["-p", "1"], syscalls=["connect", "execve"])
    assert argv[-4:] == ["trace=connect,execve", "--", "-p", "1"]


@pytest.mark.parametrize("log", ["trace.log", "|cat >x", "!cmd", ""])
def test_argv_wants_an_absolute_log_path(log: str) -> None:
    with pytest.raises(ValueError, match="absolute"):
        strace_argv(Tracer("/s", "6.1", True), log, ["true"])


@pytest.mark.parametrize("syscalls", [[], ["connect,execve"], ["!connect"], ["%network"]])
def test_argv_wants_plain_syscall_names(syscalls: list[str]) -> None:
    with pytest.raises(ValueError, match="syscall"):
        strace_argv(Tracer("/s", "6.1", True), "/l", ["true"], syscalls)


def test_argv_wants_a_command() -> None:
    with pytest.raises(ValueError, match="command"):
        strace_argv(Tracer("/s", "6.1", True), "/l", [])


def test_traced_set_covers_egress_spawn_and_escape_hatches() -> None:
    assert {"connect", "sendto", "sendmsg", "sendmmsg"} <= set(TRACED_SYSCALLS)
    assert {"execve", "clone", "clone3", "set_robust_list"} <= set(TRACED_SYSCALLS)
    assert {"io_uring_setup", "seccomp", "bind"} <= set(TRACED_SYSCALLS)  # the escape hatches


# --- pre-flight ------------------------------------------------------------------------------


def test_not_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(TracerUnavailable, match=r"needs Linux.*darwin"):
        find_tracer()


def test_given_path_missing(tmp_path: Path) -> None:
    with pytest.raises(TracerUnavailable, match="apt-get install strace") as info:
        find_tracer(str(tmp_path / "strace"))
    assert str(tmp_path / "strace") in str(info.value)


def test_not_on_an_empty_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(TracerUnavailable, match=r"not found on PATH.*apt-get install strace"):
        find_tracer()


def test_a_working_strace_is_found_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_strace(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_tracer() == Tracer(str(fake), "6.1", seccomp_bpf=True, warnings=())
    (run,) = trial_runs(tmp_path)
    assert "--seccomp-bpf" in run.split()
    assert TRACE_SET in run.split()


def test_something_that_is_not_strace(tmp_path: Path) -> None:
    fake = fake_strace(tmp_path, version="hello")
    with pytest.raises(TracerUnavailable, match="does not look like strace"):
        find_tracer(str(fake))


def test_ptrace_not_permitted_says_what_to_change(tmp_path: Path) -> None:
    fake = fake_strace(tmp_path, seccomp=(1, DENIED), plain=(1, DENIED))
    with pytest.raises(TracerUnavailable) as info:
        find_tracer(str(fake))
    message = str(info.value)
    assert "ptrace is not permitted" in message
    assert "SYS_PTRACE" in message and "ptrace_scope" in message
    assert "Operation not permitted" in message


def test_seccomp_bpf_unavailable_falls_back_with_a_warning(tmp_path: Path) -> None:
    notice = "strace: seccomp filter is requested but unavailable\n"
    fake = fake_strace(tmp_path, seccomp=(0, notice))
    tracer = find_tracer(str(fake))
    assert tracer.seccomp_bpf is False
    (warning,) = tracer.warnings
    assert "slower" in warning
    assert ["--seccomp-bpf" in run.split() for run in trial_runs(tmp_path)] == [True, False]


def test_seccomp_bpf_denied_by_ptrace_is_not_a_fallback(tmp_path: Path) -> None:
    both = DENIED + "strace: seccomp filter is requested but unavailable\n"
    fake = fake_strace(tmp_path, seccomp=(1, both))
    with pytest.raises(TracerUnavailable, match="ptrace is not permitted"):
        find_tracer(str(fake))


def test_old_strace_is_not_asked_for_seccomp_bpf(tmp_path: Path) -> None:
    fake = fake_strace(tmp_path, version="strace -- version 5.1", seccomp=(1, "unknown\n"))
    tracer = find_tracer(str(fake))
    assert (tracer.version, tracer.seccomp_bpf) == ("5.1", False)
    assert "slower" in tracer.warnings[0]
    assert all("--seccomp-bpf" not in run.split() for run in trial_runs(tmp_path))


def test_strace_that_does_not_know_a_syscall_is_too_old(tmp_path: Path) -> None:
    fake = fake_strace(tmp_path, seccomp=(1, "strace: invalid system call 'clone3'\n"))
    with pytest.raises(TracerUnavailable, match=r"too old.*clone3"):
        find_tracer(str(fake))


def test_strace_that_fails_otherwise_is_not_handed_out(tmp_path: Path) -> None:
    fake = fake_strace(tmp_path, seccomp=(0, "strace: something odd\n"))
    with pytest.raises(TracerUnavailable, match="something odd"):
        find_tracer(str(fake))


# --- TracedRun without running anything ------------------------------------------------------


def test_private_dir_lifecycle() -> None:
    traced = TracedRun(Tracer("/nonexistent/strace", "6.1", True), prefix="netaudit-unit-")
    with pytest.raises(RuntimeError):
        traced.log_path  # noqa: B018
    with traced:
        folder = os.path.dirname(traced.log_path)
        assert os.path.basename(folder).startswith("netaudit-unit-")
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert not os.path.exists(folder)


@pytest.mark.parametrize("command", ["no-such-command-4242", "./no-such-file", "/"])
def test_a_command_that_cannot_run_is_refused_before_strace(command: str) -> None:
    with TracedRun(Tracer("/nonexistent/strace", "6.1", True)) as traced:
        with pytest.raises(CommandError, match=r"command (not found|is not executable)") as err:
            traced.run([command])
        assert err.value.exit_code == (126 if command == "/" else 127)
        assert traced.strace_pid is None


def fake_tracer(folder: Path, body: str) -> Tracer:
    """A Tracer whose "strace" is a shell script: lets run() meet strace's failure modes."""
    path = folder / "fake-strace"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return Tracer(str(path), "6.1", True)


def test_a_strace_message_fails_the_run(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    tracer = fake_tracer(tmp_path, "echo 'strace: exec: Permission denied' >&2; exit 1")
    with TracedRun(tracer) as traced, pytest.raises(TraceError, match="Permission denied"):
        traced.run(["true"])
    assert capfd.readouterr().err == ""  # strace's message is not mixed into our stderr


def test_a_seccomp_notice_is_only_a_warning(tmp_path: Path) -> None:
    notice = "strace: seccomp filter is requested but unavailable"
    with TracedRun(fake_tracer(tmp_path, f"echo '{notice}' >&2; exit 3")) as traced:
        assert traced.run(["true"]) == 3
    assert traced.warnings == (notice,)


def test_a_strace_killed_before_the_command_started_is_a_trace_error(tmp_path: Path) -> None:
    tracer = fake_tracer(tmp_path, "kill -KILL $$")
    with TracedRun(tracer) as traced, pytest.raises(TraceError, match=r"killed \(SIGKILL\)"):
        traced.run(["true"])


def test_argv_with_io_uring_denied_injects_enosys_into_its_setup() -> None:
    tracer = Tracer("/usr/bin/strace", "6.1", seccomp_bpf=True)
    argv = strace_argv(tracer, "/tmp/x/trace.log", ["cmd"], io_uring="deny")
    at = argv.index("inject=io_uring_setup:error=ENOSYS")
    assert argv[at - 1] == "-e" and at < argv.index("--")
    assert "inject=io_uring_setup:error=ENOSYS" not in strace_argv(tracer, "/tmp/x/t", ["cmd"])


def test_argv_refuses_an_unknown_io_uring_choice() -> None:
    tracer = Tracer("/usr/bin/strace", "6.1", seccomp_bpf=True)
    with pytest.raises(ValueError, match="io_uring must be one of"):
        strace_argv(tracer, "/tmp/x/trace.log", ["cmd"], io_uring="allow")


def test_a_hole_behind_the_reader_is_found_and_a_whole_log_has_none(tmp_path: Path) -> None:
    log = tmp_path / "trace.log"
    line = b'4242  1795634279.426813 connect(3, {sa_family=AF_UNIX, sun_path=@"x\\0y"}, 5) = 0\n'
    log.write_bytes(line * 3)
    assert not has_hole(str(log), len(line) * 3)
    with open(log, "r+b") as f:  # cut, and written on at the old offset as strace does
        f.truncate(0)
        f.seek(len(line) * 3)
        f.write(line)
    assert has_hole(str(log), len(line) * 3)
    assert has_hole(str(log), len(line) * 4)
    assert has_hole(str(tmp_path / "gone.log"), 1)
    log.write_bytes(line)
    assert has_hole(str(log), len(line) * 2)  # shorter than what was read: cut


def test_tampered_names_foreign_lines_first_then_a_cut() -> None:
    assert tampered(0) == ""
    assert "2 line(s) that strace did not write" in tampered(2, cut=True)
    assert tampered(0, cut=True).startswith("the trace was cut short")


# --- Keeping the trace -----------------------------------------------------------------------

WRITES_A_LOG = 'for a; do case "$a" in */trace.log) log="$a";; esac; done; echo "1 line" > "$log"'


def test_the_log_is_kept_where_asked_and_the_private_dir_still_goes(tmp_path: Path) -> None:
    kept = tmp_path / "made" / "kept.log"  # missing folders are made
    with TracedRun(fake_tracer(tmp_path, WRITES_A_LOG), keep=kept) as traced:
        assert traced.run(["true"]) == 0
        folder = os.path.dirname(traced.log_path)
    assert kept.read_text() == "1 line\n"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert (traced.kept, traced.keep_error) == (str(kept), "")
    assert not os.path.exists(folder)


def test_the_log_is_kept_when_the_run_fails_too(tmp_path: Path) -> None:
    kept = tmp_path / "kept.log"
    tracer = fake_tracer(tmp_path, WRITES_A_LOG + "; echo 'strace: boom' >&2; exit 1")
    with pytest.raises(TraceError, match="boom"), TracedRun(tracer, keep=kept) as traced:
        traced.run(["true"])
    assert kept.read_text() == "1 line\n"


def test_a_trace_that_cannot_be_kept_is_said_and_the_private_dir_still_goes(
    tmp_path: Path,
) -> None:
    (tmp_path / "file").write_text("not a folder")
    with TracedRun(fake_tracer(tmp_path, WRITES_A_LOG), keep=tmp_path / "file" / "k.log") as traced:
        traced.run(["true"])
        folder = os.path.dirname(traced.log_path)
    assert traced.kept is None
    assert "cannot keep the trace in" in traced.keep_error
    assert not os.path.exists(folder)


def test_nothing_is_kept_when_strace_wrote_no_log(tmp_path: Path) -> None:
    kept = tmp_path / "kept.log"
    with TracedRun(fake_tracer(tmp_path, "exit 0"), keep=kept) as traced:
        traced.run(["true"])
    assert not kept.exists() and traced.kept is None and traced.keep_error == ""
