"""A slot's state on a config's page (runtime/slot_grid.py), from its runs and the task's
pointer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from runtime.slot_grid import task_grid


def test_grid_states_from_runs() -> None:
    """Each state of a slot, from its runs and the task's pointer."""
    now = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    hour = timedelta(hours=1)
    slot = datetime(2026, 3, 1, 12, tzinfo=UTC)
    task = {"name": "t", "cadence": "hour", "cron": "0 * * * *", "next_slot": slot}

    def run(i: int, at: datetime, state: str, outcome: str | None) -> dict[str, Any]:
        return {"id": i, "slot": at, "state": state, "outcome": outcome, "manual": False}

    runs = [
        run(1, slot - 5 * hour, "done", "ok"),
        run(2, slot - 4 * hour, "done", "error"),
        run(3, slot - 4 * hour, "done", "ok"),  # a retry that succeeded: ok
        run(4, slot - 3 * hour, "done", "timeout"),
        run(5, slot - 2 * hour, "done", "missed"),
        run(6, slot - 1 * hour, "done", "error"),
        run(7, slot, "claimed", None),
        run(8, slot - 6 * hour, "done", "cancelled"),  # says nothing: the slot is skipped
    ]
    grid = task_grid(task, runs, now, first=slot - 7 * hour)
    states = {s.slot: s.state for s in grid.slots}
    assert len(grid.slots) == 48  # 48 h of hourly slots
    assert states[slot - 5 * hour] == "ok" and states[slot - 4 * hour] == "ok"
    assert states[slot - 3 * hour] == "timeout" and states[slot - 2 * hour] == "missed"
    assert states[slot - 1 * hour] == "failed" and states[slot] == "running"
    assert states[slot - 6 * hour] == "skipped" and states[slot - 8 * hour] == "skipped"
    pending = task_grid({**task, "next_slot": slot - hour}, [], now, first=slot - 7 * hour)
    assert {s.slot: s.state for s in pending.slots}[slot] == "due"
