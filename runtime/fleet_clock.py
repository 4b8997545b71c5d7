"""The scheduler clock as seen from outside a node: what `status`, `doctor`, the status page
and retention measure "the last N minutes" and "older than N days" against.

Runs carry scheduler time (slot, due, started, finished), which is the wall clock in production
but runs fast from any start date under `serve --testing`. Each node puts its scheduler clock in
its heartbeat (`stats.clock_now`, `stats.clock_scale`); the freshest live node's reading, moved
on by the database time since that heartbeat, is the fleet's scheduler time. With no live node
reporting a clock, the database's now() is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from runtime.clock import parse_time
from runtime.queries import query

LIVE_HEARTBEAT_S = 60.0  # a node heartbeating within this many real seconds speaks for the fleet


@dataclass(frozen=True)
class FleetTime:
    now: datetime  # scheduler time now
    database_now: datetime
    scale: float  # scheduler seconds per real second
    source: str  # "database", or "node ID" whose clock it follows

    @property
    def is_database(self) -> bool:
        return self.source == "database"


def fleet_time(conn: psycopg.Connection[Any]) -> FleetTime:
    """The fleet's scheduler time (one short statement)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query("fleet_clock"), {"live_s": LIVE_HEARTBEAT_S})
        rows = cur.fetchall()
    database_now: datetime | None = None
    for row in rows:
        database_now = row["database_now"]
        stats = row["stats"] or {}
        clock_now, scale = stats.get("clock_now"), stats.get("clock_scale")
        if not clock_now or not scale:
            continue
        try:
            at_heartbeat = parse_time(str(clock_now))
            scale = float(scale)
        except (TypeError, ValueError):
            continue
        since = max(0.0, float(row["since_heartbeat_s"] or 0.0))
        now = at_heartbeat + timedelta(seconds=since * scale)
        return FleetTime(now, database_now, scale, f"node {row['id']}")
    assert database_now is not None  # the statement always returns a row
    return FleetTime(database_now, database_now, 1.0, "database")
