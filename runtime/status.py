"""What `plugin-runtime status`, `doctor` and the status page show: one snapshot of the fleet
from the database, and the problems in it, each with the exact command that acts on it.

    status = status_for_url(url)          # never raises for an unreachable database
    for p in problems(status): print(p.severity, p.what, p.command)

The snapshot follows the runbook's questions, in order: is it the database, the scheduler nodes
(and their sandbox layers), lag per cadence, missed slots, or one plugin config?
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from runtime import store
from runtime.db import (
    DatabaseUnavailable,
    DbFailure,
    InvalidDatabaseUrl,
    connect,
    describe_location,
)
from runtime.fleet_clock import fleet_time
from runtime.jsonable import iso_utc
from runtime.node.settings import DEAD_AFTER_S
from runtime.queries import query
from runtime.run_error import error_summary
from runtime.text import Masker
from sandbox.layers import EXPOSES

# Windows are in scheduler time (runtime/fleet_clock.py): a fast test clock shortens them.
WINDOW_S = 600.0  # lag and throughput: the last 10 minutes
WORST_WINDOW_S = 3600.0  # worst configs: the last hour
STOPPED_SHOWN_S = 900.0  # a stopped node is listed for this long (real seconds), then hidden
TOP = 5  # configs per "worst" list

# What `status` says first when the database cannot be used, per cause.
DB_HEADLINES: Mapping[str, str] = {
    DbFailure.UNREACHABLE.value: "DATABASE UNREACHABLE",
    DbFailure.AUTHENTICATION.value: "DATABASE REFUSED AUTHENTICATION",
    DbFailure.NO_DATABASE.value: "DATABASE DOES NOT EXIST",
    DbFailure.TOO_MANY_CONNECTIONS.value: "DATABASE HAS NO FREE CONNECTION",
    DbFailure.NO_SCHEMA.value: "SCHEMA MISSING (database not migrated)",
    DbFailure.EMBEDDED.value: "EMBEDDED DATABASE CANNOT START",
}

# The runbook's checks, in the order `doctor` walks them.
CHECKS: tuple[tuple[str, str], ...] = (
    ("database", "database reachable and fast"),
    ("nodes", "nodes alive and not overloaded"),
    ("sandbox", "sandbox layers"),
    ("lag", "lag per cadence"),
    ("missed", "missed slots"),
    ("configs", "failing and quarantined configs"),
)
SEVERITIES = ("critical", "warning", "notice")  # notices are shown but are not "something wrong"


@dataclass(frozen=True)
class Thresholds:
    db_rtt_ms: float = 250.0
    connections_ratio: float = 0.9
    lock_waits: int = 10
    longest_query_s: float = 300.0
    # p99 start lag per cadence before it is a problem (minute tasks may be a couple of minutes
    # late without harm; hourly and daily ones should not drift much).
    lag_p99_s: Mapping[str, float] = field(
        default_factory=lambda: {"minute": 180.0, "hour": 600.0, "day": 1800.0, "cron": 600.0}
    )
    overdue_s: Mapping[str, float] = field(
        default_factory=lambda: {"minute": 120.0, "hour": 300.0, "day": 600.0, "cron": 300.0}
    )
    # An enabled config whose last runs all failed is a warning from its first failure, and
    # critical from this many failures in a row.
    failing_after: int = 3
    stuck_run_s: float = 900.0  # a run waiting or in flight this long past its due time
    forget_dead_after_s: float = 3600.0  # a dead node older than this is history, not a problem
    dead_after_s: float = DEAD_AFTER_S  # as `serve --dead-after`: no heartbeat this long is dead


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Problem:
    check: str  # one of CHECKS' names
    severity: str  # critical | warning | notice
    what: str  # what is wrong, one line
    command: str  # the exact command that acts on it
    hint: str = ""  # how to look closer, if useful
    look: str = ""  # the exact command that shows why, if there is one

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


# -- collecting -------------------------------------------------------------------------------


def _rows(
    conn: psycopg.Connection[Any], name: str, params: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query(name), params)
        return [{k: _plain(v) for k, v in row.items()} for row in cur.fetchall()]


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


def collect_status(
    conn: psycopg.Connection[Any], *, dead_after_s: float = DEAD_AFTER_S
) -> dict[str, Any]:
    """A snapshot of the fleet: database, queue, cadences, nodes, worst and quarantined configs,
    and every config failing since its last success. Short read-only statements; windows are
    measured on the fleet's scheduler clock."""
    started = time.perf_counter()
    conn.execute("SELECT 1")
    rtt_ms = (time.perf_counter() - started) * 1000.0
    database = _rows(conn, "status_database")[0]
    database.update(reachable=True, rtt_ms=round(rtt_ms, 2), schema=True)
    clock = fleet_time(conn)
    now = clock.now
    window = {"window_s": WINDOW_S, "now": now}
    queue = _rows(conn, "status_queue")[0]
    oldest = queue.get("oldest_due_at")
    queue["oldest_due_age_s"] = max(0.0, (now - oldest).total_seconds()) if oldest else None
    cadences = _rows(conn, "status_cadences", window)
    shown = {**window, "stopped_shown_s": STOPPED_SHOWN_S}
    nodes = [_node(row, dead_after_s) for row in _rows(conn, "status_nodes", shown)]
    hidden = _rows(conn, "status_hidden_nodes", shown)[0]["n"]
    worst = _rows(
        conn, "status_worst_configs", {"window_s": WORST_WINDOW_S, "top": TOP, "now": now}
    )
    attention = _rows(conn, "status_attention_configs", {"failing_from": 1})
    # A failed run's error is its plugin's text: its config's secrets are masked.
    secrets = store.config_secrets(conn, [row["config_id"] for row in attention])
    for row in attention:
        mask = Masker(secrets.get(row["config_id"], []))
        row["last_error"] = mask.fields(row["last_error"])
        row["last_error_summary"] = error_summary(row["last_error"])
    return {
        "generated_at": now,
        "clock": {
            "now": now,
            "source": clock.source,
            "scale": clock.scale,
            "database_now": clock.database_now,
        },
        "window_s": WINDOW_S,
        "database": database,
        "queue": queue,
        "cadences": cadences,
        "nodes": nodes,
        "stopped_nodes_hidden": int(hidden),
        "worst_configs": worst,
        "quarantined": [r for r in attention if r["quarantined_at"] is not None],
        "failing": [r for r in attention if r["quarantined_at"] is None],
    }


