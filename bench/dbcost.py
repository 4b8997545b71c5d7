"""`python -m bench dbcost`: database statements per run at 1,000 and 10,000 minute configs,
counted by PostgreSQL itself (the server's statement log of a dedicated database).

A real `plugin-runtime serve` process runs the workload. The start marker is logged before the
node starts and the end marker after it has stopped (SIGTERM: it drains and records everything),
so every statement the node ever sent is counted — registration, migration check, LISTEN,
claims with their heartbeats, records, completions, sweeps, reconciles, plugin loads, the final
release and stop — and divided by every run it recorded. BEGIN/COMMIT/ROLLBACK are excluded and
reported separately.

Each workload runs twice by default (`--routes direct,pgbouncer`): once connected to PostgreSQL
directly, once through a PgBouncer of the benchmark's own in transaction pooling mode (the
server still counts what reaches it; behind the pooler the node does not LISTEN, see
docs/deploy.md). The last line is the direct figure at the largest size.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    PLUGINS_DIR,
    BenchDatabase,
    BenchError,
    StatementCount,
    StatementLog,
    install_minute_configs,
    result,
)
from bench.node import ServeProcess, minute_start
from runtime.testing.pgbouncer import PgBouncer

ROUTES = ("direct", "pgbouncer")


@dataclass
class CostFigures:
    route: str
    configs: int
    scale: float
    seconds: float
    runs: int
    statements: StatementCount

    @property
    def per_run(self) -> float:
        return self.statements.total / max(self.runs, 1)


def measure(
    configs: int, scale: float, seconds: float, workdir: Path, route: str = "direct"
) -> CostFigures:
    with (
        BenchDatabase(f"dbcost{configs}").create() as db,
        contextlib.ExitStack() as stack,
    ):
        url = None
        if route == "pgbouncer":
            url = stack.enter_context(PgBouncer(db.server)).url_for(db.url)
        install_minute_configs(db, PLUGINS_DIR / "noop", configs)
        log = StatementLog(db)
        log.mark_start()
        # The first minute slot comes once the node has initialised every task (a claim batch
        # of 5,000 per tick, one tick per 10 scheduler seconds).
        lead = min(seconds / 3, 2.0 + 10.0 * (configs // 5000) / scale)
        node = ServeProcess(
            db, workdir, time_scale=scale, start_time=minute_start(lead, scale), url=url
        ).start()
        try:
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                time.sleep(0.5)
                node.check_alive()
        finally:
            node.stop()
        elapsed = time.monotonic() - start
        log.mark_end()
        runs = int(db.scalar("done_runs"))
        count = log.count()
    if runs == 0:
        raise BenchError(f"no run was recorded at {configs} configs in {seconds:.0f} s")
    return CostFigures(route, configs, scale, elapsed, runs, count)


def main(argv: list[str], quick: bool) -> list[CostFigures]:
    parser = argparse.ArgumentParser(prog="python -m bench dbcost")
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="how long the node serves each workload (default: --quick 22 s; else 150 s each)",
    )
    parser.add_argument(
        "--sizes",
        # --quick: only the target's size, its clock x2 (as many runs in half the time) so
        # that both routes fit in a minute.
        default="10000:2" if quick else "1000:6,10000:1",
        help="CONFIGS:TIME_SCALE pairs; the time scale keeps runs/s within what "
        "the node can do (statements per run do not depend on it: intervals "
        "are in scheduler seconds)",
    )
    parser.add_argument(
        "--routes",
        default=",".join(ROUTES),
        help="how the node connects, each a row: direct, pgbouncer (transaction pooling)",
    )
    args = parser.parse_args(argv)
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    if not routes or any(r not in ROUTES for r in routes):
        parser.error(f"--routes: expected a comma-separated subset of {', '.join(ROUTES)}")
    try:
        sizes = [(int(c), float(s)) for c, s in (p.split(":") for p in args.sizes.split(","))]
    except ValueError:
        parser.error("--sizes: expected CONFIGS:SCALE[,CONFIGS:SCALE...]")
    figures = []
    with tempfile.TemporaryDirectory(prefix="bench-dbcost-") as tmp:
        for configs, scale in sizes:
            seconds = args.seconds or (22.0 if quick else 150.0)
            for route in routes:
                f = measure(configs, scale, seconds, Path(tmp), route)
                figures.append(f)
                print(
                    f"{configs} minute configs, {route}, clock x{scale:g}, "
                    f"{f.seconds:.0f} s of serve: {f.runs} runs, {f.statements.describe()}"
                )
                print(
                    f"  statements per run at {configs}, {route}: {f.per_run:.4f} "
                    f"({f.runs / max(f.statements.total, 1):.0f} runs per statement)"
                )
    last = ([f for f in figures if f.route == "direct"] or figures)[-1]
    result(
        "statements_per_run",
        round(last.per_run, 4),
        note=f"{last.configs} configs, {last.route}, {last.seconds:.0f} s of serve, {last.runs} runs",
    )
    return figures
