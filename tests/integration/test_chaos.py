"""Fault injection with the fleet harness: real `serve` nodes, a real PostgreSQL, real faults.
Short runs for CI; `make soak` runs the long one."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runtime.testing.chaos import PLUGINS_DIR, ChaosOptions, ChaosReport, _check, run_chaos
from runtime.testing.fleet import Fleet


@pytest.mark.parametrize("route", ["direct", "via_pgbouncer"])
def test_kills_and_pauses_break_no_invariant(
    postgres_server_url: str, tmp_path: Path, route: str
) -> None:
    """Every hourly slot once, none twice; via_pgbouncer: every node connects through a
    PgBouncer in transaction pooling mode (and lives on the periodic reconcile)."""
    report = run_chaos(
        ChaosOptions(
            server_url=postgres_server_url,
            pgbouncer=route == "via_pgbouncer",
            nodes=2,
            configs=40,
            duration_s=20,
            time_scale=600,
            kill_every_s=6,
            pause_every_s=8,
            pause_s=2,
            db_outage_s=0,
            settle_s=12,
            seed=1,
            workdir=tmp_path,
            log=lambda _: None,
        )
    )
    kinds = {f.kind for f in report.faults}
    assert {"kill", "pause"} <= kinds
    assert report.expected_slots > 40, "hourly slots passed during the run"
    assert report.broken() == [], "\n".join(report.lines())
    assert report.outcomes["lost"] >= 0 and report.outcomes["ok"] > 0


def test_chaos_command_with_database_outage_and_clock_jump(postgres_server_url: str) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime",
            "chaos",
            "--database-url",
            postgres_server_url,
            "--nodes",
            "2",
            "--configs",
            "30",
            "--duration",
            "20",
            "--time-scale",
            "600",
            "--kill-every",
            "0",
            "--db-outage",
            "6",
            "--clock-jump",
            "120",
            "--settle",
            "12",
            "--seed",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "invariants: ok", proc.stdout + proc.stderr[-3000:]
    assert proc.returncode == 0
    assert "db_outage x1" in proc.stdout and "clock_jump x1" in proc.stdout
    assert "database cut off" in proc.stderr


def test_the_invariant_check_reports_skipped_and_duplicated_slots(
    database_url: str, tmp_path: Path
) -> None:
    # A runs table with one skipped and one duplicated hourly slot: the check must say BROKEN.
    fleet = Fleet(
        database_url, tmp_path, time_scale=1.0, start_time=datetime(2026, 1, 1, tzinfo=UTC)
    )
    fleet.install(PLUGINS_DIR / "chaos_hourly")
    (config_id,) = fleet.create_configs("chaos_hourly", 1)
    task_id = fleet.query("SELECT id FROM plugin_runtime.tasks")[0]["id"]
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    # The unique key would refuse the duplicate: drop it here to play a broken implementation.
    fleet.query("DROP INDEX plugin_runtime.runs_one_success_per_slot")
    for hour, copies in ((0, 1), (1, 0), (2, 2), (3, 1)):
        for _ in range(copies):
            fleet.query(
                "INSERT INTO plugin_runtime.runs (task_id, config_id, task, slot, state, outcome, "
                "started_at, finished_at) VALUES (%s, %s, 'run_every_hour', %s, 'done', 'ok', %s, %s)",
                (
                    task_id,
                    config_id,
                    t0 + timedelta(hours=hour),
                    t0 + timedelta(hours=hour),
                    t0 + timedelta(hours=hour, seconds=1),
                ),
            )
    report = ChaosReport()
    _check(
        fleet,
        report,
        horizon=t0 + timedelta(hours=3, minutes=30),
        end_sched=t0 + timedelta(hours=4),
    )
    assert report.skipped == [(task_id, t0 + timedelta(hours=1))]
    assert report.duplicates == [(task_id, t0 + timedelta(hours=2))]
    assert report.lines()[-1] == "invariants: BROKEN (skipped slots, duplicate slots)"


@pytest.mark.parametrize("args", [["--db-outage", "30", "--duration", "20"]])
def test_chaos_refuses_bad_options(args: list[str], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
    proc = subprocess.run(
        [sys.executable, "-m", "runtime", "chaos", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 2 and "--db-outage must be shorter" in proc.stderr
    assert not (tmp_path / ".pgdata").exists(), "refused before starting any database"
