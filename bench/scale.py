"""`python -m bench scale`: 10,000 minute configs on one `plugin-runtime serve` process.

Measures, for every scheduler minute after a warm-up minute: the share of the configs whose run of
that slot started inside the minute (runs_on_time), the start lag percentiles (start - slot -
spread offset, real seconds), and the supervisor's memory: the serve process alone and with its
fork server (psutil RSS, the maximum of samples taken every half second; the per-run children
are short-lived and not counted).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

from bench.budget import EngineBudget, EngineMeter
from bench.common import (
    PLUGINS_DIR,
    BenchDatabase,
    BenchError,
    install_minute_configs,
    percentile,
    record,
    result,
)
from bench.node import ServeProcess, minute_start

MiB = 1024 * 1024


@dataclass
class ScaleFigures:
    configs: int
    scale: float
    minutes: int
    expected: int
    started: int
    on_time: int
    lags: list[float]
    rss_serve: int
    rss_total: int
    budget: EngineBudget | None = None  # CPU per run by process over the measured minutes
    budget_s: float = 0.0  # the real seconds those minutes took

    @property
    def on_time_fraction(self) -> float:
        return self.on_time / max(self.expected, 1)


def _rss(pid: int) -> tuple[int, int]:
    """(serve's RSS, serve + fork server RSS)."""
    proc = psutil.Process(pid)
    own = proc.memory_info().rss
    total = own
    for child in proc.children(recursive=False):
        try:
            if "forkserver" in " ".join(child.cmdline()):
                total += child.memory_info().rss
        except psutil.Error:
            continue
    return own, total


def measure(configs: int, scale: float, minutes: int, workdir: Path) -> ScaleFigures:
    with BenchDatabase("scale").create(log_statements=False) as db:
        install_minute_configs(db, PLUGINS_DIR / "noop", configs)
        # The first slot comes once every task is initialised (5,000 per tick, a tick per 10 s).
        lead = 2.0 + 10.0 * (configs // 5000) / scale
        start = minute_start(lead, scale)
        # The first minute is a warm-up: a task initialised after its offset in that minute has
        # passed is first due the minute after, so the first slot is not fully populated.
        first_slot = start.replace(second=0, microsecond=0) + timedelta(minutes=2)
        last_slot = first_slot + timedelta(minutes=minutes)
        real_start = time.monotonic()
        node = ServeProcess(db, workdir, time_scale=scale, start_time=start).start()
        rss_serve = rss_total = 0
        meter = EngineMeter(lambda: [int(r["pid"]) for r in db.rows("backend_pids")], node.pid)
        cpu_before: dict[str, dict[int, float]] | None = None
        runs_before = 0
        window_start = window_s = 0.0
        try:
            # Scheduler time, as the node reads it, from its start time and real seconds.
            def now() -> datetime:
                return start + timedelta(seconds=(time.monotonic() - real_start) * scale)

            while now() < last_slot + timedelta(seconds=60 + 2 * scale):
                time.sleep(0.5)
                node.check_alive()
                if cpu_before is None and now() >= first_slot:
                    cpu_before, runs_before = meter.sample(), int(db.scalar("done_runs"))
                    window_start = time.monotonic()
                try:
                    own, total = _rss(node.pid)
                except psutil.Error:
                    continue
                rss_serve, rss_total = max(rss_serve, own), max(rss_total, total)
            budget = None
            if cpu_before is not None:
                runs = int(db.scalar("done_runs")) - runs_before
                budget = EngineMeter.budget(cpu_before, meter.sample(), runs)
                window_s = time.monotonic() - window_start
        finally:
            node.stop()
        counts = db.rows("slot_counts", {"from_slot": first_slot, "to_slot": last_slot})
        lag_rows = db.rows("run_lags", {"from_slot": first_slot, "to_slot": last_slot})
    if not counts:
        raise BenchError(
            f"no run of the measured slots started ({configs} configs, clock x{scale:g})"
        )
    for row in counts:
        print(
            f"  slot {row['slot'].astimezone(UTC):%H:%M}: {row['runs']} runs, "
            f"{row['in_minute']} started inside the minute"
        )
    return ScaleFigures(
        configs,
        scale,
        minutes,
        configs * minutes,
        sum(int(r["runs"]) for r in counts),
        sum(int(r["in_minute"]) for r in counts),
        [float(r["lag_s"]) / scale for r in lag_rows],
        rss_serve,
        rss_total,
        budget,
        window_s,
    )


def main(argv: list[str], quick: bool) -> ScaleFigures:
    parser = argparse.ArgumentParser(prog="python -m bench scale")
    parser.add_argument("--configs", type=int, default=2000 if quick else 10000)
    # --quick: 2,000 configs at x10 start as many runs per real minute as 20,000 at x1.
    parser.add_argument("--time-scale", type=float, default=10.0 if quick else 1.0)
    parser.add_argument("--minutes", type=int, default=2 if quick else 3)
    args = parser.parse_args(argv)
    if args.configs < 1 or args.time_scale <= 0 or args.minutes < 1:
        parser.error("--configs, --time-scale and --minutes must be positive")
    if quick:
        print(
            f"--quick: {args.configs} configs on a clock x{args.time_scale:g} "
            f"({args.configs * args.time_scale:.0f} runs per real minute, as many as "
            f"{args.configs * args.time_scale:.0f} configs at x1), {args.minutes} minutes; "
            f"the memory figure is for {args.configs} configs"
        )
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        f = measure(args.configs, args.time_scale, args.minutes, Path(tmp))
    print(
        f"{f.configs} minute configs, {f.minutes} minute(s): {f.started} of {f.expected} runs started, "
        f"{f.on_time} inside their minute"
    )
    print(
        f"start lag p50 {percentile(f.lags, 50):.3f} s, p99 {percentile(f.lags, 99):.3f} s, "
        f"max {max(f.lags, default=float('nan')):.3f} s"
    )
    print(
        f"RSS: serve {f.rss_serve / MiB:.1f} MiB, serve + fork server {f.rss_total / MiB:.1f} MiB "
        f"(target: serve <= 100 MiB at 10,000 configs)"
    )
    if f.budget is not None:
        needed_per_s = f.configs * f.scale / 60.0
        print(f.budget.describe(f.budget.runs / max(f.budget_s, 1e-9)))
        print(
            f"{f.configs} configs x{f.scale:g} start {needed_per_s:.0f} runs per real second: "
            f"at {f.budget.total_ms:.3f} ms of CPU per run that takes "
            f"{needed_per_s * f.budget.total_ms / 10:.0f} % of {f.budget.cores} cores' "
            f"{f.budget.cores * 100} %"
        )
    record(
        "supervisor_rss_mib",
        round(f.rss_serve / MiB, 1),
        note=f"{f.configs} configs (serve alone; with its fork server {f.rss_total / MiB:.1f})",
    )
    result(
        "runs_on_time",
        round(f.on_time_fraction, 4),
        note=f"{f.configs} configs x{f.scale:g} = {f.configs * f.scale:.0f} runs per real minute, "
        f"{f.on_time} of {f.expected}",
    )
    return f
