"""`python -m bench throughput`: trivial runs per second end to end through the real supervisor
(enqueue -> claim -> fresh jailed child -> outcome recorded in PostgreSQL), against the bare
fork rate measured in the same process, in the same run.

Many minute configs of the no-op plugin and a scheduler clock running `--time-scale` times faster
than the wall clock keep runs due continuously (more than the node can start: minute tasks
coalesce, so the node runs flat out). Runs are counted in PostgreSQL (state 'done') per real
second, after a warm-up.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from bench.budget import EngineBudget, EngineMeter
from bench.common import (
    PLUGINS_DIR,
    BenchDatabase,
    BenchError,
    StatementCount,
    StatementLog,
    fork_rate,
    install_minute_configs,
    result,
)
from bench.node import InProcessNode, minute_start
from runtime.clock import Clock
from runtime.node import NodeSettings


@dataclass
class ThroughputFigures:
    fork_per_s: float
    runs_per_s: float
    runs: int
    seconds: float
    configs: int
    scale: float
    concurrency: int
    budget: EngineBudget | None = None

    @property
    def ratio(self) -> float:
        return self.runs_per_s / self.fork_per_s


@dataclass
class EngineRun:
    runs_per_s: float  # in the measured window
    runs: int  # in the measured window
    seconds: float
    total_runs: int  # every run the node recorded, start to stop
    statements: StatementCount | None  # every statement the node sent, start to stop
    budget: EngineBudget | None = None  # CPU per run by process, in the measured window


def measure_engine(
    configs: int,
    scale: float,
    concurrency: int,
    warmup_s: float,
    window_s: float,
    label: str = "throughput",
    count_statements: bool = False,
) -> EngineRun:
    """One in-process supervisor at full load: runs per second once warmed up, and (optionally)
    the statements it sent from start to stop, counted by the server."""
    with BenchDatabase(label).create(log_statements=count_statements) as db:
        install_minute_configs(db, PLUGINS_DIR / "noop", configs)
        log = StatementLog(db) if count_statements else None
        if log is not None:
            log.mark_start()
        clock = Clock(minute_start(1.0, scale), scale)
        settings = NodeSettings(node_id=f"bench-{label}", concurrency=concurrency)
        node = InProcessNode(db, settings, clock).start()
        try:
            deadline = time.monotonic() + 60
            while db.scalar("done_runs") == 0:
                if time.monotonic() > deadline:
                    raise BenchError("no run was recorded within 60 s")
                time.sleep(0.2)
            time.sleep(warmup_s)
            meter = EngineMeter(lambda: [int(r["pid"]) for r in db.rows("backend_pids")])
            cpu_before = meter.sample()
            before, t0 = db.scalar("done_runs"), time.monotonic()
            time.sleep(window_s)
            after, t1 = db.scalar("done_runs"), time.monotonic()
            cpu_after = meter.sample()
        finally:
            node.stop()
        statements = None
        if log is not None:
            log.mark_end()
            statements = log.count()
        total = int(db.scalar("done_runs"))
        outcomes = node.supervisor.stats.by_outcome
        if set(outcomes) - {"ok"}:
            raise BenchError(f"not every trivial run succeeded: {outcomes}")
    runs = int(after - before)
    budget = EngineMeter.budget(cpu_before, cpu_after, runs)
    return EngineRun(runs / (t1 - t0), runs, t1 - t0, total, statements, budget)


def measure(
    configs: int,
    scale: float,
    concurrency: int,
    warmup_s: float,
    window_s: float,
    fork_seconds: float,
) -> ThroughputFigures:
    forks_before = fork_rate(fork_seconds)
    run = measure_engine(configs, scale, concurrency, warmup_s, window_s)
    forks_after = fork_rate(fork_seconds)
    return ThroughputFigures(
        (forks_before + forks_after) / 2,
        run.runs_per_s,
        run.runs,
        run.seconds,
        configs,
        scale,
        concurrency,
        run.budget,
    )


def main(argv: list[str], quick: bool) -> ThroughputFigures:
    parser = argparse.ArgumentParser(prog="python -m bench throughput")
    parser.add_argument("--configs", type=int, default=2000)
    parser.add_argument("--time-scale", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--seconds",
        type=float,
        default=10.0 if quick else 40.0,
        help="measured window, after the warm-up",
    )
    args = parser.parse_args(argv)
    if args.configs < 1 or args.time_scale <= 0 or args.concurrency < 1 or args.seconds <= 0:
        parser.error("--configs, --time-scale, --concurrency and --seconds must be positive")
    f = measure(
        args.configs,
        args.time_scale,
        args.concurrency,
        3.0 if quick else 10.0,
        args.seconds,
        1.0 if quick else 3.0,
    )
    print(
        f"workload: {f.configs} minute configs of a no-op plugin, scheduler clock x{f.scale:g}, "
        f"concurrency {f.concurrency}, one in-process supervisor"
    )
    print(f"bare fork+_exit+waitpid: {f.fork_per_s:.0f}/s")
    print(f"end to end: {f.runs} runs recorded in {f.seconds:.1f} s = {f.runs_per_s:.0f}/s")
    if f.budget is not None:
        print(f.budget.describe(f.runs_per_s))
        needed = f.budget.cores * 1000.0 / (0.9 * f.fork_per_s)
        print(
            f"target >= 0.9 x bare fork needs <= {needed:.3f} ms of CPU per run on "
            f"{f.budget.cores} cores; measured {f.budget.total_ms:.3f} ms"
        )
    result(
        "throughput_vs_fork",
        f.ratio,
        note=f"{f.runs_per_s:.0f}/s vs {f.fork_per_s:.0f}/s over {f.seconds:.0f} s"
        + (f"; CPU bound {f.budget.bound_per_s:.0f}/s" if f.budget else ""),
    )
    return f
