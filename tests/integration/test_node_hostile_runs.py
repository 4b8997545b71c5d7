"""One real `serve` node, healthy minute configs next to runs that try to wedge its recording
(a 10,000-deep list, NaN and Infinity, lone surrogates and NUL in logs, a log flood, a cache
filled to its cap): each hostile run is recorded, a failure with its reason where its data
cannot be kept, and every healthy minute slot runs, none skipped or late past its minute."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from runtime.testing.fleet import Fleet
from sandbox.outcome import FAILURES

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
KINDS = ("deep", "nan", "surrogates", "flood", "cache")
HEALTHY = 4
SLOTS = 4  # healthy minute slots each config must run, one after the other


def test_hostile_runs_are_recorded_and_healthy_slots_run_on_time(
    database_url: str, tmp_path: Path
) -> None:
    fleet = Fleet(database_url, tmp_path / "fleet", time_scale=10, tick_interval=5, concurrency=8)
    with fleet:
        fleet.install(PLUGINS / "tiny")
        fleet.install(PLUGINS / "hostile")
        healthy = fleet.create_configs("tiny", HEALTHY, {"api_key": "k"})
        hostile = {kind: fleet.create_configs("hostile", 1, {"kind": kind})[0] for kind in KINDS}
        fleet.query("DELETE FROM plugin_runtime.tasks WHERE name <> 'run_every_minute'")
        (node,) = fleet.start_nodes(1)

        def healthy_done() -> bool:
            rows = fleet.query(
                "SELECT config_id, count(*) AS n FROM plugin_runtime.runs WHERE outcome = 'ok' "
                "AND task = 'run_every_minute' AND config_id = ANY(%s) GROUP BY config_id",
                (healthy,),
            )
            hostile_recorded = fleet.query(
                "SELECT count(DISTINCT config_id) AS n FROM plugin_runtime.runs "
                "WHERE state = 'done' AND config_id = ANY(%s)",
                (list(hostile.values()),),
            )[0]["n"]
            return (
                len(rows) == HEALTHY
                and min(r["n"] for r in rows) >= SLOTS
                and hostile_recorded == len(KINDS)
            )

        fleet.wait_for(healthy_done, 120, f"{SLOTS} healthy slots per config, every hostile run")
        assert node.alive()
        # Minute runs only: the node's task sync puts the hourly task back, and its run at :00
        # has the same slot as that minute's run.
        runs = fleet.runs(
            "config_id = ANY(%s) AND state = 'done' AND task = 'run_every_minute'",
            (healthy + list(hostile.values()),),
        )
        coalesced = fleet.query(
            "SELECT config_id, coalesced FROM plugin_runtime.tasks WHERE config_id = ANY(%s)",
            (healthy,),
        )
        offsets = {
            r["config_id"]: r["offset_s"]
            for r in fleet.query("SELECT config_id, offset_s FROM plugin_runtime.tasks")
        }
        logs = fleet.query(
            "SELECT message FROM plugin_runtime.logs WHERE config_id = %s",
            (hostile["surrogates"],),
        )
        log_text = node.log_text()

    by_config: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_config[run["config_id"]].append(run)

    first = {
        kind: min(by_config[config], key=lambda r: r["id"]) for kind, config in hostile.items()
    }
    for kind in ("deep", "nan", "flood"):
        run = first[kind]
        assert run["outcome"] in FAILURES, (kind, run["outcome"])
        assert run["error"] and run["error"]["message"], f"{kind}: recorded without a reason"
    assert first["flood"]["outcome"] == "output_limit"
    nan = first["nan"]
    # refused by the child (not JSON), or by the record (JSON cannot represent it)
    assert nan["result"] is None and "JSON" in nan["error"]["message"]
    # Log text is repaired, not refused: the line is kept, readable. The result holding a lone
    # surrogate is refused with the reason (by the child's checks or by the record).
    surrogates = first["surrogates"]
    assert surrogates["outcome"] in FAILURES and "surrogate" in surrogates["error"]["message"]
    assert "lone \ufffd surrogate and a NUL \ufffd" in [line["message"] for line in logs]
    cache = first["cache"]
    assert cache["outcome"] == "ok" or (cache["error"] and cache["error"]["message"])

    for config in healthy:
        ok = sorted((r for r in by_config[config] if r["outcome"] == "ok"), key=lambda r: r["slot"])
        assert len(ok) >= SLOTS
        for before, after in zip(ok, ok[1:], strict=False):
            assert after["slot"] - before["slot"] == timedelta(minutes=1), (
                "a healthy slot was skipped"
            )
        for run in ok:
            due = run["slot"] + timedelta(seconds=offsets[config])
            assert run["started_at"] - due < timedelta(minutes=1), (
                "a healthy slot ran past its minute"
            )
    assert all(row["coalesced"] == 0 for row in coalesced), (
        "a healthy slot was folded into a later one"
    )
    assert "database unavailable" not in log_text
