"""Talking to the supervisor: one Link per traced pytest process that drives a run."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from ..proctree import tracer_pid
from ..protocol import (
    ENV_SUPERVISOR,
    Ask,
    Bye,
    Channel,
    Finish,
    Hello,
    RunAudit,
    TableEntry,
    Welcome,
)
from .options import usage_error


@dataclass(frozen=True)
class Role:
    """Which run this process drives, and where its supervisor listens."""

    token: str
    run: str
    worker: str = ""

    @property
    def reports(self) -> bool:
        """xdist workers only mark; their controller reports for the whole run."""
        return not self.worker


class Link:
    """Says hello (and checks that this process is the tracee of the run's strace), sends the
    table of tests, and asks for the run's audit, or one test's."""

    def __init__(
        self,
        role: Role,
        settings: dict[str, object],
        *,
        audit: bool = True,
        reason: str = "",
        live: bool = False,
    ) -> None:
        self.role = role
        #: Block mode: the supervisor judges each call as it is made, by its test's rules, so
        #: each line of the table goes out before its test begins.
        self.live = live
        try:
            self._channel = Channel(role.token)
        except OSError as err:
            raise usage_error(
                f"{ENV_SUPERVISOR} is set, but no netaudit supervisor answers ({err}): unset "
                "it if it was left over, and run pytest --netaudit from outside any traced "
                "process"
            ) from err
        hello = Hello(role.run, role.worker, os.getpid(), audit, reason, settings)
        try:
            self.welcome = self._channel.request(hello, Welcome)
        except (OSError, ValueError, EOFError) as err:
            self._channel.close()
            raise usage_error(f"the supervisor did not answer ({err})") from err
        traced_by = tracer_pid(os.getpid())
        if audit and traced_by != self.welcome.strace_pid:
            self._channel.close()
            raise usage_error(
                "this process is not traced by its session's strace "
                f"(TracerPid {traced_by}); the audit cannot run here"
            )

    def table(
        self,
        test: int,
        nodeid: str,
        location: str,
        policy: dict[str, object] | None,
        *,
        gathering: bool = False,
    ) -> None:
        """A line of the table of tests; lines are batched, and a lost connection shows at
        the end, when the audit cannot be asked for. In block mode a line goes out at once,
        unless the caller is ``gathering`` lines it flushes before any test begins."""
        entry = TableEntry(self.role.run, self.role.worker, test, nodeid, location, policy)
        with contextlib.suppress(OSError):
            self._channel.send(entry, batch=test > 0 and (gathering or not self.live))

    def flush(self) -> None:
        with contextlib.suppress(OSError):
            self._channel.flush()

    def ask(self, test: int) -> RunAudit:
        """What the test did so far (raises OSError, ValueError or EOFError if that cannot be
        known)."""
        return self._channel.request(Ask(self.role.run, self.role.worker, test), RunAudit)

    def finish(self) -> RunAudit:
        """The run's whole part; its FINISH marker must be in the trace already."""
        return self._channel.request(Finish(self.role.run), RunAudit)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._channel.send(Bye())
        self._channel.close()
