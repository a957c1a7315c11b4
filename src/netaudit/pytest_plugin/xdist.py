"""pytest-xdist glue, registered only when xdist is installed: the controller hands each
worker the run it belongs to and where the supervisor listens."""

from __future__ import annotations

from typing import Any

KEY = "netaudit"


class XdistGlue:
    def __init__(self, token: str, run: str) -> None:
        self.token = token
        self.run = run

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[KEY] = {"supervisor": self.token, "run": self.run}


def worker_role(config: object) -> tuple[str, str, str] | None:
    """``(supervisor token, run, worker id)`` in an xdist worker of an audited run."""
    workerinput = getattr(config, "workerinput", None)
    if not isinstance(workerinput, dict) or not isinstance(workerinput.get(KEY), dict):
        return None
    given = workerinput[KEY]
    return str(given["supervisor"]), str(given["run"]), str(workerinput.get("workerid", "gw"))
