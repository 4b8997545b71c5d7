"""`python -m bench reload`: how fast a config change made by SQL takes effect on a running node,
in real time (the clock is not accelerated), for each way a node can reach PostgreSQL:

- `direct`: connected to PostgreSQL, LISTEN on the same URL;
- `pgbouncer+listen`: through PgBouncer in transaction pooling mode, LISTEN on a direct
  `--listen-database-url`;
- `pgbouncer`: through PgBouncer, nothing to LISTEN on (the listener finds it hears nothing and
  the node lives on its periodic reconcile, `--reconcile-interval`).

Two changes are timed from the COMMIT of the UPDATE:

- *enable*: a disabled config is enabled (the same path as a config created or edited by SQL):
  until its tasks are scheduled by the node (`next_slot` set);
- *disable*: a config whose next minute run the node already holds (claimed ahead of its slot)
  is disabled: until that run is cancelled, or, when it still starts, until it starts.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.common import PLUGINS_DIR, BenchDatabase, BenchError, install_minute_configs, result
from bench.node import ServeProcess, wait_until
from runtime.testing.pgbouncer import PgBouncer

ROUTES = ("direct", "pgbouncer+listen", "pgbouncer")
# Minute configs per route: their runs' offsets in the minute differ, so a disable waits seconds
# for a held run of one of them, not up to a minute for one config's.
CONFIGS = 12


@dataclass
class RouteFigures:
    route: str
    reconcile_interval_s: float
    enable_s: list[float] = field(default_factory=list)
    disable_s: list[float] = field(default_factory=list)

    def describe(self) -> str:
        def fmt(xs: list[float]) -> str:
            if not xs:
                return "-"
            return f"median {statistics.median(xs):.2f} s, max {max(xs):.2f} s (n={len(xs)})"

        return f"enable: {fmt(self.enable_s)}; disable: {fmt(self.disable_s)}"


def _scalar(db: BenchDatabase, sql: str, params: tuple[object, ...] = ()) -> object:
    with db.conn() as conn:
        row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
        return None if row is None else next(iter(row.values()))


def _enable_once(db: BenchDatabase, config_id: int) -> float:
    with db.conn() as conn:
        conn.execute(
            "UPDATE plugin_runtime.plugin_configs SET enabled = false WHERE id = %s", (config_id,)
        )
        conn.execute("DELETE FROM plugin_runtime.tasks WHERE config_id = %s", (config_id,))
        changed = time.monotonic()
        conn.execute(
            "UPDATE plugin_runtime.plugin_configs SET enabled = true WHERE id = %s", (config_id,)
        )
    wait_until(
        lambda: bool(
            _scalar(
                db,
                "SELECT count(*) > 0 FROM plugin_runtime.tasks "
                "WHERE config_id = %s AND next_slot IS NOT NULL",
                (config_id,),
            )
        ),
        300,
        "the enabled config to be scheduled",
        interval=0.02,
    )
    return time.monotonic() - changed


def _disable_once(db: BenchDatabase, config_ids: list[int]) -> float:
    with db.conn() as conn:
        conn.execute(
            "UPDATE plugin_runtime.plugin_configs SET enabled = true WHERE id = ANY(%s)",
            (config_ids,),
        )
    # Wait for a run of a next minute slot held ahead of its slot (claimed, not started), of
    # any of the configs: their minute offsets differ, so one is held within seconds.
    held: list[int] = []

    def holding() -> bool:
        with db.conn() as conn:
            row = conn.execute(
                "SELECT id, config_id FROM plugin_runtime.runs WHERE config_id = ANY(%s) "
                "AND state = 'claimed' AND started_at IS NULL AND due_at > %s "
                "ORDER BY due_at DESC LIMIT 1",
                (config_ids, datetime.now(UTC)),
            ).fetchone()
        if row:
            held[:] = [int(row["id"]), int(row["config_id"])]
        return bool(row)

    wait_until(holding, 90, "a held run", interval=0.05)
    with db.conn() as conn:
        changed_wall = datetime.now(UTC)
        changed = time.monotonic()
        conn.execute(
            "UPDATE plugin_runtime.plugin_configs SET enabled = false WHERE id = %s", (held[1],)
        )

    def settled() -> bool:
        with db.conn() as conn:
            row = conn.execute(
                "SELECT outcome, started_at, finished_at FROM plugin_runtime.runs WHERE id = %s",
                (held[0],),
            ).fetchone()
        return bool(row and (row["started_at"] or row["outcome"] == "cancelled"))

    wait_until(settled, 90, "the held run to be cancelled or started", interval=0.02)
    with db.conn() as conn:
        row = conn.execute(
            "SELECT outcome, started_at FROM plugin_runtime.runs WHERE id = %s", (held[0],)
        ).fetchone()
    assert row is not None
    if row["outcome"] == "cancelled" or row["started_at"] is None:
        return time.monotonic() - changed
    return max(0.0, (row["started_at"] - changed_wall).total_seconds())


def measure(route: str, samples: int, reconcile_s: float, workdir: Path) -> RouteFigures:
    figures = RouteFigures(route, reconcile_s)
    with (
        BenchDatabase(f"reload_{route.replace('+', '_')}").create(log_statements=False) as db,
        contextlib.ExitStack() as stack,
    ):
        install_minute_configs(db, PLUGINS_DIR / "noop", CONFIGS)
        with db.conn() as conn:
            rows = conn.execute("SELECT id FROM plugin_runtime.plugin_configs ORDER BY id")
            config_ids = [int(r["id"]) for r in rows.fetchall()]
        config_id = config_ids[0]
        url = None
        extra = ["--reconcile-interval", str(reconcile_s)]
        if route != "direct":
            url = stack.enter_context(PgBouncer(db.server)).url_for(db.url)
            if route == "pgbouncer+listen":
                extra += ["--listen-database-url", db.url]
        node = ServeProcess(db, workdir, extra=extra, url=url).start()
        stack.callback(node.stop)

        def registered() -> bool:
            node.check_alive()
            return bool(_scalar(db, "SELECT count(*) > 0 FROM plugin_runtime.nodes"))

        wait_until(registered, 60, "the node to register")
        time.sleep(4.0)  # past the listener's probe
        for _ in range(samples):
            node.check_alive()
            figures.enable_s.append(_enable_once(db, config_id))
            figures.disable_s.append(_disable_once(db, config_ids))
    return figures


def main(argv: list[str], quick: bool) -> list[RouteFigures]:
    parser = argparse.ArgumentParser(prog="python -m bench reload")
    parser.add_argument(
        "--samples",
        type=int,
        default=1 if quick else 3,
        help="changes of each kind per route (each disable waits for a held minute run: up to a minute)",
    )
    parser.add_argument(
        "--reconcile-interval",
        type=float,
        default=10.0 if quick else 60.0,
        help="the node's --reconcile-interval (default: serve's 60 s; --quick 10 s)",
    )
    parser.add_argument(
        "--routes", default=",".join(ROUTES), help=f"comma-separated subset of {', '.join(ROUTES)}"
    )
    args = parser.parse_args(argv)
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    if not routes or any(r not in ROUTES for r in routes) or args.samples < 1:
        parser.error(f"--routes: a subset of {', '.join(ROUTES)}; --samples at least 1")
    # The routes side by side (each its own database, PgBouncer and node; a few configs each,
    # so they hardly compete for CPU): their waits overlap.
    with (
        tempfile.TemporaryDirectory(prefix="bench-reload-") as tmp,
        ThreadPoolExecutor(len(routes)) as pool,
    ):
        futures = [
            pool.submit(measure, route, args.samples, args.reconcile_interval, Path(tmp))
            for route in routes
        ]
        out = [future.result() for future in futures]
    for f in out:
        print(f"{f.route} (reconcile every {f.reconcile_interval_s:g} s): {f.describe()}")
    worst = max((max(f.enable_s + f.disable_s) for f in out), default=0.0)
    if not out:
        raise BenchError("nothing measured")
    result("worst_effect_s", round(worst, 2))
    return out
