"""The claim duty against the in-memory gateway: what a tick claims, records and hands over, and
that one task whose schedule cannot be computed is that task's failure alone."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.db import DatabaseUnavailable
from runtime.node.claim import DECISION_RETRY, decide
from runtime.node.records import DueTask
from runtime.schedule import SchedulePolicy
from sandbox.manifest import Cadence
from sandbox.outcome import Outcome
from tests.unit.node_kit import T0, Kit


def test_a_tick_claims_due_tasks_records_them_and_hands_them_over() -> None:
    kit = Kit()
    config = kit.config(greeting="hi")
    minute = kit.task(config, Cadence.MINUTE, "* * * * *")
    hour = kit.task(
        config, Cadence.HOUR, "0 * * * *", next_slot=T0 - timedelta(minutes=30, seconds=30)
    )
    kit.claim().tick(capacity=10, stats={"started": 0})

    runs = {run.task: run for run in kit.handed}
    assert set(runs) == {"run_every_hour"}, "the new minute task is initialised, not run early"
    hourly = runs["run_every_hour"]
    assert hourly.values == {"api_key": "k", "greeting": "hi"} and hourly.plugin.name == "tiny"
    assert hourly.run_id in kit.ledger and kit.gateway.runs[hourly.run_id].state == "claimed"
    assert kit.gateway.tasks[hour].active_run_id == hourly.run_id
    assert kit.gateway.tasks[minute].next_slot == datetime(2026, 11, 27, 10, 1, tzinfo=T0.tzinfo)
    assert kit.gateway.calls[0] == ("heartbeat", {"started": 0})
    assert kit.gateway.statements == 3  # due tasks, record claims, plugin code (then cached)


def test_capacity_bounds_the_claim_and_hourly_tasks_go_first() -> None:
    kit = Kit()
    for _ in range(5):
        kit.task(kit.config(), Cadence.MINUTE, "* * * * *", next_slot=T0.replace(second=0))
    hourly = kit.task(
        kit.config(), Cadence.HOUR, "0 * * * *", next_slot=T0.replace(minute=0, second=0)
    )
    kit.claim().tick(capacity=2, stats={})
    assert len(kit.handed) == 2
    assert hourly in {kit.gateway.runs[r.run_id].task_id for r in kit.handed}


def test_an_impossible_schedule_is_that_tasks_failure_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kit = Kit()
    bad_config, good_config = kit.config(), kit.config()
    # February 31st: refused at install today; a row written before that, or by hand, must not
    # stop the tick.
    bad = kit.task(bad_config, Cadence.CRON, "0 0 31 2 *", name="never")
    good = kit.task(
        good_config, Cadence.HOUR, "0 * * * *", next_slot=T0.replace(minute=0, second=0)
    )
    duty = kit.claim()
    with caplog.at_level(logging.ERROR):
        duty.tick(capacity=10, stats={})

    assert [kit.gateway.runs[r.run_id].task_id for r in kit.handed] == [good]
    (failure,) = kit.gateway.runs_of(bad_config)
    assert failure.outcome is Outcome.ERROR and failure.state == "done"
    assert failure.error is not None and "could not be scheduled" in failure.error["message"]
    assert "0 0 31 2 *" in failure.error["message"]
    assert f"config {bad_config} task never" in caplog.text and "0 0 31 2 *" in caplog.text
    assert duty.counts.failed == 1
    assert kit.gateway.configs[bad_config].consecutive_failures == 1  # doctor shows it
    # It waits: the next tick within the hour does not look at it again.
    task = kit.gateway.tasks[bad]
    assert task.attempt == 0 and task.next_due_at == T0 + DECISION_RETRY
    kit.clock.advance(60)
    duty.tick(capacity=10, stats={})
    assert len(kit.gateway.runs_of(bad_config)) == 1


def test_decide_never_raises_on_a_row_that_makes_no_sense() -> None:
    due = DueTask(
        id=1, config_id=2, name="x", cadence=Cadence.HOUR, cron="not cron", offset_s=float("nan"),
        next_slot=datetime(2026, 1, 1), next_due_at=T0, attempt=-3, plugin_id=1, values={},
        plugin_updated_at=T0,
    )  # fmt: skip
    decision = decide(due, T0, T0 + timedelta(seconds=11), SchedulePolicy())
    assert decision.failure is not None and decision.claim.error is not None
    assert not decision.runs


def test_a_plugin_that_cannot_be_loaded_releases_its_runs() -> None:
    kit = Kit()
    config = kit.config()
    kit.task(config, Cadence.HOUR, "0 * * * *", next_slot=T0.replace(minute=0, second=0))
    code = kit.gateway.plugins[kit.plugin_id]
    kit.gateway.plugins[kit.plugin_id] = type(code)(code.id, {"name": 3}, code.source, T0)
    kit.claim().tick(capacity=10, stats={})
    assert kit.handed == [] and len(kit.ledger) == 0
    (run,) = kit.gateway.runs_of(config)
    assert run.outcome is Outcome.RELEASED


def test_an_outage_mid_tick_claims_nothing() -> None:
    kit = Kit()
    kit.task(kit.config(), Cadence.HOUR, "0 * * * *", next_slot=T0.replace(minute=0, second=0))
    kit.gateway.fail_next("plugin_code", DatabaseUnavailable("gone"))
    with pytest.raises(DatabaseUnavailable):
        kit.claim().tick(capacity=10, stats={})
    assert kit.handed == [] and len(kit.ledger) == 0 and kit.gateway.runs == {}


def test_manual_runs_are_claimed_and_owned_without_a_task_pointer() -> None:
    kit = Kit()
    config = kit.config()
    kit.task(config, Cadence.HOUR, "0 * * * *", next_slot=T0 + timedelta(hours=1))
    run_id = kit.gateway.queue_manual(config, "run_every_hour", T0)
    kit.claim().claim_manual()
    (run,) = kit.handed
    assert run.run_id == run_id and run.manual and run.label == "manual"
    owned = kit.ledger.get(run_id)
    assert owned is not None and owned.task is None


CRONS = st.one_of(
    st.sampled_from(
        [
            "0 0 31 2 *",
            "0 0 30 2 *",
            "0 0 1 1 1#5",
            "0 0 29 2 *",
            "* * * * *",
            "*/7 * * * *",
            "59 23 31 12 *",
            "0 0 * * 7",
            "",
            "a b c d e",
            "61 * * * *",
            "0 0 1 1 *",
            "L * * * *",
        ]
    ),  # fmt: skip
    st.lists(
        st.sampled_from(["*", "0", "*/2", "1-5", "31", "2", "5#5", "L", "99", ","]),
        min_size=4,
        max_size=6,
    ).map(" ".join),
    st.text(max_size=30),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    schedules=st.lists(
        st.tuples(
            st.sampled_from(list(Cadence)),
            CRONS,
            st.one_of(
                st.none(),
                st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)),
            ),
            st.integers(min_value=-5, max_value=20),
        ),
        max_size=6,
    )
)
def test_no_schedule_stops_a_tick(
    schedules: list[tuple[Cadence, str, datetime | None, int]],
) -> None:
    """Property: whatever the tasks' rows hold, a tick ends normally, a healthy hourly task
    next to them is claimed, and every other task is decided (claimed, waiting or failed)."""
    kit = Kit()
    healthy = kit.task(
        kit.config(), Cadence.HOUR, "0 * * * *", next_slot=T0.replace(minute=0, second=0)
    )
    for cadence, cron, slot, attempt in schedules:
        kit.task(
            kit.config(), cadence, cron, name=f"t{len(kit.gateway.tasks)}",
            next_slot=slot.replace(tzinfo=T0.tzinfo) if slot else None, attempt=attempt,
        )  # fmt: skip
    duty = kit.claim()
    duty.tick(capacity=100, stats={})
    assert healthy in {kit.gateway.runs[r.run_id].task_id for r in kit.handed}
    for task in kit.gateway.tasks.values():
        assert task.next_due_at is not None, "every task looked at got a decision"


def test_a_pointer_decades_behind_a_non_periodic_cron_is_one_bounded_step() -> None:
    """Found by the property above: counting missed `*/7` slots since 1975 one by one held a tick
    for minutes. The count is extrapolated past a bound; the tick goes on."""
    due = DueTask(
        id=1, config_id=2, name="x", cadence=Cadence.CRON, cron="*/7 * * * *", offset_s=0.0,
        next_slot=datetime(1975, 1, 1, tzinfo=T0.tzinfo), next_due_at=T0, attempt=1, plugin_id=1,
        values={}, plugin_updated_at=T0,
    )  # fmt: skip
    decision = decide(due, T0, T0 + timedelta(seconds=11), SchedulePolicy())
    assert decision.failure is None and decision.runs
    years = (T0 - due.next_slot).days / 365.25  # type: ignore[operator]
    expected = years * 365.25 * 24 * 9  # */7 fires 9 times an hour (0, 7, ..., 56)
    assert abs(decision.missed - expected) / expected < 0.01
