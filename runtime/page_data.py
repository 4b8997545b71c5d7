"""What the status page shows beyond `status`: a config's page (its recent slots, coloured by
outcome, each linking to its run), a run's page (error, traceback, logs), and the front page's
charts (runs per minute by outcome, start lag per cadence, over the last hour). Every window is
scheduler time (runtime/fleet_clock.py). Each function opens its own short connection."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg.rows import dict_row

from runtime import store
from runtime.clock import parse_time
from runtime.db import connect
from runtime.fleet_clock import fleet_time
from runtime.queries import query
from runtime.run_error import error_summary
from runtime.slot_grid import GRID_WINDOW, task_grid

CHART_WINDOW_S = 3600.0


def _rows(conn: Any, name: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query(name), params)
        return list(cur.fetchall())


def config_page(url: str, config_id: int) -> dict[str, Any]:
    """The config, its tasks, and each task's slot grid. Raises store.NotFound."""
    with connect(url, connect_timeout=3, application_name="plugin-runtime page") as conn:
        now = fleet_time(conn).now
        found = _rows(conn, "config_page", {"config_id": config_id})
        if not found:
            raise store.NotFound(f"no config with id {config_id}")
        config = found[0]
        since = now - max(GRID_WINDOW.values())
        runs = _rows(conn, "config_runs_since", {"config_id": config_id, "since": since})
    grids = []
    for task in config.pop("tasks"):
        for key in ("next_slot", "next_due_at"):
            if task.get(key):
                task[key] = parse_time(str(task[key]))
        mine = [r for r in runs if r["task"] == task["name"]]
        grid = task_grid(task, mine, now, config["created_at"], error_summary)
        grids.append({**grid.to_dict(), "next_slot": task.get("next_slot")})
    return {"now": now, "config": config, "grids": grids}


def run_page(url: str, run_id: int) -> dict[str, Any]:
    """Everything about one run (as `runs show`), with its error summary. Raises NotFound."""
    with connect(url, connect_timeout=3, application_name="plugin-runtime page") as conn:
        run = store.get_run(conn, run_id)
    run["error_summary"] = error_summary(run["error"])
    return run


def charts(url: str) -> dict[str, Any]:
    """Per minute over the last hour: finished runs by outcome, and start lag by cadence."""
    with connect(url, connect_timeout=3, application_name="plugin-runtime page") as conn:
        now = fleet_time(conn).now
        params = {"now": now, "window_s": CHART_WINDOW_S}
        runs = _rows(conn, "chart_runs_per_minute", params)
        lag = _rows(conn, "chart_lag_per_minute", params)
    return {
        "now": now,
        "window_s": CHART_WINDOW_S,
        "runs_per_minute": [
            {"minute": r["minute"], "outcome": r["outcome"], "runs": int(r["runs"])} for r in runs
        ],
        "lag_per_minute": [
            {
                "minute": r["minute"],
                "cadence": r["cadence"],
                "runs": int(r["runs"]),
                "lag_p50_s": float(r["lag_p50_s"]),
                "lag_p99_s": float(r["lag_p99_s"]),
            }
            for r in lag
        ],
    }
