"""Fault injection against a real fleet, and the invariants checked from the runs table.

`run_chaos(ChaosOptions(...))` makes a throwaway database, installs healthy hourly, daily, cron
and minute plugins plus a faulty one that hangs, starts K real `serve` nodes on a fast scheduler
clock, injects faults on a schedule — SIGKILL a node and restart it, SIGSTOP/SIGCONT a node, cut
the database off (its connections terminated and refused), jump the clock — lets the fleet settle,
and checks:

- no hourly/daily/cron slot inside its window without a successful run (`skipped slots`);
- no slot with two successful runs (`duplicate slots`);
- minute tasks never running twice at once (`overlapping minute runs`);
- healthy tasks' start lag bounded outside fault windows (`healthy lag`).
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from runtime import schedule
from runtime.db import connect
from runtime.percentile import percentile
from runtime.testing.fleet import Fleet
from runtime.testing.pgbouncer import PgBouncer
from runtime.testing.postgres import (
    admin_connection,
    create_database,
    drop_database,
    url_with_database,
)

PLUGINS_DIR = Path(__file__).parent / "plugins"
# Share of configs per plugin; chaos_hang is the faulty one.
MIX = (
    ("chaos_hourly", 0.55),
    ("chaos_daily", 0.10),
    ("chaos_cron", 0.10),
    ("chaos_minute", 0.20),
    ("chaos_hang", 0.05),
)
HEALTHY = {"chaos_hourly", "chaos_daily", "chaos_cron", "chaos_minute"}


@dataclass
class ChaosOptions:
    server_url: str
    nodes: int = 3
    configs: int = 200
    duration_s: float = 120.0
    time_scale: float = 600.0
    kill_every_s: float = 15.0
    pause_every_s: float = 0.0  # 0: every 2 x kill_every
    pause_s: float = 3.0
    db_outage_s: float = 20.0
    clock_jump_minutes: float = 0.0
    settle_s: float = 20.0
    max_lag_s: float = 5.0
    concurrency: int = 16
    seed: int | None = None
    keep: bool = False
    # Every node connects through a PgBouncer of the run's own, in transaction pooling mode.
    pgbouncer: bool = False
    workdir: Path | None = None
    log: Callable[[str], None] = print


@dataclass
class Fault:
    kind: str
    start: float  # real monotonic
    end: float
    detail: str = ""


@dataclass
class ChaosReport:
    faults: list[Fault] = field(default_factory=list)
    expected_slots: int = 0
    run_slots: int = 0
    skipped: list[tuple[int, datetime]] = field(default_factory=list)
    duplicates: list[tuple[int, datetime]] = field(default_factory=list)
    overlaps: list[int] = field(default_factory=list)
    missed_records: int = 0
    lags_all: list[float] = field(default_factory=list)
    lags_outside_faults: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    runs_by_node: Counter[str] = field(default_factory=Counter)
    max_lag_s: float = 5.0
    database: str = ""

    def broken(self) -> list[str]:
        which = []
        if self.skipped:
            which.append("skipped slots")
        if self.duplicates:
            which.append("duplicate slots")
        if self.overlaps:
            which.append("overlapping minute runs")
        if self.lags_outside_faults and percentile(self.lags_outside_faults, 99) > self.max_lag_s:
            which.append("healthy lag")
        return which

    def lines(self) -> list[str]:
        kinds = Counter(f.kind for f in self.faults)
        out = [
            "faults injected: "
            + (", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())) or "none")
        ]
        out.append(
            f"slots (hourly/daily/cron, healthy): expected {self.expected_slots}, "
            f"run {self.run_slots}, skipped {len(self.skipped)}, duplicated {len(self.duplicates)}, "
            f"recorded missed {self.missed_records}"
        )
        out.append(f"minute tasks running twice at once: {len(self.overlaps)}")
        out.append(
            "runs by outcome: " + ", ".join(f"{k} {n}" for k, n in sorted(self.outcomes.items()))
        )
        out.append(
            "runs by node: " + ", ".join(f"{k} {n}" for k, n in sorted(self.runs_by_node.items()))
        )
        for name, lags in (
            ("all", self.lags_all),
            ("outside fault windows", self.lags_outside_faults),
        ):
            if lags:
                out.append(
                    f"healthy start lag ({name}, real s, n={len(lags)}): p50 {percentile(lags, 50):.2f}, "
                    f"p90 {percentile(lags, 90):.2f}, p99 {percentile(lags, 99):.2f}, max {max(lags):.2f}"
                )
        for tid, slot in self.skipped[:10]:
            out.append(f"  skipped: task {tid} slot {slot.isoformat()}")
        for tid, slot in self.duplicates[:10]:
            out.append(f"  duplicated: task {tid} slot {slot.isoformat()}")
        broken = self.broken()
        out.append("invariants: ok" if not broken else f"invariants: BROKEN ({', '.join(broken)})")
        return out


class DatabaseCut:
    """A database outage that harms no one else on the server: new connections to this database
    are refused and its open ones terminated, until restored."""

    def __init__(self, server_url: str, name: str) -> None:
        self.server_url = server_url
        self.name = name

    def cut(self) -> None:
        with admin_connection(self.server_url) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(
                    sql.Identifier(self.name)
                )
            )
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.name,),
            )

    def restore(self) -> None:
        with admin_connection(self.server_url) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(
                    sql.Identifier(self.name)
                )
            )


def run_chaos(options: ChaosOptions) -> ChaosReport:
    rng = random.Random(options.seed)
    say = options.log
    name = create_database(options.server_url, prefix="chaos")
    url = url_with_database(options.server_url, name)
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="plugin-runtime-chaos-"))
    report = ChaosReport(max_lag_s=options.max_lag_s, database=name)
    cut = DatabaseCut(options.server_url, name)
    start_time = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(
        minutes=50
    )
    extra = ["--dead-after", "5", "--quarantine-after", "0"]  # the faulty plugin keeps misbehaving
    if options.clock_jump_minutes:
        extra += ["--jump-on-sigusr1", str(options.clock_jump_minutes)]
    bouncer = PgBouncer(options.server_url).start() if options.pgbouncer else None
    fleet = Fleet(
        url,
        workdir,
        time_scale=options.time_scale,
        start_time=start_time,
        tick_interval=10.0,
        concurrency=options.concurrency,
        extra_args=extra,
        node_database_url=bouncer.url_for(url) if bouncer else None,
    )
    try:
        _populate(fleet, options.configs)
        say(
            f"database {name}: {options.configs} configs; {options.nodes} nodes at {options.time_scale:g}x; "
            f"logs in {workdir}"
        )
        fleet.start_nodes(options.nodes)
        fleet.wait_ready(60)
        began = time.monotonic()
        _inject(fleet, options, report, cut, rng, began)
        faults_over = time.monotonic()
        say(f"faults over; settling {options.settle_s:g} s")
        time.sleep(options.settle_s)
        end_sched = fleet.scheduler_now()
        fleet.stop()
        assert end_sched is not None
        horizon = _sched_at(fleet, faults_over)
        _check(fleet, report, horizon, end_sched)
    finally:
        fleet.stop()
        for node in fleet.nodes:
            node.kill()
        try:
            cut.restore()
        except psycopg.Error:
            pass
        if bouncer is not None:
            bouncer.close()
        if not options.keep:
            drop_database(options.server_url, name)
            # The node logs are kept when asked, or when an invariant broke (to read why).
            if options.workdir is None and not report.broken():
                shutil.rmtree(workdir, ignore_errors=True)
    return report


def _populate(fleet: Fleet, count: int) -> None:
    from runtime import store

    remaining = count
    for index, (plugin, share) in enumerate(MIX):
        fleet.install(PLUGINS_DIR / plugin)
        n = remaining if index == len(MIX) - 1 else max(1, round(count * share))
        n = min(n, remaining)
        remaining -= n
        with fleet.conn() as conn:
            conn.execute(
                "INSERT INTO plugin_runtime.plugin_configs (plugin_id, settings) "
                "SELECT p.id, '{}' FROM plugin_runtime.plugins p, generate_series(1, %s) WHERE p.name = %s",
                (n, plugin),
            )
    with fleet.conn() as conn:
        store.sync_tasks(conn)


def _sched_at(fleet: Fleet, real_monotonic: float) -> datetime:
    now = fleet.scheduler_now()
    assert now is not None
    return now - timedelta(seconds=(time.monotonic() - real_monotonic) * fleet.time_scale)


def _inject(
    fleet: Fleet,
    options: ChaosOptions,
    report: ChaosReport,
    cut: DatabaseCut,
    rng: random.Random,
    began: float,
) -> None:
    say = options.log
    end = began + options.duration_s
    pause_every = options.pause_every_s or options.kill_every_s * 2
    next_kill = began + options.kill_every_s if options.kill_every_s else float("inf")
    next_pause = began + pause_every / 2 if pause_every else float("inf")
    outage_at = began + options.duration_s / 2 if options.db_outage_s else float("inf")
    jump_at = began + options.duration_s * 0.75 if options.clock_jump_minutes else float("inf")
    while True:
        now = time.monotonic()
        if now >= end:
            return
        if now >= next_kill:
            node = rng.choice(fleet.nodes)
            node.kill()
            time.sleep(1.0)
            node.start()
            report.faults.append(Fault("kill", now, time.monotonic(), node.node_id))
            say(f"[{now - began:6.1f}s] SIGKILL {node.node_id}, restarted")
            next_kill = now + options.kill_every_s
        elif now >= next_pause:
            node = rng.choice([n for n in fleet.nodes if n.alive()] or fleet.nodes)
            node.pause()
            time.sleep(options.pause_s)
            node.resume()
            report.faults.append(Fault("pause", now, time.monotonic(), node.node_id))
            say(f"[{now - began:6.1f}s] SIGSTOP {node.node_id} for {options.pause_s:g} s, SIGCONT")
            next_pause = now + pause_every
        elif now >= outage_at:
            cut.cut()
            say(f"[{now - began:6.1f}s] database cut off for {options.db_outage_s:g} s")
            time.sleep(options.db_outage_s)
            cut.restore()
            report.faults.append(Fault("db_outage", now, time.monotonic()))
            say(f"[{time.monotonic() - began:6.1f}s] database back")
            outage_at = float("inf")
        elif now >= jump_at:
            fleet.jump_clock(timedelta(minutes=options.clock_jump_minutes))
            report.faults.append(
                Fault("clock_jump", now, now + 1.0, f"+{options.clock_jump_minutes:g} min")
            )
            say(
                f"[{now - began:6.1f}s] clock jumped +{options.clock_jump_minutes:g} min on every node"
            )
            jump_at = float("inf")
        else:
            time.sleep(
                min(0.2, max(0.0, min(next_kill, next_pause, outage_at, jump_at, end) - now))
            )


def _check(fleet: Fleet, report: ChaosReport, horizon: datetime, end_sched: datetime) -> None:
    with connect(fleet.database_url) as conn:
        tasks = {
            row["id"]: row
            for row in conn.execute(
                "SELECT t.id, t.cadence, t.cron, t.offset_s, p.name AS plugin FROM plugin_runtime.tasks t "
                "JOIN plugin_runtime.plugin_configs c ON c.id = t.config_id "
                "JOIN plugin_runtime.plugins p ON p.id = c.plugin_id"
            ).fetchall()
        }
        runs = conn.execute(
            "SELECT * FROM plugin_runtime.runs WHERE NOT manual ORDER BY id"
        ).fetchall()
    report.outcomes = Counter(str(r["outcome"]) for r in runs)
    report.runs_by_node = Counter(str(r["node"]) for r in runs if r["outcome"] == "ok")
    report.missed_records = report.outcomes.get("missed", 0)
    by_task: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        if run["task_id"] is not None:
            by_task[run["task_id"]].append(run)
    ok_slots: Counter[tuple[int, datetime]] = Counter(
        (r["task_id"], r["slot"]) for r in runs if r["outcome"] == "ok"
    )
    report.duplicates = sorted(key for key, n in ok_slots.items() if n > 1)
    windows = [
        (_sched_from_real(fleet, f.start), _sched_from_real(fleet, f.end + 3.0))
        for f in report.faults
    ]
    jumps = [f for f in report.faults if f.kind == "clock_jump"]
    for task_id, task in tasks.items():
        task_runs = by_task.get(task_id, [])
        if task["plugin"] not in HEALTHY:
            continue
        if task["cadence"] == "minute":
            spans = sorted(
                (r["started_at"], r["finished_at"])
                for r in task_runs
                if r["started_at"] is not None and r["finished_at"] is not None
            )
            if any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)):
                report.overlaps.append(task_id)
        else:
            slots = [r["slot"] for r in task_runs]
            if not slots:
                continue
            first = min(slots)
            due_limit = horizon - timedelta(seconds=task["offset_s"])
            expected = (
                schedule.slots_between(task["cron"], first, due_limit) if due_limit > first else []
            )
            report.expected_slots += len(expected)
            for slot in expected:
                if ok_slots[(task_id, slot)]:
                    report.run_slots += 1
                elif not any(r["slot"] == slot and r["outcome"] == "missed" for r in task_runs):
                    report.skipped.append((task_id, slot))
        for run in task_runs:
            if (
                run["outcome"] != "ok"
                or run["attempt"] != 1
                or run["backfilled"]
                or run["started_at"] is None
            ):
                continue
            due = run["slot"] + timedelta(seconds=task["offset_s"])
            lag = (run["started_at"] - due).total_seconds() / fleet.time_scale
            if jumps and any(
                due >= _sched_from_real(fleet, j.start) - timedelta(hours=1) for j in jumps
            ):
                continue  # after a clock jump every task is late by the jump, by design
            report.lags_all.append(lag)
            if not any(a <= due <= b for a, b in windows):
                report.lags_outside_faults.append(lag)
    del end_sched


def _sched_from_real(fleet: Fleet, real_monotonic: float) -> datetime:
    return _sched_at(fleet, real_monotonic)


__all__ = ["ChaosOptions", "ChaosReport", "run_chaos"]
