"""Schedules in a time zone end to end (docs/plugins.md#time-zones): a real `serve` node on a
real PostgreSQL, its scheduler clock run fast over a daylight-saving night in Berlin, and the
exact slots every task ran; the same night caught up after downtime; the commands that set a
zone, and a bad zone written by SQL failing only its config's daily and cron tasks."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from runtime import store
from runtime.testing.fleet import Fleet

if TYPE_CHECKING:
    from conftest import CliRunner

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def hours(first: datetime, count: int) -> list[datetime]:
    return [first + timedelta(hours=h) for h in range(count)]


# Europe/Berlin, 2026: clocks go forward on March 29 at 01:00 UTC (02:00 CET -> 03:00 CEST) and
# back on October 25 at 01:00 UTC (03:00 CEST -> 02:00 CET). Each night's slots from 21:30 UTC
# to 04:00 UTC are checked (the node starts earlier: a task's first slot is the first after it is
# seen); dst_night declares Europe/Berlin, a second config overrides it with UTC.
NIGHTS: dict[str, dict[str, Any]] = {
    "spring_forward": {
        "start": utc(2026, 3, 28, 21, 30),
        "berlin": {
            "run_every_day": [utc(2026, 3, 28, 23)],  # local midnight (CET)
            "half_past_two": [utc(2026, 3, 29, 1)],  # 02:30 was skipped: at the transition
            "on_the_hour": hours(utc(2026, 3, 28, 22), 6),  # every real hour
            "run_every_hour": hours(utc(2026, 3, 28, 22), 6),
        },
    },
    "fall_back": {
        "start": utc(2026, 10, 24, 21, 30),
        "berlin": {
            "run_every_day": [utc(2026, 10, 24, 22)],  # local midnight (CEST)
            "half_past_two": [utc(2026, 10, 25, 0, 30)],  # 02:30 happened twice: the first
            "on_the_hour": hours(utc(2026, 10, 24, 22), 6),  # local 02:00 twice, real hours once
            "run_every_hour": hours(utc(2026, 10, 24, 22), 6),
        },
    },
}
END = timedelta(hours=6, minutes=30)  # 21:30 -> 04:00 UTC
EARLY = timedelta(hours=2)  # the fast clock starts at 19:30 UTC


def _utc_config(start: datetime) -> dict[str, list[datetime]]:
    day = start.replace(hour=0, minute=0) + timedelta(days=1)
    return {
        "run_every_day": [day],
        "half_past_two": [day + timedelta(hours=2, minutes=30)],
        "on_the_hour": hours(start.replace(minute=0) + timedelta(hours=1), 6),
        "run_every_hour": hours(start.replace(minute=0) + timedelta(hours=1), 6),
    }


def _slots(
    fleet: Fleet, config_id: int, since: datetime, before: datetime
) -> dict[str, list[datetime]]:
    rows = fleet.runs(
        "config_id = %s AND outcome = 'ok' AND NOT manual AND slot >= %s AND slot < %s",
        (config_id, since, before),
    )
    out: dict[str, list[datetime]] = {}
    for row in sorted(rows, key=lambda r: (r["task"], r["slot"])):
        out.setdefault(row["task"], []).append(row["slot"])
    return out


def _no_duplicates(fleet: Fleet) -> None:
    assert (
        fleet.query(
            "SELECT task_id, slot FROM plugin_runtime.runs WHERE outcome = 'ok' AND NOT manual "
            "GROUP BY task_id, slot HAVING count(*) > 1"
        )
        == []
    )


def _setup(fleet: Fleet) -> tuple[int, int]:
    fleet.install(PLUGINS / "dst_night")
    with fleet.conn() as conn:
        berlin = store.create_config(conn, "dst_night", {})  # the plugin's declared zone
        in_utc = store.create_config(conn, "dst_night", {}, time_zone="UTC")
    zones = {
        (r["config_id"], r["name"]): r["time_zone"]
        for r in fleet.query("SELECT config_id, name, time_zone FROM plugin_runtime.tasks")
    }
    assert zones[(berlin, "half_past_two")] == "Europe/Berlin"
    assert zones[(berlin, "run_every_day")] == "Europe/Berlin"
    assert zones[(berlin, "run_every_hour")] is None  # hourly: every real hour, no zone
    assert zones[(in_utc, "half_past_two")] == "UTC"
    return berlin, in_utc


def _wait_for_all(
    fleet: Fleet, config_ids: tuple[int, ...], expected: int, start: datetime, end: datetime
) -> None:
    def done() -> bool:
        rows = fleet.query(
            "SELECT count(*) AS n FROM plugin_runtime.runs WHERE outcome = 'ok' AND NOT manual "
            "AND config_id = ANY(%s) AND slot >= %s AND slot < %s",
            (list(config_ids), start, end),
        )
        now = fleet.scheduler_now()
        return rows[0]["n"] >= expected and now is not None and now > end + timedelta(minutes=30)

    fleet.wait_for(done, 120, "every slot of the night to run")


@pytest.mark.parametrize("night", sorted(NIGHTS))
def test_a_daylight_saving_night_in_berlin_runs_each_slot_once(
    database_url: str, tmp_path: Path, night: str
) -> None:
    case = NIGHTS[night]
    start: datetime = case["start"]
    end = start + END
    # 900x: a scheduler hour in 4 real seconds; runs start within their spread (<= 5 min).
    fleet = Fleet(
        database_url, tmp_path / "fleet", time_scale=900, start_time=start - EARLY, tick_interval=10
    )
    with fleet:
        berlin, in_utc = _setup(fleet)
        fleet.start_nodes(1)
        expected_berlin: dict[str, list[datetime]] = case["berlin"]
        expected_utc = _utc_config(start)
        total = sum(map(len, expected_berlin.values())) + sum(map(len, expected_utc.values()))
        _wait_for_all(fleet, (berlin, in_utc), total, start, end)
    assert _slots(fleet, berlin, start, end) == expected_berlin
    assert _slots(fleet, in_utc, start, end) == expected_utc
    assert fleet.runs("outcome NOT IN ('ok')") == []
    _no_duplicates(fleet)


def test_catch_up_after_downtime_across_the_fall_back_night(
    database_url: str, tmp_path: Path
) -> None:
    """Down from before midnight until after the night: on its return the node runs every owed
    slot of the night once, oldest first (02:30 once, every real hour once)."""
    case = NIGHTS["fall_back"]
    start: datetime = case["start"]
    end = start + END
    fleet = Fleet(
        database_url, tmp_path / "fleet", start_time=start + timedelta(minutes=10), tick_interval=2
    )
    berlin, _ = _setup(fleet)
    node = fleet.add_node("before")
    fleet.wait_for(
        lambda: not fleet.query("SELECT id FROM plugin_runtime.tasks WHERE next_slot IS NULL"),
        30,
        "tasks to be initialised",
    )
    node.terminate()
    fleet.nodes.remove(node)
    fleet.start_time = end  # back at 04:00 UTC
    with fleet:
        fleet.start_nodes(1)
        expected: dict[str, list[datetime]] = case["berlin"]
        fleet.wait_for(
            lambda: _slots(fleet, berlin, start, end) == expected,
            90,
            "the night's slots to be caught up",
        )
    runs = fleet.runs("config_id = %s AND outcome = 'ok' AND task = 'on_the_hour'", (berlin,))
    assert [r["slot"] for r in runs] == expected["on_the_hour"], "oldest first"
    assert all(r["backfilled"] for r in runs[:-1])
    assert fleet.runs("outcome = 'missed'") == []
    _no_duplicates(fleet)


@pytest.mark.parametrize("heard", ["notified", "reconciled"])
def test_a_bad_zone_written_by_sql_fails_only_that_configs_zoned_tasks(
    database_url: str, tmp_path: Path, heard: str
) -> None:
    """Heard by LISTEN/NOTIFY, or (a node that does not listen, as behind PgBouncer without a
    direct connection) at the periodic reconcile."""
    fleet = Fleet(
        database_url,
        tmp_path / "fleet",
        time_scale=600,
        start_time=utc(2026, 6, 1, 21, 50),
        extra_args=["--no-listen"] if heard == "reconciled" else [],
    )
    with fleet:
        bad, good = _setup(fleet)
        (node,) = fleet.start_nodes(1)
        fleet.wait_ready()
        # As a hand edit in psql would: past every check; the nodes hear of it and sync.
        fleet.query(
            "UPDATE plugin_runtime.plugin_configs SET time_zone = 'Mars/Base' WHERE id = %s",
            (bad,),
        )
        fleet.wait_for(
            lambda: (
                fleet.runs("config_id = %s AND outcome = 'error'", (bad,))
                and fleet.runs(
                    "config_id = %s AND outcome = 'ok' AND task = 'run_every_hour'", (bad,)
                )
                and fleet.runs(
                    "config_id = %s AND outcome = 'ok' AND task = 'on_the_hour'", (good,)
                )
            ),
            60,
            "the bad zone's failures, and the other tasks' runs",
        )
        failures = fleet.runs("config_id = %s AND outcome = 'error'", (bad,))
        assert node.alive()
        log_text = node.log_text()
    assert {r["task"] for r in failures} <= {"run_every_day", "half_past_two", "on_the_hour"}
    message = failures[0]["error"]["message"]
    assert "could not be scheduled" in message and "'Mars/Base' is not an IANA time zone" in message
    assert f"config {bad} task" in log_text and "Mars/Base" in log_text


def test_the_commands_set_show_and_refuse_time_zones(
    cli_runner: CliRunner, test_plugins_dir: Path, tmp_path: Path, db: Any
) -> None:
    cli_runner.ok("plugins", "install", test_plugins_dir / "dst_night")
    made = cli_runner.ok("configs", "create", "dst_night", "--time-zone", "America/New_York")
    config_id = int(made.stdout.strip().splitlines()[-1])
    assert "time zone America/New_York" in made.stderr
    listed = json.loads(cli_runner.ok("configs", "list", "--json").stdout)
    assert listed[0]["time_zone"] == "America/New_York"
    assert listed[0]["plugin_time_zone"] == "Europe/Berlin"
    assert "America/New_York" in cli_runner.ok("configs", "list").stdout

    def zone_of(task: str) -> Any:
        row = db.execute(
            "SELECT time_zone FROM plugin_runtime.tasks WHERE config_id = %s AND name = %s",
            (config_id, task),
        ).fetchone()
        return row["time_zone"]

    assert zone_of("half_past_two") == "America/New_York"
    cli_runner.ok("configs", "set", str(config_id), "--time-zone", "Asia/Kolkata")
    assert zone_of("half_past_two") == "Asia/Kolkata" and zone_of("run_every_hour") is None
    cli_runner.ok("configs", "set", str(config_id), "--time-zone", "")  # back to the plugin's
    assert zone_of("half_past_two") == "Europe/Berlin"
    assert "Europe/Berlin" in cli_runner.ok("configs", "list").stdout

    for args in (
        ["configs", "create", "dst_night", "--time-zone", "Europe/Berln"],
        ["configs", "set", str(config_id), "--time-zone", "Europe/Berln"],
    ):
        refused = cli_runner(*args)
        assert refused.returncode == 2, refused.stderr
        line = refused.stderr.strip()
        assert "'Europe/Berln' is not an IANA time zone name" in line and "Traceback" not in line
    assert zone_of("half_past_two") == "Europe/Berlin"  # nothing changed
    assert len(json.loads(cli_runner.ok("configs", "list", "--json").stdout)) == 1

    bad = tmp_path / "bad_zone"
    shutil.copytree(test_plugins_dir / "dst_night", bad)
    manifest = json.loads((bad / "plugin.json").read_text())
    (bad / "plugin.json").write_text(json.dumps({**manifest, "time_zone": "Berlin"}))
    result = cli_runner("plugins", "install", bad, "--upgrade")
    assert result.returncode == 2
    assert "field 'time_zone': 'Berlin' is not an IANA time zone name" in result.stderr
