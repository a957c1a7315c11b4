"""Capture: run a command under strace, with the log in a private directory.

This is the only module that runs strace. Decisions, and why:

* **strace's messages vs the command's stderr.** strace prints its diagnostics on its stderr,
  which the command inherits, so strace alone cannot keep the two apart. strace's stderr is a
  pipe that this process drains (not a file beside the log: a full disk would swallow strace's
  complaint about it); the caller's stderr goes down as one extra descriptor, and a
  small Python shim (``sys.executable -I -S``, ~10 ms), the first program strace runs, moves it
  back to fd 2, closes the extra one and execs the command in the same pid. The command gets the
  caller's own stderr (a terminal stays a terminal) and only fds 0-2. The log shows the shim's
  execve first (its argv[4] starts with ``SHIM_TAG``), then the command's. Not /bin/sh: dash
  drops environment entries whose names are not identifiers and rewrites PWD. The shim undoes
  what Python changes (C-locale coercion of LC_CTYPE; SIGPIPE and SIGXFSZ ignored). Any strace
  message but a seccomp notice fails the run: fail closed.
* **Signals.** strace runs in a new session. SIGINT, SIGTERM, SIGHUP and SIGQUIT that reach this
  process during ``run()`` are forwarded to that process group (strace blocks them with ``-o``);
  after ``kill_grace`` seconds, or at a second signal, the traced tree and strace are SIGKILLed
  by pid. ``run()`` then returns rather than raising, so the caller can still judge the partial
  log: the command's own status if it handled the signal and exited (pytest exits 2), else
  128+N (130 for Ctrl-C); ``interrupted`` holds N. Signals ignored on entry
  (nohup) stay ignored. The command has no controlling terminal (it cannot open /dev/tty).
* **Daemons.** strace ``-f`` waits for every traced process. Once the initial process (the pid on
  the log's first line) has exited, the rest get ``leftover_grace`` seconds, then SIGTERM and,
  ``kill_grace`` seconds later, SIGKILL; ``leftover_pids`` lists them for the report.
* **Status.** The command's exit status, or 128+N when signal N killed it (strace kills itself
  with N once the whole tree is gone). strace dead by a signal while its tree still lived means
  someone killed it: ``TraceError``. A command that cannot be found or run is a ``CommandError``
  before anything runs (exit 127 or 126, as a shell would say).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import IO, Callable, NamedTuple, Optional, Union

from . import IO_URING_CHOICES
from .errors import CommandError, TraceError, TracerUnavailable
from .proctree import kill, stat, tracer_pid, tree

TRACED_SYSCALLS: tuple[str, ...] = (
    "connect", "sendto", "sendmsg", "sendmmsg", "execve", "execveat",
    "clone", "clone3", "fork", "vfork", "io_uring_setup", "seccomp", "bind", "set_robust_list",
)  # fmt: skip

#: Traced besides with ``names``: DNS answers arrive by these (glibc, c-ares: recvfrom).
NAMES_SYSCALLS: tuple[str, ...] = ("recvfrom", "recvmsg")
#: strace's options with ``names``: payloads in full (a DNS answer fits in 512 bytes without
#: EDNS; a longer one keeps its first records), hex-escaped only when binary (-x, not -xx:
#: addresses stay readable), and each socket's type and peer (-yy), which tells a UDP probe
#: from a TCP connect and names the resolver of a send on a connected socket.
NAMES_OPTIONS: tuple[str, ...] = ("-yy", "-x", "-s", "512")


#: In block mode the egress calls go to the supervisor, not strace (seccomp.py): strace could
#: not see them anyway (the filter's answer outranks its own), and would only duplicate them
#: in a new task's first moments. ``sendto`` stays with ``names``: a send on a connected socket
#: (never notified) can be a DNS query.
BLOCK_SYSCALLS: tuple[str, ...] = tuple(
    name for name in TRACED_SYSCALLS if name not in ("connect", "sendto", "sendmsg", "sendmmsg")
)


def traced_syscalls(names: bool, block: bool = False) -> tuple[str, ...]:
    base = BLOCK_SYSCALLS if block else TRACED_SYSCALLS
    if not names:
        return base
    return (*base, "sendto", *NAMES_SYSCALLS) if block else base + NAMES_SYSCALLS


#: The first line of the shim's script, so the shim's execve can be recognised in a log.
SHIM_TAG = "#netaudit-shim"
_SHIM = SHIM_TAG + """
import ctypes, os, signal, sys
fd, lc, cpus, nice, block, cmd = int(sys.argv[1]), *sys.argv[2:6], sys.argv[6:]
os.dup2(fd, 2); os.close(fd)
libc = ctypes.CDLL(None, use_errno=True); libc.syscall.restype = ctypes.c_long
tracer = os.getppid(); libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
if os.getppid() != tracer: os._exit(137)
if cpus != "-": os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
if nice != "-": os.setpriority(os.PRIO_PROCESS, 0, int(nice))
signal.signal(signal.SIGPIPE, signal.SIG_DFL); signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
os.environ.pop("LC_CTYPE", None) if lc == "-" else os.environ.update(LC_CTYPE=lc[1:])
if block != "-":  # block mode: the filter, and its listener to the supervisor (seccomp.py)
    sock, code = block.split(":"); sock = int(sock); code = bytes.fromhex(code)
    class Prog(ctypes.Structure): _fields_ = [("len", ctypes.c_ushort), ("code", ctypes.c_char_p)]
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS (strace --seccomp-bpf set it already)
    prog = Prog(len(code) // 8, code)
    for flags in (8 | 32, 8):  # NEW_LISTENER | WAIT_KILLABLE_RECV (5.19+), else NEW_LISTENER
        listener = libc.syscall(317, 1, flags, ctypes.byref(prog))
        if listener >= 0 or ctypes.get_errno() != 22: break
    if listener < 0:
        e = ctypes.get_errno(); os.write(sock, f"! {os.strerror(e)} (errno {e})\\n".encode())
        os._exit(126)
    os.write(sock, f"{os.getpid()} {listener} {flags}\\n".encode())
    taken = os.read(sock, 1); os.close(listener); os.close(sock)
    if taken != b"k": os._exit(126)  # no supervisor holds the listener: never run unjudged
try: os.execvp(cmd[0], cmd)
except OSError as e:
    sys.stderr.write(f"netaudit: cannot run {cmd[0]}: {e.strerror}\\n")
    os._exit(127 if isinstance(e, FileNotFoundError) else 126)
"""  # fmt: skip
#: prctl(2)'s PR_SET_PDEATHSIG: the signal a process gets when the thread that forked it ends.
_PR_SET_PDEATHSIG = 1


def _dies_with(parent: int) -> Callable[[], None] | None:
    """What makes strace die (SIGKILL) with us, run in the child before it execs strace.

    strace has a session of its own, so nothing else would end it if we were killed with
    SIGKILL; the shim does the same for the command, whose parent is strace, so a run whose
    supervisor is gone cannot go on untraced or run forever. None where prctl is missing.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # we died before it was set: no signal would come
            os._exit(137)

    return preexec


_INSTALL = "install strace (apt-get install strace, dnf install strace, apk add strace, ...)"
_SLOWER = "falling back to plain ptrace: traced programs run slower (3-50x when syscall-heavy)"
_PROBE_TIMEOUT = 30.0
_POLL = 0.05
_FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
_NOTICE = re.compile(r"seccomp filter is requested but|seccomp-bpf .*(disabling|not enabled)", re.I)
_DENIED = re.compile(r"Operation not permitted|PTRACE_TRACEME")
_Handler = Union[Callable[[int, Optional[FrameType]], object], int, signal.Handlers, None]


class Tracer(NamedTuple):
    """A strace that the pre-flight saw trace a command here. (A NamedTuple, not a frozen
    dataclass: the supervisor starts strace before it imports dataclasses.)"""

    path: str
    version: str
    seccomp_bpf: bool
    warnings: tuple[str, ...] = ()


def find_tracer(strace: str | None = None, *, probe: bool = True) -> Tracer:
    """Pre-flight, once per run: never hand out a strace that cannot trace here.

    ``probe=False`` skips the trial run (two strace starts, 10-30 ms): a strace that cannot
    trace here then fails before it starts the command, and TracedRun.run raises the same
    TracerUnavailable; one without seccomp-bpf goes on with plain ptrace and says so.
    """
    if not sys.platform.startswith("linux"):
        raise TracerUnavailable(f"netaudit needs Linux (strace and ptrace); this is {sys.platform}")
    path = _locate(strace)
    version = _version(path)
    seccomp = tuple(int(n) for n in version.split(".")) >= (5, 3)
    warning = "" if seccomp else f"strace {version} has no --seccomp-bpf (5.3+); {_SLOWER}"
    if seccomp and probe:
        rc, err = _probe(Tracer(path, version, True))
        if (_NOTICE.search(err) or "--seccomp-bpf" in err) and not _DENIED.search(err):
            seccomp = False
            warning = f"strace {version}: seccomp-bpf is unavailable here; {_SLOWER}"
        elif rc != 0 or err.strip():
            raise _unavailable(path, rc, err)
    if not seccomp and probe:
        rc, err = _probe(Tracer(path, version, False))
        if rc != 0 or err.strip():
            raise _unavailable(path, rc, err)
    return Tracer(path, version, seccomp, (warning,) if warning else ())


def _locate(strace: str | None) -> str:
    if strace is None:
        found = shutil.which("strace")
        if found is None:
            raise TracerUnavailable(f"strace was not found on PATH; {_INSTALL}")
    else:
        found = strace if os.sep in strace else shutil.which(strace)
        if found is None or not os.path.isfile(found) or not os.access(found, os.X_OK):
            raise TracerUnavailable(f"strace not found at {strace}; {_INSTALL}, or give its path")
    return os.path.abspath(found)


def _version(path: str) -> str:
    try:
        out = subprocess.run([path, "-V"], capture_output=True, timeout=_PROBE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TracerUnavailable(f"cannot run {path} -V: {exc}") from exc
    match = re.search(rb"strace -- version (\d+(?:\.\d+)*)", out.stdout)
    if match is None:
        said = (out.stdout + out.stderr).decode(errors="replace").strip()[:200]
        raise TracerUnavailable(f"{path} does not look like strace ({path} -V said: {said!r})")
    return match.group(1).decode()


def _probe(tracer: Tracer) -> tuple[int, str]:
    """Trace a trivial command (strace -V itself) with the flags and syscalls of a real run."""
    argv = strace_argv(tracer, os.devnull, [tracer.path, "-V"])
    null = subprocess.DEVNULL
    try:
        done = subprocess.run(
            argv, stdin=null, stdout=null, stderr=subprocess.PIPE, timeout=_PROBE_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TracerUnavailable(f"strace could not trace a trial command: {exc}") from exc
    return done.returncode, done.stderr.decode(errors="replace")


def _unavailable(path: str, rc: int, err: str) -> TracerUnavailable:
    lines = [line.split(": ", 1)[-1] for line in err.splitlines() if line.strip()]
    said = f"strace said: {lines[-1]}" if lines else f"exit {rc}, no message"
    if _DENIED.search(err):
        tracer = tracer_pid(os.getpid())
        if tracer:
            return TracerUnavailable(
                f"netaudit is itself being traced (by pid {tracer}), and a process can have only "
                f"one tracer: run netaudit outside strace, gdb or another netaudit ({said})"
            )
        return TracerUnavailable(
            f"ptrace is not permitted here ({said}). In a container, allow it (docker run "
            "--cap-add SYS_PTRACE, and a seccomp profile that allows ptrace); on a host, check "
            "kernel.yama.ptrace_scope (3 forbids ptrace)"
        )
    if "invalid system call" in err:
        return TracerUnavailable(f"{path} is too old for netaudit; upgrade strace ({said})")
    return TracerUnavailable(f"{path} failed a trial run ({said})")


def strace_argv(
    tracer: Tracer,
    log_path: str,
    command: Sequence[str],
    syscalls: Sequence[str] | None = None,
    *,
    names: bool = False,
    io_uring: str = "report",
    block: bool = False,
) -> list[str]:
    """The strace command line; ``log_path`` must be absolute (``|cmd`` would be a pipe).

    ``syscalls`` defaults to ``traced_syscalls(names, block)``; ``names`` adds what reading DNS
    needs (NAMES_SYSCALLS to any set, NAMES_OPTIONS).
    ``io_uring="deny"`` makes every ``io_uring_setup`` fail with ENOSYS, as on a kernel
    without io_uring: no ring, so no connect strace cannot see. The log still shows each
    attempt, marked ``(INJECTED)``.
    """
    if not os.path.isabs(log_path):
        raise ValueError(f"log path must be absolute: {log_path!r}")
    if not command:
        raise ValueError("no command to trace")
    if syscalls is None:
        syscalls = traced_syscalls(names, block)
    if not syscalls or not all(re.fullmatch(r"[a-z0-9_]+", name) for name in syscalls):
        raise ValueError(f"syscalls must be plain syscall names: {list(syscalls)}")
    if io_uring not in IO_URING_CHOICES:
        raise ValueError(f"io_uring must be one of {IO_URING_CHOICES}, not {io_uring!r}")
    argv = [tracer.path, "-f"] + (["--seccomp-bpf"] if tracer.seccomp_bpf else [])
    # -q, not -qq, and signal=SIGKILL, not none: each process's end is logged (exited with N,
    # or killed by SIGKILL) and no signal delivery is, so a SIGKILLed strace can be told from
    # a SIGKILLed command (with -o, strace blocks every other fatal signal).
    argv += ["-q", "-e", "signal=SIGKILL", "-ttt", "-o", log_path]
    if names:
        argv += NAMES_OPTIONS
        syscalls = [*syscalls, *(s for s in NAMES_SYSCALLS if s not in syscalls)]
    if io_uring == "deny":
        argv += ["-e", "inject=io_uring_setup:error=ENOSYS"]
    return [*argv, "-e", "trace=" + ",".join(syscalls), "--", *command]


def tampered(foreign: int, cut: bool = False) -> str:
    """Why a log that only our strace wrote holds lines in no strace form: someone else wrote
    to it, or cut it (strace then goes on writing after a hole of NUL bytes). "" if none.
    ``cut``: a hole was found where the reader had already been (see ``has_hole``)."""
    if foreign:
        return (
            f"the trace holds {foreign} line(s) that strace did not write: it was changed or "
            "cut short while the command ran"
        )
    if cut:
        return (
            "the trace was cut short while the command ran (a hole where strace had written); "
            "what was read before the cut is reported"
        )
    return ""


def has_hole(path: str, size: int) -> bool:
    """Whether the log's first ``size`` bytes hold a NUL, which strace never writes.

    A reader that follows the log sees a hole only ahead of it; a cut made once it had read
    that far leaves the hole behind it, so the part already read is scanned again for one
    (a memchr per MiB: milliseconds for a million calls). A log that is gone was cut too.
    """
    try:
        with open(path, "rb", buffering=0) as log:
            while size > 0:
                chunk = log.read(min(size, 1 << 20))
                if not chunk:
                    return True
                if b"\0" in chunk:
                    return True
                size -= len(chunk)
    except OSError:
        return True
    return False


class TracedRun:
    """Owns a private temp dir (mode 0700) with the log in it; removes it on every exit path."""

    def __init__(
        self,
        tracer: Tracer,
        prefix: str = "netaudit-",
        *,
        leftover_grace: float = 2.0,
        kill_grace: float = 5.0,
        strace_cpu: int | None = None,
        strace_nice: int | None = None,
        names: bool = False,
        io_uring: str = "report",
        keep: str | os.PathLike[str] | None = None,
        block: tuple[int, bytes] | None = None,
    ) -> None:
        self.tracer = tracer
        #: Where the log goes when the run is over (instead of being removed with the
        #: private dir), to be replayed with ``netaudit analyze``.
        self.keep = keep
        #: Where it went, or why it could not (the run itself is not failed for that).
        self.kept: str | None = None
        self.keep_error = ""
        #: Block mode: the descriptor the shim hands the filter's listener over on, and the
        #: filter (seccomp.egress_program). The descriptor is closed here once strace has it.
        self.block = block
        #: Trace DNS answers too, to name destinations (costly for send/receive-heavy runs).
        self.names = names
        #: "report" (io_uring use fails the audit) or "deny" (io_uring_setup fails: ENOSYS).
        self.io_uring = io_uring
        self.prefix = prefix
        self.leftover_grace = leftover_grace
        self.kill_grace = kill_grace
        #: A CPU to keep strace on (the traced command keeps this process's CPUs): a
        #: process that moves there before a traced call it makes often pays a local wake-up
        #: instead of a cross-CPU one, about 10 us instead of 50-120 us in a VM.
        self.strace_cpu = strace_cpu
        #: A niceness for strace, tried as root (the command keeps this process's): strace
        #: then runs as soon as a traced call stops its caller, even when every CPU is busy.
        self.strace_nice = strace_nice
        #: Processes still running after the initial one exited, which were ended.
        self.leftover_pids: tuple[int, ...] = ()
        #: The signal that interrupted the run, if one did.
        self.interrupted: int | None = None
        #: strace's non-fatal notices (seccomp-bpf unavailable: the run was slower).
        self.warnings: tuple[str, ...] = ()
        self.strace_pid: int | None = None
        self.initial_pid: int | None = None
        self._initial_start: int | None = None
        self._dir: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._signals: list[int] = []
        self._pending: list[int] = []

    def __enter__(self) -> TracedRun:
        self._dir = tempfile.mkdtemp(prefix=self.prefix)
        os.chmod(self._dir, 0o700)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._stop()
        finally:
            if self._dir is not None:
                try:
                    self._keep_log()
                finally:
                    shutil.rmtree(self._dir, ignore_errors=True)
                    self._dir = None

    def _keep_log(self) -> None:
        """Moves the log out of the private dir to ``keep`` (copies it across file systems),
        on every way out that left a log."""
        log = self.log_path
        if self.keep is None or not os.path.exists(log):
            return
        target = os.fspath(self.keep)
        try:
            os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
            try:
                os.replace(log, target)
            except OSError:  # another file system: copied, then removed with the dir
                shutil.copyfile(log, target)
            os.chmod(target, 0o600)  # a trace names every destination: the owner's alone
            self.kept = target
        except OSError as err:
            self.keep_error = f"cannot keep the trace in {target}: {err.strerror or err}"

    @property
    def log_path(self) -> str:
        if self._dir is None:
            raise RuntimeError("TracedRun.log_path is only valid inside its with-block")
        return os.path.join(self._dir, "trace.log")

    def run(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        started: Callable[[], None] | None = None,
    ) -> int:
        """Runs the command under strace; returns its status (128+N when signal N killed it).

        ``started`` is called once strace runs: work that can wait until then (importing
        what reads the log) does not delay the command.
        """
        log_path = self.log_path
        if self._proc is not None:
            raise RuntimeError("a TracedRun runs one command")
        if not command:
            raise ValueError("no command to run")
        environ = os.environ if env is None else env
        _check_command(command[0], environ, cwd)
        lc = "=" + environ["LC_CTYPE"] if "LC_CTYPE" in environ else "-"
        try:
            user_err = os.dup(2)
        except OSError:  # no stderr: the command gets /dev/null rather than our log file
            user_err = os.open(os.devnull, os.O_WRONLY)
        cpus = "-"
        if self.strace_cpu is not None:
            cpus = ",".join(str(cpu) for cpu in sorted(os.sched_getaffinity(0)))
        nice = "-" if self.strace_nice is None else str(os.getpriority(os.PRIO_PROCESS, 0))
        block = "-" if self.block is None else f"{self.block[0]}:{self.block[1].hex()}"
        shim = [sys.executable, "-I", "-S", "-c", _SHIM, str(user_err), lc, cpus, nice, block]
        shim += command
        passed = (user_err,) if self.block is None else (user_err, self.block[0])
        previous = self._install_handlers()
        said: list[str] = []
        try:
            self._proc = subprocess.Popen(
                strace_argv(
                    self.tracer,
                    log_path,
                    shim,
                    names=self.names,
                    io_uring=self.io_uring,
                    block=self.block is not None,
                ),
                stderr=subprocess.PIPE,
                pass_fds=passed,
                env=env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_dies_with(os.getpid()),
            )
            self.strace_pid = self._proc.pid
            self._close_handover()  # strace and the shim hold it now: EOF once they are gone
            with contextlib.suppress(OSError):  # optimisations only; not permitted is fine
                if self.strace_cpu is not None:
                    os.sched_setaffinity(self.strace_pid, {self.strace_cpu})
                if self.strace_nice is not None:
                    os.setpriority(os.PRIO_PROCESS, self.strace_pid, self.strace_nice)
            # A pipe, not a file: a file beside the log fills up with it, and strace's
            # "No space left on device" would be lost with the trace it could not write.
            reader = threading.Thread(
                target=_collect, args=(self._proc.stderr, said), name="netaudit-stderr"
            )
            reader.daemon = True
            reader.start()
            while self._pending:  # signals that came before there was a group to send them to
                kill(self._proc.pid, self._pending.pop(0), group=True)
            if started is not None:
                started()
            rc, hung = self._supervise(self._proc)
            reader.join(self.kill_grace)  # strace's exit closes the pipe
        except BaseException as exc:
            self._stop()
            if isinstance(exc, OSError) and self.strace_pid is None:
                raise TraceError(f"cannot start {self.tracer.path}: {exc}") from exc
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(user_err)
            self._close_handover()
        return self._status(rc, hung, said)

    def _close_handover(self) -> None:
        if self.block is not None and self.block[0] >= 0:
            with contextlib.suppress(OSError):
                os.close(self.block[0])
            self.block = (-1, self.block[1])

    def _status(self, rc: int, hung: bool, said: list[str]) -> int:
        if self._signals:
            self.interrupted = self._signals[0]
            self._signal_tree(signal.SIGKILL)  # in case strace died before its tree
            # A command that handled the signal and exited (pytest: 2) keeps its own status.
            return rc if rc >= 0 and not hung else 128 + self._signals[0]
        if hung:
            raise TraceError("strace did not exit after its processes were ended: audit incomplete")
        if rc < 0:
            self._initial_alive()  # strace mimics a killed command only once its tree is gone
            killed_first = rc != -signal.SIGKILL or _logged_kill(self.log_path, self.initial_pid)
            if self._signal_tree(signal.SIGKILL) or self.initial_pid is None or not killed_first:
                raise TraceError(f"strace was killed ({_signame(-rc)}): the audit is incomplete")
        self.warnings = tuple(line for line in said if _NOTICE.search(line))
        fatal = [line for line in said if not _NOTICE.search(line)]
        if fatal and not _ran_shim(self.log_path):  # strace never started the command
            raise _unavailable(self.tracer.path, rc, "\n".join(said))
        if fatal:
            raise TraceError("strace failed, the audit is incomplete: " + "; ".join(fatal[:5]))
        return 128 - rc if rc < 0 else rc

    def _supervise(self, proc: subprocess.Popen[bytes]) -> tuple[int, bool]:
        """Wait for strace; end the tree on interruption, and leftovers once the command exited.

        Returns strace's status and whether it had to be killed after the leftovers.
        """
        kill_at: float | None = None
        gone_since: float | None = None
        term_at: float | None = None
        hung = False
        # A thread blocks in wait() so that strace's exit is seen at once; polling wait()
        # noticed it ~14 ms late on average. This thread only checks the tree now and then.
        exited = threading.Event()

        def wait() -> None:
            proc.wait()
            exited.set()

        threading.Thread(target=wait, name="netaudit-wait", daemon=True).start()
        while True:
            if exited.wait(_POLL):
                return proc.wait(), hung
            now = time.monotonic()
            if self._signals:
                kill_at = now + self.kill_grace if kill_at is None else kill_at
                if not self._initial_alive():
                    # The command has handled the signal and exited: what it left behind
                    # is ended, and strace goes with the command's own status.
                    self._end_leftovers(signal.SIGKILL)
                elif len(self._signals) > 1 or now >= kill_at:
                    self._signal_tree(signal.SIGKILL, with_strace=True)
            elif self._initial_alive():
                gone_since = None
            elif gone_since is None:
                gone_since = now
            elif term_at is None:
                if now - gone_since >= self.leftover_grace:
                    self._end_leftovers(signal.SIGTERM)
                    term_at = now + self.kill_grace
            elif now >= term_at + self.kill_grace:
                hung = True
                proc.kill()
            elif now >= term_at:
                self._end_leftovers(signal.SIGKILL)

    def _end_leftovers(self, sig: int) -> None:
        pids = self._signal_tree(sig)
        self.leftover_pids = tuple(sorted(set(self.leftover_pids) | set(pids)))

    def _initial_alive(self) -> bool:
        """Whether the command's first process still runs (True until it has shown up)."""
        if self.initial_pid is None:
            self.initial_pid = _first_pid(self.log_path)
            if self.initial_pid is None:
                return True
            st = stat(self.initial_pid)
            self._initial_start = st.start if st is not None else None
        st = stat(self.initial_pid)
        return st is not None and st.state not in "ZX" and st.start == self._initial_start

    def _signal_tree(self, sig: int, *, with_strace: bool = False) -> list[int]:
        """Signal, by pid, every process of the traced tree (and strace last, if asked)."""
        if self._proc is None:
            return []
        seeds = [self.initial_pid] if self.initial_pid and self._initial_alive() else []
        pids = tree(self._proc.pid, seeds)
        for pid in pids:
            kill(pid, sig)
        if with_strace:
            self._proc.send_signal(sig)
        return pids

    def _stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._signal_tree(signal.SIGKILL, with_strace=True)
            self._proc.wait()

    def _install_handlers(self) -> dict[int, _Handler]:
        previous: dict[int, _Handler] = {}
        if threading.current_thread() is not threading.main_thread():
            return previous
        for signum in (getattr(signal, name) for name in _FORWARDED if hasattr(signal, name)):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                old = signal.signal(signum, self._on_signal)
                previous[signum] = signal.SIG_DFL if old is None else old
        return previous

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)
        if self._proc is None:
            self._pending.append(signum)
        else:
            kill(self._proc.pid, signum, group=True)


def _collect(stream: IO[bytes] | None, said: list[str], most: int = 200) -> None:
    """Keeps strace's messages (the first ``most`` of them) until it closes its stderr."""
    if stream is None:
        return
    with stream:
        for raw in stream:
            line = raw.decode("utf-8", "replace").strip()
            if line and len(said) < most:
                said.append(line)


def _logged_kill(log_path: str, pid: int | None) -> bool:
    """Whether the log says ``pid`` was SIGKILLed: if not, a SIGKILLed strace was the victim.

    Read only when strace ended by SIGKILL, so the second read of the log costs nothing else.
    """
    mark = b"+++ killed by SIGKILL"
    prefix = f"{pid} ".encode()
    try:
        with open(log_path, "rb") as log:
            return any(line.startswith(prefix) and mark in line for line in log)
    except OSError:
        return False


def _ran_shim(log_path: str) -> bool:
    """Whether the log shows the shim's exec: the first thing strace runs, so without it
    nothing of the command ran."""
    try:
        with open(log_path, "rb") as log:
            return SHIM_TAG.encode() in log.read(1 << 16)
    except OSError:
        return False


def _first_pid(log_path: str) -> int | None:
    try:
        with open(log_path, "rb") as f:
            match = re.match(rb"(\d+)\s", f.read(32))
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _check_command(name: str, environ: Mapping[str, str], cwd: str | None) -> None:
    """Refuse a command that cannot be run, rather than pretend it ran."""
    if os.sep in name:
        path = os.path.join(cwd or os.getcwd(), name)
        if not os.path.exists(path):
            raise CommandError(f"command not found: {name}")
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise CommandError(f"command is not executable: {name}", exit_code=126)
    elif shutil.which(name, path=environ.get("PATH", os.defpath)) is None:
        raise CommandError(f"command not found: {name}")


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
