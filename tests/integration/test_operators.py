"""Operators see why a run failed on every surface: `serve`'s log line (text and JSON), the
`runs` table, `runs show`, `logs`, `status` and `doctor`. Real `serve` processes (fast clock)
against real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.testing.fleet import Fleet

if TYPE_CHECKING:
    from conftest import CliRunner

ERROR = "ValueError: upstream said 503"


def _failing_fleet(database_url: str, tmp_path: Path, plugins: Path, runs: int) -> Fleet:
    fleet = Fleet(database_url, tmp_path / "fleet", time_scale=60, tick_interval=10, concurrency=4)
    fleet.install(plugins / "always_fails")
    fleet.create_configs("always_fails", 1)
    fleet.start_nodes(1)
    fleet.wait_for(
        lambda: len(fleet.runs("outcome = 'error'")) >= runs, 60, f"{runs} failed run(s)"
    )
    return fleet


def test_a_failed_run_says_why_everywhere(
    database_url: str, cli_runner: CliRunner, test_plugins_dir: Path, tmp_path: Path
) -> None:
    with _failing_fleet(database_url, tmp_path, test_plugins_dir, 2) as fleet:
        fleet.nodes[0].terminate()
        [node_log] = [n.log_text() for n in fleet.nodes]
    failed = fleet.runs("outcome = 'error'")
    first = failed[0]["id"]
    config = failed[0]["config_id"]

    # serve's JSON line carries the error type and the first line of the message.
    lines = [json.loads(line) for line in node_log.splitlines() if line.startswith("{")]
    run_lines = [line for line in lines if line.get("run_id") == first]
    assert run_lines and run_lines[0]["error"] == ERROR, run_lines
    assert "error in" in run_lines[0]["message"] and ERROR in run_lines[0]["message"]
    assert f"runs show {first}" in run_lines[0]["message"]
    assert "second line" not in run_lines[0]["message"]

    # `runs`: an error column.
    table = cli_runner.ok("runs", "--config", config)
    assert ERROR in table.stdout and "error" in table.stdout.splitlines()[2]
    assert "runs show" in table.stderr

    # `runs show ID`: everything about one run.
    shown = cli_runner.ok("runs", "show", first)
    for expected in (
        f"run         {first} (scheduled, attempt 1)",
        f"config      {config} (plugin always_fails 1.0.0)",
        "task        run_every_minute (minute, * * * * *)",
        "outcome     error",
        ERROR,
        "traceback",
        'raise ValueError("upstream said 503',
        "fetching page 1",
        "timings",
        "ms in the sandbox",
    ):
        assert expected in shown.stdout, (expected, shown.stdout)
    as_json = json.loads(cli_runner.ok("runs", "show", first, "--json").stdout)
    assert as_json["error"]["type"] == "ValueError"
    assert as_json["error"]["traceback"] and as_json["logs"][0]["message"] == "fetching page 1"
    assert as_json["node"] == "node-1" and as_json["slot"].endswith("Z")
    missing = cli_runner("runs", "show", "999999")
    assert missing.returncode == 2 and "no run with id 999999" in missing.stderr

    # `logs`: each failed run's lines end with its error.
    logs = cli_runner.ok("logs", config).stdout.splitlines()
    mine = [line for line in logs if f"run {first} " in line]
    assert "fetching page 1" in mine[0]
    assert ERROR in mine[-1] and f"runs show {first}" in mine[-1], logs

    # status and doctor name the config from its first failure, with the commands to look/act.
    status = json.loads(cli_runner("status", "--json").stdout)
    [problem] = [p for p in status["problems"] if p["check"] == "configs"]
    assert problem["severity"] == "warning" or len(failed) >= 3
    assert problem["look"] == f"plugin-runtime runs show {failed[-1]['id']}"
    assert problem["command"] == f"plugin-runtime configs disable {config}"
    assert ERROR in problem["what"]
    doctor = cli_runner("doctor")
    assert doctor.returncode == 1, doctor.stdout
    assert "all checks OK" not in doctor.stdout
    assert f"look: plugin-runtime runs show {failed[-1]['id']}" in doctor.stdout
    assert f"run: plugin-runtime configs disable {config}" in doctor.stdout


def test_text_log_line_names_the_error(
    database_url: str, test_plugins_dir: Path, tmp_path: Path
) -> None:
    fleet = Fleet(
        database_url,
        tmp_path / "fleet",
        time_scale=60,
        tick_interval=10,
        concurrency=4,
        extra_args=("--log-format", "text"),
    )
    with fleet:
        fleet.install(test_plugins_dir / "always_fails")
        fleet.create_configs("always_fails", 1)
        fleet.start_nodes(1)
        fleet.wait_for(lambda: fleet.runs("outcome = 'error'"), 60, "a failed run")
        fleet.nodes[0].terminate()
        text = fleet.nodes[0].log_text()
    [run] = fleet.runs("outcome = 'error'")[:1]
    line = next(x for x in text.splitlines() if f"run {run['id']} config" in x)
    assert "WARNING" in line and ": error in " in line and ERROR in line, line


def _problems(status: dict[str, Any], check: str) -> list[dict[str, Any]]:
    return [p for p in status["problems"] if p["check"] == check]


def test_quarantine_and_release_are_logged_by_the_node(
    database_url: str, cli_runner: CliRunner, test_plugins_dir: Path, tmp_path: Path
) -> None:
    fleet = Fleet(
        database_url,
        tmp_path / "fleet",
        time_scale=60,
        tick_interval=10,
        concurrency=4,
        extra_args=("--quarantine-after", "2"),
    )
    with fleet:
        fleet.install(test_plugins_dir / "always_fails")
        [config] = fleet.create_configs("always_fails", 1)
        [node] = fleet.start_nodes(1)

        def said(text: str) -> bool:
            return text in node.log_text()

        quarantined = f"config {config} quarantined: 2 runs in a row failed (last: error)"
        fleet.wait_for(lambda: said(quarantined), 60, "the quarantine logged")
        assert said(f"release once fixed: plugin-runtime configs enable {config}")
        # Released by SQL, as the runbook shows: the node says so.
        fleet.query(
            "UPDATE plugin_runtime.plugin_configs SET quarantined_at = NULL, "
            "quarantine_reason = NULL, consecutive_failures = 0 WHERE id = %s",
            (config,),
        )
        released = f"config {config} released from quarantine (enabled)"
        fleet.wait_for(lambda: said(released), 30, "the SQL release logged")
        # It fails twice more: quarantined again, then released by the CLI.
        fleet.wait_for(lambda: node.log_text().count(quarantined) >= 2, 60, "the second quarantine")
        cli_runner.ok("configs", "enable", config)
        fleet.wait_for(lambda: node.log_text().count(released) >= 2, 30, "the CLI release")


def test_a_fast_clock_from_march_keeps_its_history_and_its_status(
    database_url: str, cli_runner: CliRunner, test_plugins_dir: Path, tmp_path: Path
) -> None:
    """Under `serve --testing` runs carry scheduler time; retention and every status window
    follow that clock, not the wall clock or the database's."""
    from datetime import UTC, datetime

    fleet = Fleet(
        database_url,
        tmp_path / "fleet",
        time_scale=60,
        tick_interval=10,
        concurrency=4,
        start_time=datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
    )
    with fleet:
        fleet.install(test_plugins_dir / "tiny")
        fleet.create_configs("tiny", 2, {"api_key": "k"})
        fleet.start_nodes(1)
        fleet.wait_for(
            lambda: len(fleet.runs("outcome = 'ok' AND task = 'run_every_minute'")) >= 6,
            60,
            "minute runs",
        )
        status = json.loads(cli_runner("status", "--json").stdout)
        assert status["clock"]["source"] == "node node-1" and status["clock"]["scale"] == 60
        assert status["clock"]["now"].startswith("2026-03-01T")
        minute = next(c for c in status["cadences"] if c["cadence"] == "minute")
        assert minute["runs"] >= 6 and minute["lag_p99_s"] is not None
        assert minute["overdue"] == 0 and minute["runs_per_min"] > 0
        assert status["nodes"][0]["runs_per_min"] > 0
        assert {w["plugin"] for w in status["worst_configs"]} == {"tiny"}
        before = len(fleet.runs())
        pruned = cli_runner.ok("prune", "--runs-days", "1", "--logs-days", "1")
        assert pruned.stdout.startswith("deleted 0 run(s)"), pruned.stdout
        assert len(fleet.runs()) >= before
    # Measured against the wall clock, the same history would all be older than a day.
    with fleet.conn() as conn:
        from runtime.retention import prune

        assert prune(conn, runs_days=1, logs_days=1, now=datetime.now(UTC))["runs"] >= before