def _node(row: dict[str, Any], dead_after_s: float) -> dict[str, Any]:
    stats = row.get("stats") or {}
    age = float(row["heartbeat_age_s"] or 0.0)
    if row["stopped_at"] is not None:
        state = "stopped"
    elif age > dead_after_s:
        state = "dead"
    else:
        state = "alive"
    layers: dict[str, bool] = row.get("layers") or {}
    row.update(
        state=state,
        heartbeat_age_s=round(age, 1),
        running=int(stats.get("running") or 0) if state == "alive" else 0,
        held=int(stats.get("held") or 0) if state == "alive" else 0,
        lag_p50_s=stats.get("lag_p50_s"),
        lag_p99_s=stats.get("lag_p99_s"),
        runs_per_min=round(row.pop("finished_recent") / (WINDOW_S / 60.0), 2),
        posture=row.get("posture") or "",
        posture_reason=row.get("posture_reason") or "",
        layer_reasons=row.get("layer_reasons") or {},
        layers_active=sorted(k for k, on in layers.items() if on),
        layers_missing=sorted(k for k, on in layers.items() if not on),
    )
    return row


def unreachable_status(
    url: str,
    error: str,
    failure: DbFailure = DbFailure.UNREACHABLE,
    next_step: str = "",
) -> dict[str, Any]:
    return {
        "generated_at": datetime.now(UTC),
        "window_s": WINDOW_S,
        "database": {
            "reachable": False,
            "location": describe_location(url) if url else "embedded",
            "error": error,
            "failure": failure.value,
            "headline": DB_HEADLINES[failure.value],
            "next_step": next_step,
        },
        "queue": {},
        "cadences": [],
        "nodes": [],
        "stopped_nodes_hidden": 0,
        "worst_configs": [],
        "quarantined": [],
        "failing": [],
    }


