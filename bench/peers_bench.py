"""`python -m bench peers`: the same workload — one job per config per slot, a no-op task —
through plugin-runtime, Procrastinate and Graphile Worker, on the same PostgreSQL, in one run.

- plugin-runtime: minute configs of the no-op plugin on a fast scheduler clock (as in
  `bench throughput`), every run in a fresh jailed child; runs recorded per real second.
- Procrastinate (Python, in-process async no-op task, no isolation), concurrency 8: N jobs
  deferred with its bulk `batch_defer_async`, then one worker with `wait=False` runs them all.
- Graphile Worker (Node 20, in-process no-op task, no isolation), concurrency 8: N jobs added
  with its bulk `graphile_worker.add_jobs`, then one runner runs them all (bench/peers/).

Statements are counted by the server for each (a database of its own with log_statement=all,
BEGIN/COMMIT aside): for the peers, enqueue and work separately; for plugin-runtime, everything
the node sent from start to stop (its enqueue is part of it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import time
from dataclasses import dataclass

from bench import plots
from bench.common import BENCH_DIR, BenchDatabase, BenchError, StatementLog, fork_rate, q, result
from bench.sandbox_bench import measure as measure_sandbox
from bench.throughput import measure_engine

PEERS_DIR = BENCH_DIR / "peers"


@dataclass
class PeerFigures:
    name: str
    jobs: int
    per_s: float
    enqueue_statements: int
    work_statements: int
    detail: str = ""

    @property
    def statements_per_job(self) -> float:
        return (self.enqueue_statements + self.work_statements) / max(self.jobs, 1)


def procrastinate_figures(jobs: int, concurrency: int) -> PeerFigures:
    try:
        import procrastinate
    except ImportError as exc:
        raise BenchError("procrastinate is not installed: pip install -e '.[bench]'") from exc

    with BenchDatabase("procrastinate").create() as db:
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=db.url))

        @app.task(name="noop")
        async def noop() -> None:
            return None

        async def go() -> tuple[float, StatementLog, StatementLog]:
            async with app.open_async():
                await app.schema_manager.apply_schema_async()
                enqueue = StatementLog(db)
                enqueue.mark_start()
                await noop.batch_defer_async(*({} for _ in range(jobs)))
                enqueue.mark_end()
                work = StatementLog(db)
                work.mark_start()
                start = time.perf_counter()
                await app.run_worker_async(
                    concurrency=concurrency, wait=False, install_signal_handlers=False
                )
                elapsed = time.perf_counter() - start
                work.mark_end()
                return elapsed, enqueue, work

        elapsed, enqueue, work = asyncio.run(go())
        e, w = enqueue.count(), work.count()
    return PeerFigures(
        f"Procrastinate {procrastinate.__version__}",
        jobs,
        jobs / elapsed,
        e.total,
        w.total,
        f"enqueue: {e.describe()}\n    work: {w.describe()}",
    )


def graphile_figures(jobs: int, concurrency: int) -> PeerFigures:
    node = shutil.which("node")
    if node is None:
        raise BenchError("node is not on PATH")
    if not (PEERS_DIR / "node_modules" / "graphile-worker").is_dir():
        raise BenchError("graphile-worker is not installed: (cd bench/peers && npm install)")
    version = json.loads(
        (PEERS_DIR / "node_modules" / "graphile-worker" / "package.json").read_text()
    )["version"]
    script = str(PEERS_DIR / "graphile_bench.js")
    with BenchDatabase("graphile").create() as db:
        subprocess.run(
            [node, script, "migrate", db.url],
            check=True,
            cwd=PEERS_DIR,
            timeout=120,
            capture_output=True,
        )
        enqueue = StatementLog(db)
        enqueue.mark_start()
        with db.conn() as conn:
            # The harness's connection is quiet: let the server log (and count) this enqueue.
            conn.execute("SET log_statement = 'all'")
            conn.execute(q("graphile_add_jobs"), {"count": jobs})
        enqueue.mark_end()
        work = StatementLog(db)
        work.mark_start()
        proc = subprocess.run(
            [node, script, "work", db.url, str(jobs), str(concurrency)],
            cwd=PEERS_DIR,
            timeout=600,
            capture_output=True,
            text=True,
        )
        work.mark_end()
        if proc.returncode != 0:
            raise BenchError(f"graphile-worker failed: {proc.stderr.strip().splitlines()[-1:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        e, w = enqueue.count(), work.count()
    return PeerFigures(
        f"Graphile Worker {version}",
        int(out["jobs"]),
        float(out["per_s"]),
        e.total,
        w.total,
        f"enqueue: {e.describe()}\n    work: {w.describe()}",
    )


def main(argv: list[str], quick: bool) -> dict[str, PeerFigures]:
    parser = argparse.ArgumentParser(prog="python -m bench peers")
    parser.add_argument("--jobs", type=int, default=1500 if quick else 20000, help="jobs per peer")
    parser.add_argument("--concurrency", type=int, default=8, help="the peers' worker concurrency")
    parser.add_argument("--configs", type=int, default=2000, help="plugin-runtime minute configs")
    parser.add_argument("--time-scale", type=float, default=60.0)
    parser.add_argument(
        "--seconds",
        type=float,
        default=5.0 if quick else 40.0,
        help="plugin-runtime's measured window",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.concurrency < 1 or args.configs < 1 or args.seconds <= 0:
        parser.error("--jobs, --concurrency, --configs and --seconds must be positive")
    forks = fork_rate(1.0)
    sandbox = measure_sandbox(500 if quick else 3000, 1.0, 32, split_runs=0)
    print(f"bare fork+_exit+waitpid: {forks:.0f}/s; sandbox alone: {sandbox.sandbox_per_s:.0f}/s")
    ours = measure_engine(
        args.configs,
        args.time_scale,
        32,
        3.0 if quick else 10.0,
        args.seconds,
        label="peers",
        count_statements=True,
    )
    assert ours.statements is not None
    mine = PeerFigures(
        "plugin-runtime",
        ours.total_runs,
        ours.runs_per_s,
        0,
        ours.statements.total,
        f"node, start to stop: {ours.statements.describe()}",
    )
    figures = {"plugin-runtime": mine}
    for key, fn in (("procrastinate", procrastinate_figures), ("graphile", graphile_figures)):
        try:
            figures[key] = fn(args.jobs, args.concurrency)
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            print(f"{key}: not measured: {exc}")
    for f in figures.values():
        print(
            f"{f.name}: {f.jobs} jobs, {f.per_s:.0f}/s, {f.statements_per_job:.4f} statements per job "
            f"({f.enqueue_statements} to enqueue, {f.work_statements} to work)\n    {f.detail}"
        )
    for key in ("procrastinate", "graphile"):
        if key in figures:
            peer = figures[key]
            print(
                f"vs {peer.name}: {mine.per_s / peer.per_s:.2f}x the runs per second, "
                f"{mine.statements_per_job / max(peer.statements_per_job, 1e-9):.4f}x the statements per run"
            )
    if ours.budget is not None:
        print(ours.budget.describe(mine.per_s))
        if "procrastinate" in figures:
            needed = ours.budget.cores * 1000.0 / figures["procrastinate"].per_s
            print(
                f"target >= 1.0 x Procrastinate ({figures['procrastinate'].per_s:.0f}/s) needs <= "
                f"{needed:.3f} ms of CPU per run on {ours.budget.cores} cores; measured "
                f"{ours.budget.total_ms:.3f} ms"
            )
    plots.bars(
        {
            "bare fork": forks,
            "sandbox alone": sandbox.sandbox_per_s,
            "plugin-runtime\n(end to end, jailed)": mine.per_s,
            **{
                f.name.replace(" ", "\n", 1) + "\n(no isolation)": f.per_s
                for k, f in figures.items()
                if k != "plugin-runtime"
            },
        },
        "Trivial runs per second, same machine, same run",
        "runs per second",
        "throughput.png",
        note=f"peers: concurrency {args.concurrency}, {args.jobs} queued no-op jobs; "
        f"plugin-runtime: {args.configs} minute configs, clock x{args.time_scale:g}, concurrency 32",
    )
    plots.bars(
        {f.name.replace(" ", "\n", 1): f.statements_per_job for f in figures.values()},
        "Database statements per run (server-counted, BEGIN/COMMIT aside)",
        "statements per run",
        "statements.png",
        log=True,
    )
    if "procrastinate" not in figures:
        raise BenchError("Procrastinate could not be measured: no vs_procrastinate figure")
    result(
        "vs_procrastinate",
        round(mine.per_s / figures["procrastinate"].per_s, 3),
        note=f"{mine.per_s:.0f}/s vs {figures['procrastinate'].per_s:.0f}/s ({args.jobs} jobs)"
        + (f"; CPU bound {ours.budget.bound_per_s:.0f}/s" if ours.budget else ""),
    )
    return figures
