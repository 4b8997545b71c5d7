"""What a node does per run, made cheaper (issue 15), still does the same: the batch JSON keeps
each instant, rows read per class, the metrics series are the same series, a run's masker follows
its values."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from runtime import metrics
from runtime.node.gateway import recordset_json
from runtime.node.records import Claim, ClaimedRow, Completion, ManualRow
from runtime.node.runs import ClaimedRun
from sandbox import load_plugin
from sandbox.manifest import Cadence
from sandbox.outcome import Outcome

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def test_times_in_a_batch_keep_their_instant_and_a_naive_time_is_utc() -> None:
    berlin = timezone(timedelta(hours=1))
    aware = datetime(2026, 11, 29, 11, 0, 0, 250000, tzinfo=berlin)
    naive = datetime(2026, 11, 29, 10, 0)
    claim = Claim(task_id=7, run_slot=aware, next_slot=naive, missed_slots=[aware, naive])
    (row,) = json.loads(recordset_json([claim]))
    assert datetime.fromisoformat(row["run_slot"]) == aware
    assert row["next_slot"] == "2026-11-29T10:00:00Z"
    assert [datetime.fromisoformat(s) for s in row["missed_slots"]] == [
        aware,
        naive.replace(tzinfo=UTC),
    ]
    assert row["due_at"] is None and row["task_id"] == 7 and row["error"] is None
    done = Completion(run_id=1, outcome=Outcome.TIMEOUT, finished_at=aware, logs=[])
    (row,) = json.loads(recordset_json([done]))
    assert row["outcome"] == "timeout" and datetime.fromisoformat(row["finished_at"]) == aware
    # A time elsewhere (not a time field) still encodes; anything else unknown is refused.
    (row,) = json.loads(recordset_json([Completion(result={"at": naive})]))
    assert row["result"] == {"at": "2026-11-29T10:00:00Z"}
    with pytest.raises(TypeError):
        recordset_json([Completion(result={1, 2})])


def test_each_row_class_reads_its_own_columns() -> None:
    slot = datetime(2026, 11, 29, tzinfo=UTC)
    claimed = ClaimedRow.from_row({"id": 5, "task_id": 6, "storage": {"k": 1}})
    assert claimed == ClaimedRow(run_id=5, task_id=6, storage={"k": 1})
    common = {"id": 9, "task_id": None, "config_id": 3, "task": "t", "slot": slot}
    more = {"attempt": 1, "plugin_id": 2, "plugin_updated_at": slot, "settings": {}, "storage": {}}
    manual = ManualRow.from_row({**common, **more, "cadence": None})
    assert manual.run_id == 9 and manual.cadence is None and manual.values == {}
    assert ManualRow.from_row({**common, **more, "cadence": "hour"}).cadence is Cadence.HOUR


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_runs_counted_through_the_kept_series_are_the_exported_series(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "MAX_CACHED_SERIES", 2)  # cleared and looked up again
    reg = metrics.REGISTRY
    plugin = "hot-path-test-plugin"
    labels = {"plugin": plugin, "cadence": "hour", "outcome": "timeout"}
    before = _value(reg, "plugin_runtime_plugin_runs_total", **labels)
    kills = _value(reg, "plugin_runtime_sandbox_kills_total", reason="timeout")
    for outcome in (Outcome.TIMEOUT, Outcome.OK, Outcome.ERROR, Outcome.TIMEOUT):
        metrics.run_finished(plugin, "hour", outcome, 0.5)
        metrics.run_started(plugin, "hour", 2.0)
    assert _value(reg, "plugin_runtime_plugin_runs_total", **labels) == before + 2
    assert _value(reg, "plugin_runtime_sandbox_kills_total", reason="timeout") == kills + 2
    count = "plugin_runtime_plugin_start_lag_seconds_count"
    assert _value(reg, count, plugin=plugin, cadence="hour") == 4
    assert len(metrics._finished_series) <= 2


def test_a_runs_masker_follows_its_values() -> None:
    plugin = load_plugin(PLUGINS / "tiny")
    secret = next(k for k, f in plugin.manifest.config_schema.items() if f.secret)
    slot = datetime(2026, 11, 29, tzinfo=UTC)
    run = ClaimedRun(1, 2, "t", Cadence.HOUR, slot, 1, False, slot, {secret: "first"}, {}, plugin)
    assert run.masker().text("first second") == "*** second"
    assert run.masker() is run.masker()  # built once
    run.values = {secret: "second"}  # the config changed while the run was held
    assert run.masker().text("first second") == "first ***"
