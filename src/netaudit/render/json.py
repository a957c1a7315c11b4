"""The JSON report: a stable, versioned schema for CI and other tools to read."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..model import AuditResult, Destination, RunInfo

SCHEMA = "netaudit.report"
SCHEMA_VERSION = 1


def to_json(result: AuditResult, run: RunInfo, locations: Mapping[str, str] | None = None) -> str:
    """The report as a JSON document (written even when the run is clean).

    One destination per line: readable, and every part goes through the C encoder, which
    ``indent=`` would switch off (a report can hold tens of thousands of destinations).
    """
    where = locations or {}
    destinations = [_destination(d, where.get(d.test)) for d in result.destinations]
    head = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "run": {
            "started": run.started,
            "host": run.host,
            "netaudit_version": run.netaudit_version,
            "command": list(run.command),
            "log": run.log,
            "allowlist": run.allowlist,
            "strace_version": run.strace_version,
            "syscalls": list(run.syscalls),
            "exit_status": run.exit_status,
        },
        "summary": {
            "clean": result.clean,
            "destinations": len(result.destinations),
            "violations": len(result.violations),
            "findings": len(result.findings),
            "lines": result.stats.lines,
            "calls": result.stats.calls,
            "unparsed": result.stats.unparsed,
            "foreign_lines": result.stats.foreign,
        },
        "findings": [
            {
                "kind": f.kind.value,
                "pid": f.pid,
                "program": f.program,
                "test": f.test,
                "message": str(f),
            }
            for f in result.findings
        ],
    }
    lists = {
        "destinations": destinations,
        "violations": [d for d in destinations if d["verdict"] == "violation"],
    }
    parts = [f" {json.dumps(key)}: {json.dumps(value)}" for key, value in head.items()]
    for key, items in lists.items():
        body = ",\n  ".join(json.dumps(item) for item in items)
        parts.append(f" {json.dumps(key)}: [\n  {body}\n ]" if items else f" {json.dumps(key)}: []")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _destination(d: Destination, location: str | None = None) -> dict[str, Any]:
    endpoint = d.endpoint
    query = d.query
    return {
        "test": d.test,
        "location": location,
        "family": d.family,
        "address": endpoint.address if endpoint is not None else None,
        "port": endpoint.port if endpoint is not None else None,
        "scope_id": endpoint.scope_id if endpoint is not None and endpoint.scope_id else None,
        "display": d.address,
        "raw": d.raw or None,
        "verdict": "allowed" if d.verdict.allowed else "violation",
        "rule": d.verdict.rule,
        "allowed_by": d.verdict.by or None,
        "count": d.count,
        "pids": list(d.pids),
        "programs": list(d.programs),
        "syscalls": list(d.syscalls),
        "results": dict(d.results),
        "socket_types": list(d.socks),
        "after_test": d.after_test,
        "first_time": d.first_time,
        "kind": d.kind,
        "system_resolver": d.resolver,
        "names": list(d.names),
        "query": None if query is None else {"type": query[0], "name": query[1]},
        "where": list(d.where),
    }