def status_for_url(
    url: str, *, connect_timeout: float = 5.0, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> dict[str, Any]:
    """`collect_status` on a connection of its own, with `problems` and `healthy` added. A
    database that cannot be used (unreachable, refusing us, missing, full, not migrated) is
    reported in the result with its cause and next step, never raised."""
    try:
        started = time.perf_counter()
        conn = connect(
            url, connect_timeout=connect_timeout, application_name="plugin-runtime status"
        )
        connect_ms = (time.perf_counter() - started) * 1000.0
    except DatabaseUnavailable as exc:
        status = unreachable_status(url, str(exc), exc.failure, exc.next_step)
    except InvalidDatabaseUrl as exc:
        status = unreachable_status(url, str(exc))
    else:
        try:
            status = collect_status(conn, dead_after_s=thresholds.dead_after_s)
            status["database"]["connect_ms"] = round(connect_ms, 2)
            status["database"]["location"] = describe_location(url)
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            status = unreachable_status(
                url,
                f"PostgreSQL at {describe_location(url)} has no plugin_runtime schema",
                DbFailure.NO_SCHEMA,
                "plugin-runtime db migrate",
            )
            status["database"].update(reachable=True, schema=False)
        except psycopg.OperationalError as exc:
            status = unreachable_status(url, f"lost the connection: {str(exc).strip()}")
        finally:
            conn.close()
    found = problems(status, thresholds)
    status["problems"] = [p.to_dict() for p in found]
    status["healthy"] = is_healthy(found)
    return status


def is_healthy(found: list[Problem]) -> bool:
    return not any(p.severity in ("critical", "warning") for p in found)


# -- judging ----------------------------------------------------------------------------------


def problems(
    status: Mapping[str, Any], thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> list[Problem]:
    """What is wrong in `status`, in the runbook's order (CHECKS), most severe first per check."""
    found: list[Problem] = []
    db = status["database"]
    if not db.get("reachable") or not db.get("schema", True):
        failure = db.get("failure") or DbFailure.UNREACHABLE.value
        location = str(db.get("location", ""))
        host, _, port = location.rpartition(":")
        command = db.get("next_step") or f"pg_isready -h {host or 'localhost'} -p {port or '5432'}"
        found.append(
            Problem(
                "database",
                "critical",
                f"{DB_HEADLINES.get(failure, 'DATABASE UNAVAILABLE').lower()}: "
                f"{db.get('error') or 'unknown'}",
                command,
                "nothing can be scheduled or recorded until it is fixed; nodes keep running "
                "what they hold and catch up every hourly and daily slot afterwards",
            )
        )
        return found
    found += _database(db, thresholds)
    found += _nodes(status, thresholds)
    found += _sandbox(status)
    found += _lag(status, thresholds)
    found += _missed(status)
    found += _configs(status, thresholds)
    order = {name: i for i, (name, _label) in enumerate(CHECKS)}
    return sorted(found, key=lambda p: (order.get(p.check, 99), SEVERITIES.index(p.severity)))


ACTIVITY_SQL = (
    'psql "$PLUGIN_RUNTIME_DATABASE_URL" -c "SELECT pid, state, wait_event_type, '
    "now() - query_start AS running_for, left(query, 80) FROM pg_stat_activity "
    "WHERE state <> 'idle' ORDER BY query_start\""
)


def _database(db: Mapping[str, Any], t: Thresholds) -> list[Problem]:
    out = []
    if db["rtt_ms"] > t.db_rtt_ms:
        out.append(
            Problem(
                "database",
                "warning",
                f"the database is slow: a round trip took {db['rtt_ms']:.0f} ms "
                f"(more than {t.db_rtt_ms:.0f} ms)",
                ACTIVITY_SQL,
                "if it stays slow, scale the database up",
            )
        )
    if db["connections"] >= t.connections_ratio * db["max_connections"]:
        out.append(
            Problem(
                "database",
                "warning",
                f"{db['connections']} of {db['max_connections']} connections in use",
                ACTIVITY_SQL,
            )
        )
    if db["lock_waits"] >= t.lock_waits:
        out.append(
            Problem(
                "database", "warning", f"{db['lock_waits']} sessions wait on a lock", ACTIVITY_SQL
            )
        )
    if db["longest_query_s"] >= t.longest_query_s:
        out.append(
            Problem(
                "database",
                "warning",
                f"a statement has been running for {db['longest_query_s']:.0f} s",
                ACTIVITY_SQL,
            )
        )
    return out


def _scheduler_nodes(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        n
        for n in status["nodes"]
        if n["state"] == "alive" and "scheduledTasks" in (n.get("capabilities") or [])
    ]


def _nodes(status: Mapping[str, Any], t: Thresholds) -> list[Problem]:
    out = []
    nodes = status["nodes"]
    alive = [n for n in nodes if n["state"] == "alive"]
    runnable = sum(c["tasks"] for c in status["cadences"])
    if runnable and not _scheduler_nodes(status):
        out.append(
            Problem(
                "nodes",
                "critical",
                f"no scheduler node is alive: {runnable} task(s) are not running",
                "plugin-runtime serve",
            )
        )
    for n in nodes:
        if n["state"] != "dead" or n["heartbeat_age_s"] > t.forget_dead_after_s:
            continue
        stuck = f"; {n['claimed']} run(s) it claimed wait to be released" if n["claimed"] else ""
        out.append(
            Problem(
                "nodes",
                "critical" if n["claimed"] and not alive else "warning",
                f"node {n['id']} ({n['hostname']}, pid {n['pid']}) stopped heartbeating "
                f"{n['heartbeat_age_s']:.0f} s ago{stuck}",
                f"plugin-runtime serve --node-id {n['id']}",
                "restart it on its host; live nodes release its runs within a minute",
            )
        )
    for n in alive:
        if n["concurrency"] and n["running"] >= n["concurrency"] and n["held"] > 0:
            out.append(
                Problem(
                    "nodes",
                    "warning",
                    f"node {n['id']} is at its concurrency ({n['running']} running, "
                    f"{n['held']} waiting to start)",
                    "plugin-runtime serve",
                    f"add a node, or restart {n['id']} with a higher --concurrency; "
                    "check the worst configs for timeouts first",
                )
            )
    queue = status["queue"]
    age = queue.get("oldest_due_age_s")
    if age is not None and age > t.stuck_run_s:
        out.append(
            Problem(
                "nodes",
                "warning",
                f"run {queue['oldest_run_id']} has waited {age / 60:.0f} min past its due time",
                "plugin-runtime runs --limit 20",
                "a node holds it, or no node takes manual runs",
            )
        )
    return out


def _sandbox(status: Mapping[str, Any]) -> list[Problem]:
    """A warning per sandbox layer off on some live node: what an escaped plugin can then reach,
    and why the layer is off there (the node's reason and posture)."""
    alive = [n for n in status["nodes"] if n["state"] == "alive"]
    out = []
    missing_anywhere = sorted({layer for n in alive for layer in n["layers_missing"]})
    for layer in missing_anywhere:
        off = [n for n in alive if layer in n["layers_missing"]]
        where = "every node" if len(off) == len(alive) else ", ".join(n["id"] for n in off)
        reasons = sorted(
            {
                f"{n.get('posture') or '?'} posture: "
                f"{(n.get('layer_reasons') or {}).get(layer, 'no reason given')}"
                for n in off
            }
        )
        out.append(
            Problem(
                "sandbox",
                "warning",
                f"sandbox layer {layer} is off on {where}: an escaped plugin can reach "
                f"{EXPOSES.get(layer, 'what the layer stops')}",
                "plugin-runtime run PLUGIN_DIR",
                f"{'; '.join(reasons)}. See SECURITY.md (postures); "
                "serve --require-layers makes a missing layer an error",
            )
        )
    return out


def _lag(status: Mapping[str, Any], t: Thresholds) -> list[Problem]:
    out = []
    for c in status["cadences"]:
        cadence = c["cadence"]
        limit = t.lag_p99_s.get(cadence, 600.0)
        if c["lag_p99_s"] is not None and c["lag_p99_s"] > limit:
            out.append(
                Problem(
                    "lag",
                    "warning",
                    f"{cadence} runs start late: p99 lag {c['lag_p99_s']:.0f} s "
                    f"(p50 {c['lag_p50_s']:.0f} s) over the last {WINDOW_S / 60:.0f} min",
                    "plugin-runtime serve",
                    "add a node if nodes are at their concurrency; disable a config that times out",
                )
            )
        overdue_limit = t.overdue_s.get(cadence, 300.0)
        if c["overdue"] and c["overdue_s"] is not None and c["overdue_s"] > overdue_limit:
            out.append(
                Problem(
                    "lag",
                    "warning" if cadence == "minute" else "critical",
                    f"{c['overdue']} {cadence} task(s) overdue with no run in flight, the oldest "
                    f"by {c['overdue_s']:.0f} s (slot {_iso(c['oldest_unstarted_slot'])})",
                    "plugin-runtime serve",
                    "no node is claiming them: start or restart a node",
                )
            )
    return out


def _missed(status: Mapping[str, Any]) -> list[Problem]:
    out = []
    for c in status["cadences"]:
        if c["missed_24h"]:
            out.append(
                Problem(
                    "missed",
                    "warning",
                    f"{c['missed_24h']} {c['cadence']} slot(s) missed in the last 24 h "
                    "(older than the catch-up window: never run)",
                    "plugin-runtime runs --outcome missed",
                    "they happen when no node ran for longer than the window",
                )
            )
    return out


def _configs(status: Mapping[str, Any], t: Thresholds) -> list[Problem]:
    out = []
    for c in status["failing"]:
        n = c["consecutive_failures"]
        run = c.get("last_failed_run_id")
        error = c.get("last_error_summary")
        last = f"run {run} {c.get('last_failed_outcome')}{f': {error}' if error else ''}"
        what = (
            f"config {c['config_id']} (plugin {c['plugin']}) failed its last {n} run(s)"
            f" (last: {last if run else c['last_outcome']})"
        )
        out.append(
            Problem(
                "configs",
                "critical" if n >= t.failing_after else "warning",
                what,
                f"plugin-runtime configs disable {c['config_id']}",
                f"a warning from the first failure, critical from {t.failing_after} in a row; "
                "disable it if it is broken, re-enable it once fixed "
                f"(plugin-runtime configs enable {c['config_id']})",
                f"plugin-runtime runs show {run}"
                if run
                else f"plugin-runtime logs {c['config_id']}",
            )
        )
    for c in status["quarantined"]:
        run = c.get("last_failed_run_id")
        error = c.get("last_error_summary")
        out.append(
            Problem(
                "configs",
                "warning",
                f"config {c['config_id']} (plugin {c['plugin']}) is quarantined since "
                f"{_iso(c['quarantined_at'])}: {c['quarantine_reason'] or 'no reason given'}"
                f"{f' (last error: {error})' if error else ''}",
                f"plugin-runtime configs enable {c['config_id']}",
                "release it once the plugin is fixed (plugins install DIR updates it)",
                f"plugin-runtime runs show {run}"
                if run
                else f"plugin-runtime logs {c['config_id']}",
            )
        )
    return out


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return iso_utc(value.replace(microsecond=0))
    return "?" if value is None else str(value)
