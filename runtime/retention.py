"""Retention: delete old runs and log lines in small batches.

Each batch is one short autocommit statement (at most `batch` rows, rows locked by someone else
are skipped), so pruning never holds long locks and nodes keep claiming and recording meanwhile.
Runs still in flight are never deleted. `prune` is what `plugin-runtime prune` runs; a node runs
it periodically through its database gateway (runtime/node/retention.py).

Age is measured on the scheduler clock, the one that wrote `finished_at` and the log lines' `ts`:
a node passes its own clock; `plugin-runtime prune` uses the fleet's (runtime/fleet_clock.py).
So a `serve --testing` run whose fast clock started at any date keeps its history.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import psycopg

from runtime.fleet_clock import fleet_time
from runtime.queries import query

DEFAULT_RUNS_DAYS = 30.0
DEFAULT_LOGS_DAYS = 7.0
DEFAULT_BATCH = 5000

# Sends one named statement with its parameters; returns the number of rows it deleted.
Send = Callable[[str, Mapping[str, Any]], int]


def _prune(
    send: Send,
    name: str,
    days: float,
    now: datetime,
    batch: int,
    pause_s: float,
    max_batches: int | None,
) -> tuple[int, int]:
    total = batches = 0
    while max_batches is None or batches < max_batches:
        deleted = send(name, {"days": days, "batch": batch, "now": now})
        total += deleted
        batches += 1
        if deleted < batch:
            break
        if pause_s:
            time.sleep(pause_s)  # let the nodes' statements through between batches
    return total, batches


def prune(
    target: psycopg.Connection[Any] | Send,
    runs_days: float | None = DEFAULT_RUNS_DAYS,
    logs_days: float | None = DEFAULT_LOGS_DAYS,
    batch: int = DEFAULT_BATCH,
    *,
    pause_s: float = 0.0,
    max_batches: int | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Delete runs finished more than `runs_days` before `now` and log lines older than
    `logs_days` (None: keep them), `batch` rows per statement, until none is left (or
    `max_batches` per table). `target`: a connection, or a node gateway's way of sending a
    statement (which then gives `now`). `now` is scheduler time (default: the fleet's scheduler
    clock). Returns {"runs": n, "logs": n, "statements": n, "seconds": s}."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    for label, days in (("runs_days", runs_days), ("logs_days", logs_days)):
        if days is not None and days < 0:
            raise ValueError(f"{label} must be >= 0")
    if callable(target):
        send = target
        if now is None:
            raise ValueError("a node prunes at its own scheduler time: give `now`")
    else:
        send = _sender(target)
        if now is None:
            now = fleet_time(target).now
    started = time.monotonic()
    runs = logs = statements = 0
    if runs_days is not None:
        runs, n = _prune(send, "prune_runs", runs_days, now, batch, pause_s, max_batches)
        statements += n
    if logs_days is not None:
        logs, n = _prune(send, "prune_logs", logs_days, now, batch, pause_s, max_batches)
        statements += n
    return {
        "runs": runs,
        "logs": logs,
        "statements": statements,
        "seconds": round(time.monotonic() - started, 3),
    }


def _sender(conn: psycopg.Connection[Any]) -> Send:
    def send(name: str, params: Mapping[str, Any]) -> int:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(query(name), params)
            return max(cur.rowcount, 0)

    return send
