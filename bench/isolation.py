"""`python -m bench isolation`: healthy tasks' start lag with 0 % and with 10 % hanging plugins,
next to the sequential one-job-per-cadence model the project replaces.

- Engine: N minute configs on one in-process supervisor; with faults, every 10th config is the
  `bench_hang` plugin (a busy loop until its 2 s timeout kills it). Lag = start - (slot + the
  task's spread offset), in real seconds, of the healthy (no-op) configs' runs.
- Sequential model, simulated honestly: one loop that, at the start of the minute, runs every
  config's `run_every_minute` one after the other in the same sandbox, each waiting for the
  previous (`Sandbox.run`). A config's lag = its start - the minute's start. A pass longer than
  the budget is cut there: the configs it did not reach count with the budget as their lag (a
  lower bound, marked ">=").

`--quick` keeps the engine's load per real second the same with fewer configs on a faster
scheduler clock (100 configs at x10 = 1,000 at x1: 1,000 runs and 100 hangs per real minute).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from datetime import timedelta

from bench import plots
from bench.common import (
    PLUGINS_DIR,
    BenchDatabase,
    BenchError,
    install_minute_configs,
    percentile,
    result,
)
from bench.node import InProcessNode, minute_start
from runtime.clock import Clock
from runtime.node import NodeSettings
from sandbox import RunRequest, Sandbox, load_plugin, resolve_limits


@dataclass
class LagFigures:
    label: str
    lags: list[float]
    censored: int = 0  # configs a sequential pass did not reach within its budget
    outcomes: dict[str, int] = field(default_factory=dict)

    def p(self, q: float) -> float:
        return percentile(self.lags, q)

    def describe(self) -> str:
        mark = ">=" if self.censored and self.p(99) >= max(self.lags) else ""
        extra = f", {self.censored} not reached within the budget" if self.censored else ""
        return (
            f"{self.label}: {len(self.lags)} healthy starts, lag p50 {self.p(50):.3f} s, "
            f"p99 {mark}{self.p(99):.3f} s, max {max(self.lags):.3f} s{extra}; outcomes {self.outcomes}"
        )


def engine_lags(
    configs: int, hanging: int, scale: float, minutes: int, concurrency: int
) -> LagFigures:
    label = f"engine, {hanging * 100 // configs} % hanging"
    with BenchDatabase("isolation").create(log_statements=False) as db:
        # Interleaved: configs are created in id order, noop then hang, so hang ids come last;
        # their spread offsets are hashes of the ids, so they are spread over the minute anyway.
        install_minute_configs(db, PLUGINS_DIR / "noop", configs - hanging)
        if hanging:
            install_minute_configs(db, PLUGINS_DIR / "hang", hanging)
        start = minute_start(2.0, scale)
        first_slot = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
        last_slot = first_slot + timedelta(minutes=minutes)
        clock = Clock(start, scale)
        node = InProcessNode(
            db, NodeSettings(node_id="bench-isolation", concurrency=concurrency), clock
        ).start()
        try:
            # Every run of the last measured slot has started a minute (+ its timeout) later.
            done_at = last_slot + timedelta(seconds=60 + 0.5 * scale)
            while clock.now() < done_at:
                time.sleep(0.5)
        finally:
            node.stop()
        rows = db.rows("run_lags", {"from_slot": first_slot, "to_slot": last_slot})
    healthy = [float(r["lag_s"]) / scale for r in rows if r["plugin"] == "bench_noop"]
    outcomes: dict[str, int] = {}
    for r in rows:
        key = f"{r['plugin'].removeprefix('bench_')}:{r['outcome']}"
        outcomes[key] = outcomes.get(key, 0) + 1
    if not healthy:
        raise BenchError(f"{label}: no healthy run started in the measured minutes")
    expected = (configs - hanging) * minutes
    if len(healthy) < expected:
        print(f"  note: {label}: {len(healthy)} of {expected} healthy runs started")
    return LagFigures(label, healthy, 0, outcomes)


def sequential_lags(configs: int, hanging: int, budget_s: float) -> LagFigures:
    """One pass of the old model: every config's minute function in turn, each waiting."""
    label = f"sequential, {hanging * 100 // configs} % hanging"
    noop = load_plugin(PLUGINS_DIR / "noop")
    hang = load_plugin(PLUGINS_DIR / "hang")
    every = configs // hanging if hanging else 0
    order = [hang if every and i % every == every - 1 else noop for i in range(configs)]
    lags: list[float] = []
    outcomes: dict[str, int] = {}
    reached = 0
    with Sandbox() as sandbox:
        sandbox.run(RunRequest(plugin=noop, task="run_every_minute"))  # warm, like a running server
        begin = time.monotonic()
        for plugin in order:
            started = time.monotonic() - begin
            if started > budget_s:
                break
            reached += 1
            outcome = sandbox.run(
                RunRequest(
                    plugin=plugin,
                    task="run_every_minute",
                    limits=resolve_limits(plugin.manifest.limits),
                )
            )
            key = f"{plugin.name.removeprefix('bench_')}:{outcome.outcome}"
            outcomes[key] = outcomes.get(key, 0) + 1
            if plugin is noop:
                lags.append(started)
    censored = sum(1 for p in order[reached:] if p is noop)
    lags += [budget_s] * censored
    return LagFigures(label, lags, censored, outcomes)


