"""The sweep, reload and retention duties, and the node's loop turns, against the in-memory
gateway."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from runtime.db import DatabaseUnavailable
from runtime.node.dispatch import Dispatcher
from runtime.node.listener import Change
from runtime.node.node import Node
from runtime.node.reload import ReloadDuty
from runtime.node.retention import BATCHES_PER_PASS, RetentionDuty
from runtime.node.runs import Started
from runtime.node.sweep import SweepDuty
from sandbox.manifest import Cadence
from sandbox.outcome import Outcome
from tests.unit.node_kit import T0, Kit, finished, report


def hourly_claimed(kit: Kit, node_id: str) -> Any:
    config = kit.config()
    task = kit.task(config, Cadence.HOUR, "0 * * * *", next_slot=T0.replace(minute=0, second=0))
    kit.settings.node_id = node_id
    kit.claim().tick(capacity=10, stats={})
    return task, kit.handed[-1]


def test_the_sweep_records_runs_of_dead_nodes_as_lost_and_retries_their_slot_at_once() -> None:
    kit = Kit()
    task, theirs = hourly_claimed(kit, "node-dead")
    kit.ledger.forget([theirs.run_id])  # that was the other node's ledger
    kit.settings.node_id = "node-a"
    kit.gateway.dead_nodes.add("node-dead")
    assert SweepDuty(kit.gateway, kit.clock, kit.settings, kit.ledger).sweep() == 1  # type: ignore[arg-type]
    row = kit.gateway.runs[theirs.run_id]
    assert row.outcome is Outcome.LOST and "node-dead stopped heartbeating" in row.error["message"]  # type: ignore[index]
    t = kit.gateway.tasks[task]
    assert t.active_run_id is None and t.attempt == 2 and t.next_due_at == T0
    assert ("mark_dead_nodes", ["node-dead"]) in kit.gateway.calls


def test_the_sweep_never_takes_a_run_this_node_holds_but_frees_what_it_does_not() -> None:
    kit = Kit()
    _, held = hourly_claimed(kit, "node-a")
    _, forgotten = hourly_claimed(kit, "node-a")
    kit.ledger.forget([forgotten.run_id])  # e.g. left by an earlier process with this id
    SweepDuty(kit.gateway, kit.clock, kit.settings, kit.ledger).sweep()  # type: ignore[arg-type]
    assert kit.gateway.runs[held.run_id].state == "claimed"
    row = kit.gateway.runs[forgotten.run_id]
    assert row.outcome is Outcome.LOST and "earlier process" in row.error["message"]  # type: ignore[index]


class NoSandbox:
    layers: dict[str, bool] = {}
    layer_reasons: dict[str, str] = {}

    def submit(self, request: Any) -> Any:
        raise AssertionError("no run is started in these tests")


def reload_kit() -> tuple[Kit, Dispatcher, list[Change], ReloadDuty, list[str]]:
    kit = Kit()
    heard: list[Change] = []
    manual: list[str] = []
    dispatcher = Dispatcher(
        NoSandbox(), kit.clock, 4, kit.settings.caps, lambda _: None, lambda _: None
    )  # type: ignore[arg-type]
    duty = ReloadDuty(
        kit.gateway,
        kit.clock,  # type: ignore[arg-type]
        kit.settings,
        lambda: [heard.pop(0) for _ in range(len(heard))],
        dispatcher,
        kit.ledger,
        lambda: manual.append("claimed"),
    )
    return kit, dispatcher, heard, duty, manual


def test_reload_cancels_held_runs_of_a_disabled_config_and_syncs_its_tasks() -> None:
    kit, dispatcher, heard, duty, _ = reload_kit()
    kit.settings.node_id = "node-a"
    config = kit.config()
    kit.task(config, Cadence.HOUR, "0 * * * *", next_slot=T0.replace(minute=0, second=0))
    kit.claim().tick(capacity=10, stats={})
    dispatcher.add(kit.handed)
    heard.append(
        Change(
            "plugin_runtime_changes",
            {"table": "plugin_configs", "id": config, "op": "UPDATE", "runnable": False},
        )
    )
    assert duty.handle() is True
    assert dispatcher.held_count() == 0 and len(kit.ledger) == 0
    assert kit.gateway.runs[kit.handed[0].run_id].outcome is Outcome.CANCELLED
    assert ("sync_tasks", [config]) in kit.gateway.calls


def test_reload_gives_held_runs_new_values_and_claims_manual_runs() -> None:
    kit, dispatcher, heard, duty, manual = reload_kit()
    config = kit.config(greeting="old")
    kit.task(config, Cadence.HOUR, "0 * * * *", next_slot=T0.replace(minute=0, second=0))
    kit.claim().tick(capacity=10, stats={})
    dispatcher.add(kit.handed)
    kit.gateway.configs[config].values["greeting"] = "new"
    heard.append(
        Change(
            "plugin_runtime_changes", {"table": "plugin_configs", "id": config, "runnable": True}
        )
    )
    heard.append(Change("plugin_runtime_trigger", {"id": 7}))
    heard.append(Change("plugin_runtime_changes", {"table": "plugin_configs", "id": "junk"}))
    duty.handle()
    assert kit.handed[0].values["greeting"] == "new" and manual == ["claimed"]


def test_reload_reconciles_after_the_listener_reconnects() -> None:
    kit, _, heard, duty, manual = reload_kit()
    heard.append(Change("reconnected", {}))
    assert duty.handle() is False
    assert ("reconcile_tasks", None) in kit.gateway.calls and manual == ["claimed"]


def test_retention_prunes_a_bounded_number_of_batches_per_pass() -> None:
    kit = Kit()
    kit.settings.runs_retention_days, kit.settings.logs_retention_days = 10.0, None
    RetentionDuty(kit.gateway, kit.clock, kit.settings).prune()  # type: ignore[arg-type]
    assert ("prune", (10.0, None, BATCHES_PER_PASS)) in kit.gateway.calls


def test_an_error_in_one_duty_is_logged_as_itself_and_the_database_stays_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kit = Kit()
    node = Node("postgresql://unused", kit.settings, kit.clock, NoSandbox(), kit.gateway)  # type: ignore[arg-type]
    node.db_ok.set()

    def broken() -> None:
        raise KeyError("a bug")

    with caplog.at_level(logging.ERROR):
        assert node._turn("sweep", broken) == (False, None)
    assert "sweep failed" in caplog.text and "KeyError" in caplog.text
    assert "database unavailable" not in caplog.text
    assert node.db_ok.is_set() and kit.gateway.connected

    def outage() -> None:
        raise DatabaseUnavailable("connection refused")

    assert node._turn("claim", outage) == (False, None)
    assert "database unavailable: connection refused" in caplog.text
    assert not node.db_ok.is_set() and not kit.gateway.connected


def test_what_other_threads_hand_over_is_taken_in_on_the_nodes_thread() -> None:
    kit = Kit()
    node = Node("postgresql://unused", kit.settings, kit.clock, NoSandbox(), kit.gateway)  # type: ignore[arg-type]
    node.claim.hand_over = kit.handed.extend
    kit.task(kit.config(), Cadence.HOUR, "0 * * * *", next_slot=T0.replace(minute=0, second=0))
    node.claim.tick(10, {})
    (run,) = kit.handed
    node._hand_over(Started(run, T0 + timedelta(seconds=2)))
    node._hand_over(finished(run, report(Outcome.TIMEOUT), T0))
    assert node.stats.finished == 0, "nothing is touched until the node's thread takes it in"
    assert node.wake.is_set()
    node._take_events()
    assert node.stats.started == 1 and node.stats.by_outcome == {"timeout": 1}
    lag = (T0 + timedelta(seconds=2) - run.slot).total_seconds() - run.offset_s
    assert list(node.stats.lags) == [pytest.approx(lag)]
    assert len(node.record.pending) == 1 and node.record.urgent
    stats = node.node_stats()
    assert stats["by_outcome"] == {"timeout": 1} and stats["statements"] == kit.gateway.statements


def test_a_finished_run_wakes_the_loop_only_when_it_owes_a_follow_up_or_a_batch_is_waiting() -> (
    None
):
    kit = Kit()
    kit.settings.flush_batch = 4
    node = Node("postgresql://unused", kit.settings, kit.clock, NoSandbox(), kit.gateway)  # type: ignore[arg-type]
    node.claim.hand_over = kit.handed.extend
    config = kit.config()
    kit.task(config, Cadence.MINUTE, "* * * * *", next_slot=T0.replace(second=0))
    kit.task(config, Cadence.HOUR, "0 * * * *", next_slot=T0.replace(minute=0, second=0))
    node.claim.tick(10, {})
    minute = next(run for run in kit.handed if run.cadence is Cadence.MINUTE)
    hourly = next(run for run in kit.handed if run.cadence is Cadence.HOUR)
    node._hand_over(finished(minute, report(Outcome.OK), T0))
    node._hand_over(finished(minute, report(Outcome.ERROR), T0))  # minute runs are not retried
    node._hand_over(finished(hourly, report(Outcome.OK), T0))
    assert not node.wake.is_set(), "taken in at the loop's next turn, with its batch"
    node._hand_over(finished(hourly, report(Outcome.OK), T0))  # the batch's worth is waiting
    assert node.wake.is_set()
    node.wake.clear()
    node._take_events()
    assert len(node.record.pending) == 4 and node.record.urgent
    node._hand_over(finished(hourly, report(Outcome.TIMEOUT), T0))  # its retry is owed at once
    assert node.wake.is_set()
