"""The run queue in PostgreSQL: the hot-path statements of a node, each for a whole batch.

Every statement a node sends goes through `Queue.execute`, which counts it, so the tests can hold
the engine to its database budget (a small fraction of a statement per run: docs/benchmarks.md).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from runtime.clock import iso
from runtime.queries import query
from sandbox.manifest import Plugin


@dataclass
class ClaimedRun:
    """A run this node owns and will start at `due_at` (scheduler time)."""

    run_id: int
    task_id: int | None
    config_id: int
    plugin_id: int
    plugin_updated_at: datetime
    task: str
    cadence: str
    cron: str
    offset_s: float
    slot: datetime
    attempt: int
    backfilled: bool
    due_at: datetime
    settings: dict[str, Any]
    storage: dict[str, Any]
    manual: bool = False
    plugin: Plugin | None = None
    # The task's pointer as this node left it at claim time (for decide_completion).
    next_slot: datetime | None = None
    task_attempt: int = 1


class Queue:
    def __init__(self, conn: psycopg.Connection[DictRow], node_id: str) -> None:
        self.conn = conn
        self.node_id = node_id
        self.statements = 0
        self._lock = threading.Lock()

    def execute(self, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            self.statements += 1
            cur = self.conn.execute(query(name), params or {})
            return list(cur.fetchall()) if cur.description else []

    def transaction(self) -> Any:
        return self.conn.transaction()

    # -- node ---------------------------------------------------------------------------------
    def register(
        self,
        hostname: str,
        pid: int,
        capabilities: list[str],
        layers: dict[str, bool],
        concurrency: int,
        posture: str = "",
        posture_reason: str = "",
        layer_reasons: dict[str, str] | None = None,
    ) -> None:
        self.execute(
            "register_node",
            {
                "id": self.node_id,
                "hostname": hostname,
                "pid": pid,
                "capabilities": capabilities,
                "layers": Jsonb(layers),
                "concurrency": concurrency,
                "posture": posture,
                "posture_reason": posture_reason,
                "layer_reasons": Jsonb(layer_reasons or {}),
            },
        )

    def stop(self) -> None:
        self.execute("stop_node", {"id": self.node_id})

    # -- claim ---------------------------------------------------------------------------------
    def due_tasks(
        self, horizon: datetime, limit: int, stats: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Lock due tasks (inside the caller's transaction) and heartbeat."""
        return self.execute(
            "claim_due_tasks",
            {
                "node": self.node_id,
                "horizon": horizon,
                "limit": limit,
                "stats": Jsonb(stats),
            },
        )

    def record_claims(self, decisions: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
        return self.execute(
            "record_claims",
            {
                "node": self.node_id,
                "now": now,
                "decisions": json.dumps(decisions, default=_json_default),
            },
        )

    def claim_manual(self, limit: int) -> list[dict[str, Any]]:
        return self.execute("claim_manual_runs", {"node": self.node_id, "limit": limit})

    # -- completion ------------------------------------------------------------------------------
    def complete(
        self,
        runs: list[dict[str, Any]],
        writes: list[dict[str, Any]],
        deletes: list[dict[str, Any]],
        quarantine_after: int,
    ) -> list[dict[str, Any]]:
        return self.execute(
            "complete_runs",
            {
                "runs": json.dumps(runs, default=_json_default),
                "writes": json.dumps(writes, default=_json_default),
                "deletes": json.dumps(deletes, default=_json_default),
                "quarantine_after": quarantine_after,
            },
        )

    def release(self, run_ids: list[int], outcome: str, now: datetime) -> None:
        if run_ids:
            self.execute(
                "release_runs",
                {"run_ids": run_ids, "outcome": outcome, "node": self.node_id, "now": now},
            )

    # -- fleet ----------------------------------------------------------------------------------
    def runs_of_dead_nodes(self, dead_after_s: float) -> list[dict[str, Any]]:
        """Runs of dead nodes, and every run claimed under this node's id (the caller keeps those
        it really holds: the others were left by an earlier process with the same id, or by a
        claim whose commit was lost)."""
        return self.execute(
            "runs_of_dead_nodes", {"dead_after_s": dead_after_s, "own_node": self.node_id}
        )

    def mark_dead_nodes(self, dead_after_s: float) -> None:
        self.execute("mark_dead_nodes", {"dead_after_s": dead_after_s})

    def plugin_code(self, plugin_id: int) -> dict[str, Any] | None:
        rows = self.execute("get_plugin_code", {"id": plugin_id})
        return rows[0] if rows else None


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
