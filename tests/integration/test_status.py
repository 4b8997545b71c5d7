"""`status`, `doctor`, `logs` and `prune` as real subprocesses, against real PostgreSQL and real
`serve` processes (fleet harness, fast clock)."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime import store
from runtime.retention import prune
from runtime.testing.fleet import Fleet
from sandbox.manifest import load_plugin

if TYPE_CHECKING:
    from conftest import CliRunner


def _status(cli: CliRunner) -> tuple[int, dict[str, Any]]:
    result = cli("status", "--json")
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def _fleet(database_url: str, tmp_path: Path, *extra: str) -> Fleet:
    return Fleet(
        database_url,
        tmp_path / "fleet",
        time_scale=60,
        tick_interval=10,
        concurrency=4,
        extra_args=extra,
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_healthy_fleet_then_no_node(
    database_url: str, cli_runner: CliRunner, test_plugins_dir: Path, tmp_path: Path
) -> None:
    with _fleet(database_url, tmp_path) as fleet:
        fleet.install(test_plugins_dir / "tiny")
        fleet.create_configs("tiny", 2, {"api_key": "k"})
        fleet.start_nodes(1)
        fleet.wait_for(
            lambda: len(fleet.runs("outcome = 'ok' AND task = 'run_every_minute'")) >= 6,
            30,
            "minute runs",
        )
        code, status = _status(cli_runner)
        assert code == 0, status["problems"]
        assert status["healthy"] is True
        assert status["database"]["reachable"] and status["database"]["rtt_ms"] < 1000
        [node] = status["nodes"]
        assert node["id"] == "node-1" and node["state"] == "alive"
        assert node["heartbeat_age_s"] < 20 and node["concurrency"] == 4
        assert node["runs_per_min"] > 0 and node["layers_active"]
        minute = next(c for c in status["cadences"] if c["cadence"] == "minute")
        assert minute["tasks"] == 2 and minute["runs"] >= 6 and minute["lag_p99_s"] is not None
        assert {w["plugin"] for w in status["worst_configs"]} == {"tiny"}
        assert all(p["severity"] == "notice" for p in status["problems"])

        table = cli_runner("status")
        assert table.returncode == 0, table.stdout
        assert "node-1" in table.stdout and "alive" in table.stdout and "healthy" in table.stdout
        doctor = cli_runner("doctor")
        assert doctor.returncode == 0, doctor.stdout
        lines = [
            line
            for line in doctor.stdout.splitlines()
            if line[:2] in {f"{i}." for i in range(1, 7)}
        ]
        assert [line.split(":")[0] for line in lines] == [
            "1. database reachable and fast",
            "2. nodes alive and not overloaded",
            "3. sandbox layers",
            "4. lag per cadence",
            "5. missed slots",
            "6. failing and quarantined configs",
        ]
        assert all(": OK" in line for line in lines), doctor.stdout
    # The node stopped gracefully: nothing schedules the tasks any more.
    code, status = _status(cli_runner)
    assert code == 1
    assert status["nodes"][0]["state"] == "stopped"
    critical = [p for p in status["problems"] if p["severity"] == "critical"]
    assert critical and critical[0]["check"] == "nodes"
    assert "no scheduler node is alive" in critical[0]["what"]
    assert critical[0]["command"] == "plugin-runtime serve"


def test_database_unreachable_exit_3_with_a_clear_report(tmp_path: Path) -> None:
    from conftest import CliRunner

    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres"
    cli = CliRunner(database_url=url, cwd=tmp_path)
    result = cli("status")
    assert result.returncode == 3
    assert "Traceback" not in result.stdout + result.stderr
    assert "DATABASE UNREACHABLE" in result.stdout and "connection refused" in result.stdout
    assert "pg_isready -h 127.0.0.1" in result.stdout
    as_json = cli("status", "--json")
    assert as_json.returncode == 3
    data = json.loads(as_json.stdout)
    assert data["database"]["reachable"] is False and data["healthy"] is False
    assert data["problems"][0]["check"] == "database"
    doctor = cli("doctor")
    assert doctor.returncode == 3
    assert doctor.stdout.count("SKIPPED (needs the database)") == 5
    assert doctor.stdout.splitlines()[0].startswith("1. database reachable and fast: CRITICAL")


def test_dead_node_is_reported_with_the_command_to_restart_it(
    db: Any, cli_runner: CliRunner, test_plugins_dir: Path
) -> None:
    db.execute(
        "INSERT INTO plugin_runtime.nodes (id, hostname, pid, heartbeat_at, layers, stats) "
        "VALUES ('ghost', 'host-a', 4242, now() - interval '90 seconds', "
        '\'{"seccomp": true, "landlock": false}\', \'{"running": 3}\')'
    )
    code, status = _status(cli_runner)
    assert code == 1
    [node] = status["nodes"]
    assert node["state"] == "dead" and node["heartbeat_age_s"] >= 89 and node["running"] == 0
    [problem] = [p for p in status["problems"] if p["check"] == "nodes"]
    assert "node ghost (host-a, pid 4242) stopped heartbeating" in problem["what"]
    assert problem["command"] == "plugin-runtime serve --node-id ghost"
    doctor = cli_runner("doctor")
    assert doctor.returncode == 1
    assert "2. nodes alive and not overloaded: WARNING node ghost" in doctor.stdout
    assert "plugin-runtime serve --node-id ghost" in doctor.stdout
    assert "1. database reachable and fast: OK" in doctor.stdout


def test_always_timing_out_config_is_shown_and_disabled(
    database_url: str, cli_runner: CliRunner, test_plugins_dir: Path, tmp_path: Path
) -> None:
    with _fleet(database_url, tmp_path) as fleet:
        fleet.install(test_plugins_dir / "always_timeout")
        fleet.install(test_plugins_dir / "tiny")
        [bad] = fleet.create_configs("always_timeout", 1)
        fleet.create_configs("tiny", 1, {"api_key": "k"})
        fleet.start_nodes(1)
        fleet.wait_for(
            lambda: fleet.query(
                "SELECT 1 FROM plugin_runtime.plugin_configs WHERE id = %s "
                "AND consecutive_failures >= 3",
                (bad,),
            ),
            40,
            "three timeouts",
        )
        code, status = _status(cli_runner)
        assert code == 1
        worst = status["worst_configs"][0]
        assert (worst["config_id"], worst["plugin"]) == (bad, "always_timeout")
        assert worst["timeouts"] >= 3 and worst["failures"] >= 3 and worst["p95_ms"] >= 900
        assert worst["last_outcome"] == "timeout"
        [problem] = [p for p in status["problems"] if p["check"] == "configs"]
        assert problem["command"] == f"plugin-runtime configs disable {bad}"
        assert "(last: run " in problem["what"] and " timeout: Timeout: " in problem["what"]
        doctor = cli_runner("doctor")
        assert doctor.returncode == 1
        assert f"run: plugin-runtime configs disable {bad}" in doctor.stdout
        cli_runner.ok("configs", "disable", str(bad))
        code, status = _status(cli_runner)
        assert not [p for p in status["problems"] if p["check"] == "configs"]
        assert code == 0, status["problems"]


def test_quarantine_visible_and_released(
    database_url: str, cli_runner: CliRunner, test_plugins_dir: Path, tmp_path: Path
) -> None:
    with _fleet(database_url, tmp_path, "--quarantine-after", "2") as fleet:
        fleet.install(test_plugins_dir / "always_timeout")
        [bad] = fleet.create_configs("always_timeout", 1)
        fleet.start_nodes(1)
        fleet.wait_for(
            lambda: fleet.query(
                "SELECT 1 FROM plugin_runtime.plugin_configs WHERE id = %s "
                "AND quarantined_at IS NOT NULL",
                (bad,),
            ),
            40,
            "quarantine",
        )
        code, status = _status(cli_runner)
        assert code == 1
        [q] = status["quarantined"]
        assert (
            q["config_id"] == bad
            and "2 runs in a row failed (last: timeout)" in q["quarantine_reason"]
        )
        [problem] = [p for p in status["problems"] if p["check"] == "configs"]
        assert "quarantined" in problem["what"]
        assert problem["command"] == f"plugin-runtime configs enable {bad}"
        table = cli_runner("status").stdout
        assert "quarantined configs" in table and "always_timeout" in table
    cli_runner.ok("configs", "enable", str(bad))
    _code, status = _status(cli_runner)
    assert status["quarantined"] == []
    assert not [p for p in status["problems"] if p["check"] == "configs"]


# -- logs and prune -----------------------------------------------------------------------------


def _config_with_runs(db: Any, test_plugins_dir: Path) -> tuple[int, list[int]]:
    store.install_plugin(db, load_plugin(test_plugins_dir / "tiny"))
    config_id = store.create_config(db, "tiny", {"api_key": "k"})
    runs = [
        db.execute(
            "INSERT INTO plugin_runtime.runs (config_id, task, slot, state, outcome) "
            "VALUES (%s, 'run_every_minute', now(), 'done', 'ok') RETURNING id",
            (config_id,),
        ).fetchone()["id"]
        for _ in range(2)
    ]
    return config_id, runs


def _log(db: Any, run_id: int, config_id: int, message: str, age: str = "0 seconds") -> None:
    db.execute(
        "INSERT INTO plugin_runtime.logs (run_id, config_id, ts, level, message) "
        "VALUES (%s, %s, now() - %s::interval, 'info', %s)",
        (run_id, config_id, age, message),
    )


def test_logs_of_a_config_and_of_one_run(
    db: Any, cli_runner: CliRunner, test_plugins_dir: Path
) -> None:
    config_id, (r1, r2) = _config_with_runs(db, test_plugins_dir)
    for i in range(3):
        _log(db, r1, config_id, f"first run line {i}")
    _log(db, r2, config_id, "second run line")
    out = cli_runner.ok("logs", config_id).stdout.splitlines()
    assert [line.split("INFO")[-1].strip() for line in out] == [
        "first run line 0",
        "first run line 1",
        "first run line 2",
        "second run line",
    ]
    assert f"run {r1}" in out[0] and "run_every_minute" in out[0]
    assert len(cli_runner.ok("logs", config_id, "--run", r2).stdout.splitlines()) == 1
    assert cli_runner.ok("logs", config_id, "--limit", 1).stdout.strip().endswith("second run line")
    missing = cli_runner("logs", 999999)
    assert missing.returncode == 2 and missing.stderr.strip() == "error: no config with id 999999"
    wrong_run = cli_runner("logs", config_id, "--run", 999999)
    assert wrong_run.returncode == 2 and "has no run 999999" in wrong_run.stderr


def test_logs_follow_prints_new_lines_until_ctrl_c(
    db: Any, cli_runner: CliRunner, test_plugins_dir: Path
) -> None:
    config_id, (r1, _r2) = _config_with_runs(db, test_plugins_dir)
    _log(db, r1, config_id, "before")
    proc = cli_runner.start("logs", config_id, "--follow", "--interval", "0.2")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().rstrip().endswith("before")
        _log(db, r1, config_id, "after")
        assert proc.stdout.readline().rstrip().endswith("after")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_prune_deletes_old_rows_in_batches(
    db: Any, cli_runner: CliRunner, test_plugins_dir: Path
) -> None:
    config_id, _ = _config_with_runs(db, test_plugins_dir)
    db.execute(
        """
        INSERT INTO plugin_runtime.runs (config_id, task, slot, state, outcome, finished_at)
        SELECT %(c)s, 'run_every_minute', now(), 'done', 'ok', now() - interval '40 days'
          FROM generate_series(1, 7)""",
        {"c": config_id},
    )
    old_claimed = db.execute(
        "INSERT INTO plugin_runtime.runs (config_id, task, slot, state, node, finished_at) "
        "VALUES (%s, 't', now(), 'claimed', 'n', now() - interval '40 days') RETURNING id",
        (config_id,),
    ).fetchone()["id"]
    run_id = db.execute("SELECT max(id) AS id FROM plugin_runtime.runs").fetchone()["id"]
    for i in range(5):
        _log(db, run_id, config_id, f"old {i}", "10 days")
    _log(db, run_id, config_id, "recent", "1 day")
    result = cli_runner.ok("prune", "--runs-days", "30", "--logs-days", "7", "--batch", "3")
    assert "deleted 7 run(s)" in result.stdout and "5 log line(s)" in result.stdout
    # 7 runs in batches of 3: 3 statements; 5 lines: 2 statements.
    assert "in 5 statement(s)" in result.stdout
    left = {r["id"] for r in db.execute("SELECT id FROM plugin_runtime.runs")}
    assert old_claimed in left and len(left) == 3  # in-flight run kept, 2 recent ones kept
    assert [r["message"] for r in db.execute("SELECT message FROM plugin_runtime.logs")] == [
        "recent"
    ]
    again = prune(db, 30, 7, batch=3)
    assert (again["runs"], again["logs"], again["statements"]) == (0, 0, 2)
    bad = cli_runner("prune", "--runs-days", "-1")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_status_json_is_stable_while_the_database_has_no_schema(
    empty_database_url: str, tmp_path: Path
) -> None:
    from conftest import CliRunner

    result = CliRunner(database_url=empty_database_url, cwd=tmp_path)("status", "--json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["database"]["schema"] is False
    assert data["problems"][0]["command"] == "plugin-runtime db migrate"
