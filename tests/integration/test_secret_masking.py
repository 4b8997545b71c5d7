"""`serve` masks a config's secret values in what its runs printed, raised and returned before
recording them: neither the database nor any command shows a secret a plugin leaked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.testing.fleet import Fleet

if TYPE_CHECKING:
    from conftest import CliRunner

SECRET = "sk-live-4242-secret"

MAIN = """
def run_every_minute(meta):
    meta.logger.info("calling with token=" + meta.config["token"])
    print("again", meta.config["token"])
    return {"echo": meta.config["token"], "region": meta.config["region"], meta.config["token"]: 1}


def explode(meta):
    raise ValueError("bad token " + meta.config["token"])
"""


def test_serve_never_records_a_secret_a_plugin_printed(
    database_url: str, tmp_path: Path, cli_runner: CliRunner
) -> None:
    plugin = tmp_path / "leaky"
    plugin.mkdir()
    (plugin / "plugin.json").write_text(
        json.dumps(
            {
                "name": "leaky",
                "version": "1",
                "schedules": {"explode": "* * * * *"},
                "config_schema": {"token": {"secret": True}, "region": {}},
            }
        )
    )
    (plugin / "main.py").write_text(MAIN)
    with Fleet(database_url, tmp_path / "fleet", time_scale=60, concurrency=4) as fleet:
        fleet.install(plugin)
        (config_id,) = fleet.create_configs("leaky", 1, {"token": SECRET, "region": "eu-1"})
        fleet.start_nodes(1)
        fleet.wait_for(
            lambda: (
                {r["task"] for r in fleet.runs("outcome IS NOT NULL")}
                >= {"run_every_minute", "explode"}
            ),
            60,
            "both tasks to run",
        )
        runs = fleet.runs("outcome IS NOT NULL")
        logs = fleet.query("SELECT message FROM plugin_runtime.logs")
        node_log = fleet.nodes[0].log_text()
    assert "bad token ***" in node_log and SECRET not in node_log  # serve's own log lines
    recorded = json.dumps([{k: str(v) for k, v in r.items()} for r in runs]) + json.dumps(logs)
    assert SECRET not in recorded
    ok = next(r for r in runs if r["task"] == "run_every_minute" and r["outcome"] == "ok")
    # Values and keys of the plugin's data are masked; the record's own keys are not.
    assert ok["result"] == {"echo": "***", "region": "eu-1", "***": 1}
    failed = next(r for r in runs if r["task"] == "explode")
    assert failed["error"]["message"].endswith("bad token ***")
    messages = [row["message"] for row in logs]
    assert "calling with token=***" in messages and "again ***" in messages

    shown = cli_runner.ok("logs", config_id).stdout + cli_runner.ok("runs", "--json").stdout
    assert SECRET not in shown and "token=***" in shown
