"""A task whose schedule cannot be computed (February 31st, written by SQL past the install
check) is that task's failure: recorded as an error run of its config with the reason, logged
with the task and config, shown by `doctor` — and every other config of the node runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from runtime.testing.fleet import Fleet

if TYPE_CHECKING:
    from conftest import CliRunner

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def test_an_impossible_schedule_fails_alone_and_shows_in_doctor(
    database_url: str, cli_runner: CliRunner, tmp_path: Path
) -> None:
    fleet = Fleet(database_url, tmp_path / "fleet", time_scale=60, tick_interval=5, concurrency=4)
    with fleet:
        fleet.install(PLUGINS / "tiny")
        bad, good = fleet.create_configs("tiny", 2, {"api_key": "k"})
        # As an older install, or an UPDATE typed in psql, could have left it.
        fleet.query(
            "UPDATE plugin_runtime.tasks SET cadence = 'cron', cron = '0 0 31 2 *', "
            "next_slot = NULL WHERE config_id = %s",
            (bad,),
        )
        (node,) = fleet.start_nodes(1)
        fleet.wait_for(
            lambda: (
                fleet.runs("config_id = %s AND outcome = 'ok'", (good,))
                and fleet.runs("config_id = %s AND outcome = 'error'", (bad,))
            ),
            60,
            "the good config to run and the bad one's failure to be recorded",
        )
        failures = fleet.runs("config_id = %s", (bad,))
        doctor = cli_runner("doctor")
        assert node.alive()
        log_text = node.log_text()

    assert {r["outcome"] for r in failures} == {"error"}
    # Looked at again only after an hour of scheduler time, not at every tick.
    assert len(failures) <= 2 * 2  # two tasks, at most one retry each in the test's hour
    message = failures[0]["error"]["message"]
    assert "could not be scheduled" in message and "0 0 31 2 *" in message
    assert f"config {bad} task run_every_" in log_text and "cannot be scheduled" in log_text
    assert "database unavailable" not in log_text
    assert f"config {bad}" in doctor.stdout, doctor.stdout
