"""The supervisor end to end: real `serve` processes, a real PostgreSQL, real sandboxed runs.

Most tests run the scheduler clock faster than real time (`serve --testing --time-scale N`), so
that minutes and hours of slots pass in seconds; sandbox limits stay in real seconds.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runtime.db import connect
from runtime.migrate import migrate
from runtime.testing.fleet import Fleet
from runtime.testing.pgbouncer import PgBouncer
from runtime.testing.postgres import PrivateServer

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
T0 = datetime(2026, 3, 2, 5, 30, tzinfo=UTC)


def make_fleet(database_url: str, tmp_path: Path, **kwargs: Any) -> Fleet:
    return Fleet(database_url, tmp_path / "fleet", **kwargs)


@pytest.fixture(params=["direct", "via_pgbouncer"])
def nodes_url(request: pytest.FixtureRequest, database_url: str) -> str | None:
    """The URL the fleet's nodes connect with: None (the database directly), or the same
    database through PgBouncer in transaction pooling mode (LISTEN then falls back by itself)."""
    if request.param == "direct":
        return None
    bouncer: PgBouncer = request.getfixturevalue("pgbouncer")
    return bouncer.url_for(database_url)


def ok_runs(fleet: Fleet, where: str = "TRUE", params: Any = None) -> list[dict[str, Any]]:
    return fleet.runs(f"outcome = 'ok' AND NOT manual AND {where}", params)


def assert_no_duplicate_slots(fleet: Fleet) -> None:
    dupes = fleet.query(
        "SELECT task_id, slot, count(*) AS n FROM plugin_runtime.runs "
        "WHERE outcome = 'ok' AND NOT manual GROUP BY task_id, slot HAVING count(*) > 1"
    )
    assert dupes == []


def test_minute_tasks_coalesce_and_never_overlap(database_url: str, tmp_path: Path) -> None:
    # Each run takes 1.5 real s = 90 scheduler s: without coalescing, runs would pile up.
    fleet = make_fleet(database_url, tmp_path, time_scale=60, tick_interval=5)
    with fleet:
        fleet.install(PLUGINS / "slow_minute")
        fleet.create_configs("slow_minute", 3, {"sleep_s": 1.5})
        fleet.start_nodes(1)
        fleet.wait_for(lambda: len(ok_runs(fleet)) >= 9, 40, "nine minute runs")
    runs = ok_runs(fleet)
    by_task: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_task[run["task_id"]].append(run)
    for task_runs in by_task.values():
        task_runs.sort(key=lambda r: r["started_at"])
        for before, after in zip(task_runs, task_runs[1:], strict=False):
            assert after["started_at"] >= before["finished_at"], (
                "two runs of one minute task overlapped"
            )
    coalesced = fleet.query("SELECT sum(coalesced) AS n FROM plugin_runtime.tasks")[0]["n"]
    assert coalesced > 0, "skipped minute slots are counted as coalesced"
    assert_no_duplicate_slots(fleet)


def _initialise(fleet: Fleet) -> None:
    """Run a node until every task has its pointer, then stop it (the 'before downtime' state)."""
    node = fleet.add_node("before")
    fleet.wait_for(
        lambda: (
            fleet.query("SELECT count(*) AS n FROM plugin_runtime.tasks WHERE next_slot IS NULL")[
                0
            ]["n"]
            == 0
        ),
        30,
        "tasks to be initialised",
    )
    node.terminate()
    fleet.nodes.remove(node)


def test_hourly_backfill_after_downtime_oldest_first_exactly_once(
    database_url: str, tmp_path: Path, nodes_url: str | None
) -> None:
    fleet = make_fleet(
        database_url, tmp_path, node_database_url=nodes_url, start_time=T0, tick_interval=2
    )
    fleet.install(PLUGINS / "flaky_hourly")
    (config_id,) = fleet.create_configs("flaky_hourly", 1, {"succeed_on_attempt": 1})
    _initialise(fleet)
    assert fleet.query("SELECT next_slot FROM plugin_runtime.tasks")[0]["next_slot"] == T0.replace(
        minute=0
    ) + timedelta(hours=1)
    # Five hours of downtime: slots 06:00 .. 10:00 are owed when the fleet comes back at 10:30.
    fleet.start_time = T0 + timedelta(hours=5)
    with fleet:
        fleet.start_nodes(1)
        fleet.wait_for(lambda: len(ok_runs(fleet)) >= 5, 60, "five backfilled hourly runs")
        time.sleep(1.0)
    runs = ok_runs(fleet)
    slots = [r["slot"] for r in runs]
    expected = [T0.replace(minute=0) + timedelta(hours=h) for h in range(1, 6)]
    assert slots == expected, "every owed slot once, oldest first"
    assert [r["backfilled"] for r in runs] == [True, True, True, True, False]
    assert [r["result"]["backfilled"] for r in runs] == [True, True, True, True, False]
    assert all(r["config_id"] == config_id for r in runs)
    assert_no_duplicate_slots(fleet)


def test_failed_hourly_runs_are_retried_with_backoff(database_url: str, tmp_path: Path) -> None:
    # 600x: an hour passes in 6 real seconds; retries back off 10 s, 20 s of scheduler time.
    fleet = make_fleet(database_url, tmp_path, time_scale=600, start_time=T0, tick_interval=10)
    with fleet:
        fleet.install(PLUGINS / "flaky_hourly")
        fleet.create_configs("flaky_hourly", 1, {"succeed_on_attempt": 3})
        fleet.start_nodes(1)
        fleet.wait_for(lambda: ok_runs(fleet), 40, "a successful retry")
    first_slot = ok_runs(fleet)[0]["slot"]
    attempts = fleet.runs("slot = %s", (first_slot,))
    assert [(r["attempt"], r["outcome"]) for r in attempts] == [
        (1, "error"),
        (2, "error"),
        (3, "ok"),
    ]
    assert attempts[0]["error"]["message"] == "attempt 1 fails on purpose"
    gap_1 = (attempts[1]["started_at"] - attempts[0]["finished_at"]).total_seconds()
    gap_2 = (attempts[2]["started_at"] - attempts[1]["finished_at"]).total_seconds()
    assert gap_1 >= 10 and gap_2 >= 20, "exponential backoff between attempts"


def test_slots_beyond_the_window_are_recorded_missed(database_url: str, tmp_path: Path) -> None:
    fleet = make_fleet(
        database_url,
        tmp_path,
        start_time=T0,
        tick_interval=2,
        extra_args=["--hourly-window-h", "6"],
    )
    fleet.install(PLUGINS / "flaky_hourly")
    fleet.create_configs("flaky_hourly", 1, {"succeed_on_attempt": 1})
    _initialise(fleet)
    # Down for 20 hours: with a 6 h window, slots 06:00 .. 19:00 are missed, 20:00 .. 01:00 run.
    back_at = T0 + timedelta(hours=20)
    fleet.start_time = back_at
    with fleet:
        fleet.start_nodes(1)
        fleet.wait_for(lambda: len(ok_runs(fleet)) >= 6, 60, "the runs inside the window")
        time.sleep(1.0)
    missed = fleet.runs("outcome = 'missed'")
    window_start = back_at - timedelta(hours=6)
    assert len(missed) == 14
    assert all(r["slot"] < window_start for r in missed)
    assert fleet.query("SELECT missed FROM plugin_runtime.tasks")[0]["missed"] == 14
    ran = [r["slot"] for r in ok_runs(fleet)]
    assert ran == [T0.replace(minute=0) + timedelta(hours=h) for h in range(15, 21)]
    assert "older than the catch-up window" in fleet.nodes[0].log_text()


def test_three_nodes_split_the_work_without_duplicates(
    database_url: str, tmp_path: Path, nodes_url: str | None
) -> None:
    fleet = make_fleet(
        database_url,
        tmp_path,
        node_database_url=nodes_url,
        time_scale=60,
        tick_interval=5,
        concurrency=8,
    )
    with fleet:
        fleet.install(PLUGINS / "tiny")
        fleet.create_configs("tiny", 30, {"api_key": "k"})
        fleet.start_nodes(3)
        fleet.wait_for(lambda: len(ok_runs(fleet)) >= 240, 90, "240 runs across the fleet")
    runs = ok_runs(fleet)
    assert_no_duplicate_slots(fleet)
    nodes = Counter(r["node"] for r in runs)
    assert len(nodes) >= 2, f"work is split between nodes: {nodes}"
    # Minute slots of one task are each run at most once, and the counter in storage agrees.
    counts = fleet.query(
        "SELECT s.config_id, s.value::int AS count, "
        "(SELECT count(*) FROM plugin_runtime.runs r WHERE r.config_id = s.config_id "
        " AND r.task = 'run_every_minute' AND r.outcome = 'ok') AS runs "
        "FROM plugin_runtime.storage s WHERE s.key = 'count'"
    )
    assert counts and all(row["count"] == row["runs"] for row in counts)


def test_runs_of_a_killed_node_complete_elsewhere(
    database_url: str, tmp_path: Path, nodes_url: str | None
) -> None:
    fleet = make_fleet(
        database_url,
        tmp_path,
        node_database_url=nodes_url,
        time_scale=600,
        start_time=T0,
        tick_interval=10,
        extra_args=["--dead-after", "3"],
    )
    with fleet:
        fleet.install(PLUGINS / "slow_hourly")
        fleet.create_configs("slow_hourly", 4, {"sleep_s": 4})
        victim = fleet.add_node("victim")
        fleet.wait_for(
            lambda: fleet.runs("node = 'victim' AND state = 'claimed'"),
            30,
            "the victim to hold runs",
        )
        held = fleet.runs("node = 'victim' AND state = 'claimed'")
        killed_at = time.monotonic()
        victim.kill()
        fleet.add_node("survivor")
        held_slots = {(r["task_id"], r["slot"]) for r in held}

        def recovered() -> bool:
            done = {(r["task_id"], r["slot"]) for r in ok_runs(fleet, "node = 'survivor'")}
            return held_slots <= done

        fleet.wait_for(recovered, 40, "the survivor to rerun the victim's slots")
        recovery_s = time.monotonic() - killed_at
    lost = fleet.runs("outcome = 'lost'")
    assert {r["id"] for r in lost} == {r["id"] for r in held}
    assert recovery_s < 30, "released within a bounded time (dead-after 3 s + sweep + run)"
    assert_no_duplicate_slots(fleet)


def test_direct_sql_disable_stops_the_config_on_every_node_within_5s(
    database_url: str, tmp_path: Path, nodes_url: str | None
) -> None:
    fleet = make_fleet(
        database_url, tmp_path, node_database_url=nodes_url, time_scale=30, tick_interval=10
    )
    with fleet:
        fleet.install(PLUGINS / "tiny")
        ids = fleet.create_configs("tiny", 6, {"api_key": "k"})
        fleet.start_nodes(2)
        target = ids[0]
        fleet.wait_for(
            lambda: len(fleet.runs("config_id = %s AND outcome = 'ok'", (target,))) >= 2,
            30,
            "the target config to run",
        )
        fleet.query(
            "UPDATE plugin_runtime.plugin_configs SET enabled = false WHERE id = %s", (target,)
        )
        time.sleep(5.0)
        started_by_5s = len(
            fleet.runs("config_id = %s AND outcome IS DISTINCT FROM 'cancelled'", (target,))
        )
        others_by_5s = len(ok_runs(fleet, "config_id <> %s", (target,)))
        time.sleep(6.0)  # 3 scheduler minutes more
        started_later = len(
            fleet.runs("config_id = %s AND outcome IS DISTINCT FROM 'cancelled'", (target,))
        )
        others_later = len(ok_runs(fleet, "config_id <> %s", (target,)))
        still_claimed = fleet.runs("config_id = %s AND state = 'claimed'", (target,))
    assert started_later == started_by_5s, "no run of the disabled config after 5 s"
    assert still_claimed == []
    assert others_later > others_by_5s, "the other configs go on"


def test_hanging_plugins_do_not_delay_healthy_ones(database_url: str, tmp_path: Path) -> None:
    # 10 % of configs hang until their 2 s timeout; the healthy ones must still start on time.
    scale = 10.0
    fleet = make_fleet(database_url, tmp_path, time_scale=scale, tick_interval=10, concurrency=16)
    with fleet:
        fleet.install(PLUGINS / "tiny")
        fleet.install(PLUGINS / "hang_minute")
        healthy = fleet.create_configs("tiny", 18, {"api_key": "k"})
        fleet.create_configs("hang_minute", 2)
        fleet.start_nodes(1)
        fleet.wait_for(
            lambda: len(fleet.runs("outcome = 'timeout'")) >= 4, 60, "hanging runs to time out"
        )
        fleet.wait_for(
            lambda: len(ok_runs(fleet, "task = 'run_every_minute'")) >= 54, 60, "healthy runs"
        )
    lags = [
        float(row["lag"]) / scale
        for row in fleet.query(
            "SELECT extract(epoch FROM r.started_at - (r.slot + make_interval(secs => t.offset_s))) AS lag "
            "FROM plugin_runtime.runs r JOIN plugin_runtime.tasks t ON t.id = r.task_id "
            "WHERE r.outcome = 'ok' AND r.task = 'run_every_minute' AND r.config_id = ANY(%s)",
            (healthy,),
        )
    ]
    lags.sort()
    p99 = lags[int(len(lags) * 0.99) - 1]
    assert p99 < 2.0, f"healthy start lag p99 {p99:.2f} s (real) while plugins hang"
    timeouts = fleet.runs("outcome = 'timeout'")
    assert all(1.9 <= r["duration_ms"] / 1000 <= 4.0 for r in timeouts)


def test_storage_is_unchanged_after_a_failed_run(database_url: str, tmp_path: Path) -> None:
    fleet = make_fleet(database_url, tmp_path, time_scale=600, start_time=T0, tick_interval=10)
    with fleet:
        fleet.install(PLUGINS / "writer")
        (failing,) = fleet.create_configs("writer", 1, {"fail": True})
        (working,) = fleet.create_configs("writer", 1, {"fail": False})
        for config_id in (failing, working):
            fleet.query(
                "INSERT INTO plugin_runtime.storage (config_id, key, value) VALUES (%s, 'old', '1')",
                (config_id,),
            )
        fleet.start_nodes(1)
        fleet.wait_for(
            lambda: (
                fleet.runs("config_id = %s AND outcome = 'error'", (failing,))
                and ok_runs(fleet, "config_id = %s", (working,))
            ),
            40,
            "both configs to run",
        )
    storage = {
        (r["config_id"], r["key"]): r["value"]
        for r in fleet.query("SELECT config_id, key, value FROM plugin_runtime.storage")
    }
    assert storage[(failing, "old")] == 1 and (failing, "cursor") not in storage
    assert (working, "old") not in storage and storage[(working, "cursor")] >= 1


def test_database_cost_per_run_at_1000_configs(database_url: str, tmp_path: Path) -> None:
    # 1,000 minute configs on one node; the clock runs 6x so 3 scheduler minutes take 30 s.
    # The node counts every statement it sends (claims with heartbeats, records, completions,
    # sweeps, reconciles, plugin loads, registration).
    fleet = make_fleet(database_url, tmp_path, time_scale=6, tick_interval=10, concurrency=32)
    with fleet:
        fleet.install(PLUGINS / "tiny")
        with fleet.conn() as conn:
            plugin_id = conn.execute(
                "SELECT id FROM plugin_runtime.plugins WHERE name = 'tiny'"
            ).fetchone()["id"]
            conn.execute(
                "INSERT INTO plugin_runtime.plugin_configs (plugin_id, settings) "
                'SELECT %s, \'{"api_key": "k"}\' FROM generate_series(1, 1000)',
                (plugin_id,),
            )
        from runtime import store

        with fleet.conn() as conn:
            store.sync_tasks(conn)
            conn.execute("DELETE FROM plugin_runtime.tasks WHERE name <> 'run_every_minute'")
        fleet.start_nodes(1)
        fleet.wait_for(lambda: len(ok_runs(fleet)) >= 2500, 120, "2,500 runs")
        stats = fleet.query("SELECT stats FROM plugin_runtime.nodes")[0]["stats"]
        runs = len(fleet.runs("state = 'done'"))
    per_run = stats["statements"] / max(runs, 1)
    print(f"statements: {stats['statements']}, runs: {runs}, per run: {per_run:.4f}")
    assert per_run <= 0.05


def test_serve_survives_a_database_restart_and_catches_up(tmp_path: Path) -> None:
    # A PostgreSQL server of this test's own (in a temp directory of its own), so that stopping
    # it harms no other test, clone or user of the machine's server.
    with PrivateServer() as server:
        with connect(server.url) as conn:
            migrate(conn)
        fleet = make_fleet(server.url, tmp_path, time_scale=600, start_time=T0, tick_interval=10)
        with fleet:
            fleet.install(PLUGINS / "flaky_hourly")
            fleet.create_configs("flaky_hourly", 3, {"succeed_on_attempt": 1})
            node = fleet.start_nodes(1)[0]
            fleet.wait_for(lambda: len(ok_runs(fleet)) >= 3, 40, "first hourly runs")
            try:
                server.stop()
                time.sleep(4.0)  # 40 scheduler minutes: slots pass while the database is down
                assert node.alive(), "the supervisor does not crash when the database goes away"
            finally:
                server.start()
            before = len(ok_runs(fleet))
            fleet.wait_for(
                lambda: len(ok_runs(fleet)) >= before + 6, 60, "catch-up after the outage"
            )
            assert node.alive()
        assert "database unavailable" in node.log_text()
        assert_no_duplicate_slots(fleet)
        # No slot inside the window was skipped: per task, slots are consecutive hours.
        by_task: dict[int, list[datetime]] = defaultdict(list)
        for run in ok_runs(fleet):
            by_task[run["task_id"]].append(run["slot"])
        for slots in by_task.values():
            slots.sort()
            assert all(b - a == timedelta(hours=1) for a, b in zip(slots, slots[1:], strict=False))


def test_serve_keeps_retrying_when_the_database_is_down_at_start(tmp_path: Path) -> None:
    fleet_dir = tmp_path / "down"
    fleet_dir.mkdir()
    import subprocess
    import sys

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runtime",
            "serve",
            "--database-url",
            "postgresql://postgres@127.0.0.1:1/none",
            "--log-format",
            "json",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        time.sleep(4.0)
        assert proc.poll() is None, "serve keeps retrying instead of exiting"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "cannot reach PostgreSQL at 127.0.0.1:1" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--time-scale", "10"], "for testing only"),
        (["--capabilities", "nonsense"], "unknown capability"),
    ],
)
def test_serve_refuses_bad_options(args: list[str], message: str) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime",
            "serve",
            *args,
            "--database-url",
            "postgresql://postgres@127.0.0.1:1/none",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert message in proc.stderr


def test_sigterm_drains_running_runs_and_releases_held_ones(
    database_url: str, tmp_path: Path
) -> None:
    fleet = make_fleet(database_url, tmp_path, time_scale=600, start_time=T0, tick_interval=10)
    fleet.install(PLUGINS / "slow_hourly")
    fleet.create_configs("slow_hourly", 2, {"sleep_s": 3})
    node = fleet.add_node("draining")
    fleet.wait_for(
        lambda: fleet.runs("state = 'claimed' AND node = 'draining'"), 30, "a claimed run"
    )
    time.sleep(1.0)  # the run has started (it sleeps 3 s)
    in_flight = {r["id"] for r in fleet.runs("state = 'claimed'")}
    started = time.monotonic()
    assert node.terminate(timeout=30) == 0, node.log_text()[-2000:]
    assert time.monotonic() - started < 15
    after = {r["id"]: r for r in fleet.runs("id = ANY(%s)", (list(in_flight),))}
    assert all(r["state"] == "done" for r in after.values()), "nothing is left claimed"
    assert any(r["outcome"] == "ok" for r in after.values()), (
        "the running run finished and was recorded"
    )
    assert {r["outcome"] for r in after.values()} <= {"ok", "released"}
    assert fleet.query("SELECT stopped_at FROM plugin_runtime.nodes WHERE id = 'draining'")[0][
        "stopped_at"
    ]


@pytest.mark.parametrize(
    "route", ["direct", "via_pgbouncer_listen_url", "via_pgbouncer_reconcile_only"]
)
def test_configs_created_or_edited_by_sql_take_effect_within_seconds(
    database_url: str, tmp_path: Path, route: str, request: pytest.FixtureRequest
) -> None:
    """Directly, LISTEN hears the change; through PgBouncer, LISTEN takes the direct
    --listen-database-url, or (without one) the change waits for the periodic reconcile, here
    every 600 scheduler seconds = 1 real second."""
    nodes_url: str | None = None
    extra: list[str] = []
    if route != "direct":
        nodes_url = request.getfixturevalue("pgbouncer").url_for(database_url)
        if route == "via_pgbouncer_listen_url":
            extra = ["--listen-database-url", database_url]
        else:
            extra = ["--reconcile-interval", "600"]
    fleet = make_fleet(
        database_url,
        tmp_path,
        node_database_url=nodes_url,
        extra_args=extra,
        time_scale=600,
        start_time=T0,
        tick_interval=10,
    )
    with fleet:
        fleet.install(PLUGINS / "tiny")
        fleet.start_nodes(1)
        fleet.wait_ready()
        plugin_id = fleet.query("SELECT id FROM plugin_runtime.plugins")[0]["id"]
        created = time.monotonic()
        config_id = fleet.query(
            "INSERT INTO plugin_runtime.plugin_configs (plugin_id, settings) "
            'VALUES (%s, \'{"api_key": "k", "greeting": "hello"}\') RETURNING id',
            (plugin_id,),
        )[0]["id"]
        fleet.wait_for(
            lambda: (
                fleet.query(
                    "SELECT count(*) AS n FROM plugin_runtime.tasks WHERE config_id = %s AND next_slot IS NOT NULL",
                    (config_id,),
                )[0]["n"]
                == 2
            ),
            10,
            "the new config's tasks to be scheduled",
        )
        assert time.monotonic() - created < 5.0
        fleet.wait_for(lambda: ok_runs(fleet, "task = 'run_every_hour'"), 30, "an hourly run")
        fleet.query(
            'UPDATE plugin_runtime.plugin_configs SET settings = settings || \'{"greeting": "bonjour"}\' '
            "WHERE id = %s",
            (config_id,),
        )
        edited_at = fleet.scheduler_now()
        fleet.wait_for(
            lambda: ok_runs(fleet, "task = 'run_every_hour' AND started_at > %s", (edited_at,)),
            30,
            "an hourly run after the edit",
        )
    later = ok_runs(fleet, "task = 'run_every_hour' AND started_at > %s", (edited_at,))
    assert all(r["result"] == {"greeting": "bonjour"} for r in later)
    # Through the pooler without a direct URL the listener found out it hears nothing; with one
    # (or directly) it heard.
    deaf = "notifications do not arrive" in fleet.nodes[0].log_text()
    assert deaf == (route == "via_pgbouncer_reconcile_only")


def test_deleting_a_config_with_a_run_in_flight_harms_nothing(
    database_url: str, tmp_path: Path
) -> None:
    fleet = make_fleet(database_url, tmp_path, time_scale=600, start_time=T0, tick_interval=10)
    with fleet:
        fleet.install(PLUGINS / "writer")
        doomed, kept = fleet.create_configs("writer", 2, {"sleep_s": 2})
        fleet.start_nodes(1)
        fleet.wait_for(
            lambda: fleet.runs("config_id = %s AND state = 'claimed'", (doomed,)),
            30,
            "a run of the doomed config in flight",
        )
        fleet.query("DELETE FROM plugin_runtime.plugin_configs WHERE id = %s", (doomed,))
        before = len(ok_runs(fleet, "config_id = %s", (kept,)))
        fleet.wait_for(
            lambda: len(ok_runs(fleet, "config_id = %s", (kept,))) >= before + 3,
            40,
            "the other config's runs to go on being recorded",
        )
        assert fleet.nodes[0].alive()
    assert (
        fleet.query(
            "SELECT count(*) AS n FROM plugin_runtime.storage WHERE config_id = %s", (doomed,)
        )[0]["n"]
        == 0
    )


def test_manual_trigger_runs_at_once_even_for_a_disabled_config(
    database_url: str, tmp_path: Path
) -> None:
    from runtime import store

    fleet = make_fleet(database_url, tmp_path, tick_interval=10)
    with fleet:
        fleet.install(PLUGINS / "tiny")
        (config_id,) = fleet.create_configs("tiny", 1, {"api_key": "k"}, enabled=False)
        fleet.start_nodes(1)
        fleet.wait_ready()
        with fleet.conn() as conn:
            run_id = store.trigger(conn, config_id, "run_every_hour")
        done = fleet.wait_for(
            lambda: fleet.runs("id = %s AND state = 'done'", (run_id,)), 15, "the triggered run"
        )
    assert done[0]["outcome"] == "ok" and done[0]["manual"]
    assert fleet.runs("NOT manual") == [], "the disabled config is not scheduled"


def test_nul_characters_from_a_plugin_cannot_wedge_recording(
    database_url: str, tmp_path: Path
) -> None:
    # PostgreSQL refuses NUL in text and jsonb: a plugin must not be able to make every later
    # flush of the node fail with it.
    fleet = make_fleet(database_url, tmp_path, time_scale=600, start_time=T0, tick_interval=10)
    with fleet:
        fleet.install(PLUGINS / "nul_chars")
        fleet.install(PLUGINS / "writer")
        (plain,) = fleet.create_configs("nul_chars", 1)
        (storing,) = fleet.create_configs("nul_chars", 1, {"store_nul": True})
        (healthy,) = fleet.create_configs("writer", 1)
        fleet.start_nodes(1)
        fleet.wait_for(
            lambda: len(ok_runs(fleet, "config_id = %s", (healthy,))) >= 3,
            40,
            "the healthy config to keep being recorded",
        )
        fleet.wait_for(lambda: ok_runs(fleet, "config_id = %s", (plain,)), 20, "the plain NUL run")
    run = ok_runs(fleet, "config_id = %s", (plain,))[0]
    assert run["result"] == {"text": "result with a NUL: \ufffd", "k\ufffd": 1}
    logs = fleet.query("SELECT message FROM plugin_runtime.logs WHERE run_id = %s", (run["id"],))
    assert logs == [{"message": "log with a NUL: a\ufffdb"}]
    refused = fleet.runs("config_id = %s", (storing,))[0]
    assert refused["outcome"] == "error" and "NUL" in refused["error"]["message"]
