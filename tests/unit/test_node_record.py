"""The record duty: whatever a run returned or logged, preparing its record never raises, a run
whose data cannot be stored is recorded without it (as an error, with the reason), and no batch
is retried for ever."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.db import DatabaseError, DatabaseUnavailable, Refused
from runtime.node.record import Entry, merge_storage, prepare
from runtime.node.records import Completion
from runtime.node.storable import MAX_DEPTH, Unstorable, storable, text
from sandbox.manifest import Cadence
from sandbox.outcome import LogLine, Outcome
from tests.unit.node_kit import T0, Kit, finished, report


def claimed(kit: Kit, cadence: Cadence = Cadence.HOUR) -> Any:
    config = kit.config()
    cron = "0 * * * *" if cadence is Cadence.HOUR else "* * * * *"
    kit.task(config, cadence, cron, next_slot=T0.replace(minute=0, second=0))
    kit.claim().tick(capacity=10, stats={})
    return kit.handed[-1]


def deep(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


HOSTILE = {
    "10,000 deep": deep(10_000),
    "NaN": float("nan"),
    "Infinity": [1, {"x": float("inf")}],
    "5,000 digits": 10**5000,
    "an object": {"x": object()},
    "a key that is not text": {(1, 2): 3},
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_result_that_cannot_be_stored_is_recorded_without_it(name: str) -> None:
    kit = Kit()
    run = claimed(kit)
    duty = kit.record()
    duty.add(finished(run, report(result=HOSTILE[name]), T0))
    duty.flush()
    row = kit.gateway.runs[run.run_id]
    assert row.state == "done" and row.outcome is Outcome.ERROR and row.result is None
    assert row.error is not None and row.error["type"] == "RecordError"
    assert "the result" in row.error["message"]
    assert run.run_id not in kit.ledger
    # It is a failed attempt of its slot, like any other error.
    assert kit.gateway.tasks[row.task_id].attempt == 1  # type: ignore[index]


def test_text_is_repaired_not_refused() -> None:
    kit = Kit()
    run = claimed(kit)
    duty = kit.record()
    logs = [LogLine("info", "lone \ud800 surrogate"), LogLine("warn\x00", "nul \x00 here")]
    result = {"x\udfff": ["\x00", "pair \ud83d\ude00"]}  # (not "k": the kit's secret)
    duty.add(finished(run, report(result=result, logs=logs), T0))
    duty.flush()
    row = kit.gateway.runs[run.run_id]
    assert row.outcome is Outcome.OK
    assert row.result == {"x\ufffd": ["\ufffd", "pair \U0001f600"]}
    assert [line["message"] for line in row.logs] == ["lone \ufffd surrogate", "nul \ufffd here"]


def test_storage_values_that_cannot_be_stored_are_not_written() -> None:
    kit = Kit()
    run = claimed(kit)
    duty = kit.record()
    duty.add(finished(run, report(storage_writes={"a": 1, "b": float("nan")}), T0))
    duty.flush()
    row = kit.gateway.runs[run.run_id]
    assert row.outcome is Outcome.ERROR and "storage key 'b'" in row.error["message"]  # type: ignore[index]
    assert kit.gateway.storage == {}


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text()
        | st.binary().map(lambda b: b.decode("utf-8", "surrogateescape")),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=30,
    )
)
def test_preparing_a_record_never_raises(value: Any) -> None:
    kit = Kit()
    run = claimed(kit)
    entry = prepare(
        finished(run, report(result=value, logs=[LogLine("info", str(value)[:100])]), T0),
        "node-a",
        kit.ledger,
        T0,
        kit.settings.policy,
    )
    assert isinstance(entry, Entry) and isinstance(entry.completion, Completion)
    if entry.completion.outcome is Outcome.OK:
        # What is kept is what PostgreSQL accepts: finite numbers, UTF-8 text without NUL.
        # (Walked, not searched in its repr: a string "inf" or "nan" is fine.)
        stack, numbers = [entry.completion.result], []
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                stack += list(item.values())
            elif isinstance(item, list):
                stack += item
            elif isinstance(item, float):
                numbers.append(item)
        assert all(math.isfinite(number) for number in numbers)
        storable(entry.completion.result)


def test_storable_is_iterative_and_bounded() -> None:
    assert storable(deep(MAX_DEPTH - 1)) == deep(MAX_DEPTH - 1)
    with pytest.raises(Unstorable, match="deeper"):
        storable(deep(100_000))
    with pytest.raises(Unstorable, match="larger"):
        storable("x" * 100, max_bytes=50)
    assert text("a\x00b") == "a\ufffdb" and math.isfinite(storable(1.5))


def test_a_refused_batch_is_recorded_run_by_run() -> None:
    kit = Kit()
    first, second = claimed(kit), claimed(kit)
    duty = kit.record()
    duty.add(finished(first, report(), T0))
    duty.add(finished(second, report(), T0))
    kit.gateway.fail_next("complete", Refused("invalid input syntax for type json"))
    duty.flush()
    assert {kit.gateway.runs[r.run_id].outcome for r in (first, second)} == {Outcome.OK}
    assert len(kit.ledger) == 0 and not duty.pending


def test_a_run_refused_alone_is_recorded_without_its_data() -> None:
    kit = Kit()
    run = claimed(kit)
    duty = kit.record()
    duty.add(finished(run, report(result={"fine": True}), T0))
    kit.gateway.fail_next("complete", Refused("batch refused"))
    kit.gateway.fail_next("complete", Refused("this one refused"))
    duty.flush()
    row = kit.gateway.runs[run.run_id]
    assert row.outcome is Outcome.ERROR and "this one refused" in row.error["message"]  # type: ignore[index]


def test_a_run_refused_even_without_data_is_left_to_the_sweep_not_retried() -> None:
    kit = Kit()
    run = claimed(kit)
    duty = kit.record()
    duty.add(finished(run, report(), T0))
    for _ in range(3):
        kit.gateway.fail_next("complete", DatabaseError("something else entirely"))
    duty.flush()
    assert not duty.pending and run.run_id not in kit.ledger
    assert kit.gateway.runs[run.run_id].state == "claimed"  # the sweep will record it as lost


def test_an_outage_puts_the_batch_back_and_nothing_is_lost() -> None:
    kit = Kit()
    run = claimed(kit)
    duty = kit.record()
    duty.add(finished(run, report(Outcome.ERROR), T0))
    assert duty.urgent
    kit.gateway.fail_next("complete", DatabaseUnavailable("connection refused"))
    with pytest.raises(DatabaseUnavailable):
        duty.flush()
    assert len(duty.pending) == 1 and duty.urgent and run.run_id in kit.ledger
    assert duty.flush() is True  # the retry owes its next attempt at once
    row = kit.gateway.runs[run.run_id]
    assert row.outcome is Outcome.ERROR
    task = kit.gateway.tasks[row.task_id]  # type: ignore[index]
    assert task.attempt == 2 and task.next_due_at == T0 + timedelta(seconds=10)


def test_storage_effects_merge_per_key_in_run_order() -> None:
    kit = Kit()
    a, b = claimed(kit), claimed(kit)
    entries = []
    for run, writes, deletes in ((a, {"x": 1, "y": 2}, []), (b, {"z": 3}, [])):
        entry = prepare(
            finished(run, report(storage_writes=writes, storage_deletes=deletes), T0),
            "node-a",
            kit.ledger,
            T0,
            kit.settings.policy,
        )
        entries.append(entry)
    entries[1].writes["x"] = 9
    entries[1].deletes.append("y")
    entries[1].finished.run.config_id = a.config_id
    writes, deletes = merge_storage(entries)
    assert {(w.key, w.value, w.run_id) for w in writes} == {("x", 9, b.run_id), ("z", 3, b.run_id)}
    assert [(d.key, d.run_id) for d in deletes] == [("y", b.run_id)]
