"""The JSON report: a stable, versioned schema for CI and other tools to read.

Written as a stream, one destination per line: a report can hold hundreds of thousands of
them (kept on disk, see ``spill``), and none is held in memory but the one being written.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from typing import IO, Any

from ..model import AuditResult, Destination, RunInfo

SCHEMA = "netaudit.report"
SCHEMA_VERSION = 1


def to_json(result: AuditResult, run: RunInfo, locations: Mapping[str, str] | None = None) -> str:
    """The report as a JSON document (written even when the run is clean)."""
    out = io.StringIO()
    write_json(result, run, out, locations)
    return out.getvalue()


def write_json(
    result: AuditResult,
    run: RunInfo,
    out: IO[str],
    locations: Mapping[str, str] | None = None,
) -> None:
    """Writes the report to ``out`` as it goes: the head, then each destination, then each
    violation again.

    One destination per line: readable, and every part goes through the C encoder, which
    ``indent=`` would switch off.
    """
    where = locations or {}
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
            "blocked_calls": sum(d.blocked for d in result.destinations),
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
    out.write("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in head.items()))
    _write_list(out, "destinations", result.destinations, where)
    _write_list(out, "violations", result.violations, where)
    out.write("\n}\n")


def _write_list(
    out: IO[str], key: str, destinations: Iterable[Destination], where: Mapping[str, str]
) -> None:
    out.write(f",\n {json.dumps(key)}: [")
    separator = "\n  "
    for d in destinations:
        out.write(separator + json.dumps(_destination(d, where.get(d.test))))
        separator = ",\n  "
    out.write("]" if separator == "\n  " else "\n ]")


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
        "blocked": d.blocked,
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
