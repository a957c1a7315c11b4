"""pytest-xdist glue, registered only when xdist is installed: the controller hands each
worker the run it belongs to and where the supervisor listens, and takes back the call sites
the worker's audit hook recorded."""

from __future__ import annotations

from typing import Any, Callable

KEY = "netaudit"
#: The worker's call sites in its workeroutput (see where.WhereRecorder.export).
WHERE_KEY = "netaudit_where"


class XdistGlue:
    def __init__(self, token: str, run: str, on_sites: Callable[[object], None]) -> None:
        self.token = token
        self.run = run
        self.on_sites = on_sites

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[KEY] = {"supervisor": self.token, "run": self.run}

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        workeroutput = getattr(node, "workeroutput", None)
        if isinstance(workeroutput, dict):
            self.on_sites(workeroutput.get(WHERE_KEY))


def worker_role(config: object) -> tuple[str, str, str] | None:
    """``(supervisor token, run, worker id)`` in an xdist worker of an audited run."""
    workerinput = getattr(config, "workerinput", None)
    if not isinstance(workerinput, dict) or not isinstance(workerinput.get(KEY), dict):
        return None
    given = workerinput[KEY]
    return str(given["supervisor"]), str(given["run"]), str(workerinput.get("workerid", "gw"))