def main(argv: list[str], quick: bool) -> dict[str, LagFigures]:
    parser = argparse.ArgumentParser(prog="python -m bench isolation")
    parser.add_argument("--configs", type=int, default=100 if quick else 1000)
    parser.add_argument("--time-scale", type=float, default=10.0 if quick else 1.0)
    parser.add_argument(
        "--minutes",
        type=int,
        default=1 if quick else 3,
        help="scheduler minutes measured per engine phase",
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--sequential-budget",
        type=float,
        default=6.0 if quick else 300.0,
        help="real seconds a sequential pass may take before it is cut",
    )
    args = parser.parse_args(argv)
    if args.configs < 10 or args.time_scale <= 0 or args.minutes < 1:
        parser.error("--configs must be >= 10, --time-scale > 0, --minutes >= 1")
    hanging = args.configs // 10
    print(
        f"workload: {args.configs} minute configs, scheduler clock x{args.time_scale:g} "
        f"({args.configs * args.time_scale:.0f} runs per real minute), {args.minutes} minute(s) "
        f"measured; faults: {hanging} configs busy-loop until their 2 s timeout"
    )
    figures: dict[str, LagFigures] = {}
    for name, n_hang in (("clean", 0), ("faults", hanging)):
        figures[name] = engine_lags(
            args.configs, n_hang, args.time_scale, args.minutes, args.concurrency
        )
        print(figures[name].describe(), flush=True)
    for name, n_hang in (("seq_clean", 0), ("seq_faults", hanging)):
        figures[name] = sequential_lags(args.configs, n_hang, args.sequential_budget)
        print(figures[name].describe(), flush=True)
    clean99, fault99 = figures["clean"].p(99), figures["faults"].p(99)
    print(
        f"engine p99 with faults / without: {fault99 / max(clean99, 1e-9):.2f} "
        f"(target <= 1.5 and <= 2 s)"
    )
    plots.lag_cdf(
        {f.label: f.lags for f in figures.values()},
        f"Start lag of healthy minute tasks, {args.configs} configs, 10 % hanging vs none",
        "isolation_lag.png",
        note=f"engine: one node, concurrency {args.concurrency}, clock x{args.time_scale:g}; "
        f"sequential: one pass cut at {args.sequential_budget:g} s",
    )
    result(
        "lag_p99_with_faults_s",
        round(fault99, 3),
        note=f"{args.configs} configs x{args.time_scale:g}; {clean99:.3f} s with none hanging",
    )
    return figures
