"""The grid of a config's recent slots on its status page (`/configs/ID`): for each task, every
slot of the last 48 hours (hourly, daily and cron tasks) or the last 60 minutes (minute tasks)
of scheduler time, coloured by what became of it. Pure: the caller reads the runs.

A slot's state, from its runs (the latest attempt that counts) and the task's pointer:

- ok: a run succeeded (or a duplicate of a success);
- failed: its latest attempt raised, crashed, hit the memory or output limit, or was lost;
- timeout: its latest attempt hit the wall-time or CPU limit;
- missed: older than the catch-up window when a node looked (never run);
- running: a run is claimed or in flight (or a manual run queued);
- due: its time has come and nothing ran it yet (at or after the task's pointer);
- skipped: a minute slot folded into a later run (minute tasks coalesce), or a slot before the
  task's first one: nothing is owed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from runtime.schedule import ScheduleError, slots_between

GRID_WINDOW = {
    "minute": timedelta(minutes=60),
    "hour": timedelta(hours=48),
    "day": timedelta(hours=48),
    "cron": timedelta(hours=48),
}
MAX_SLOTS = 2880  # a cron task every minute over 48 h
STATES = ("ok", "failed", "timeout", "missed", "running", "due", "skipped")
_OUTCOME_STATE = {
    "ok": "ok",
    "duplicate": "ok",
    "timeout": "timeout",
    "cpu_limit": "timeout",
    "missed": "missed",
    "error": "failed",
    "crashed": "failed",
    "memory_limit": "failed",
    "output_limit": "failed",
    "bad_plugin": "failed",
    "lost": "failed",
}
_IGNORED = {"cancelled", "released"}  # given back unrun: they say nothing about the slot


@dataclass
class Slot:
    slot: datetime
    state: str
    run_id: int | None = None
    outcome: str | None = None
    attempts: int = 0
    error: str = ""


@dataclass
class TaskGrid:
    task: str
    cadence: str
    cron: str
    since: datetime
    slots: list[Slot] = field(default_factory=list)
    time_zone: str | None = None  # daily and cron tasks in a zone (None: UTC)
    error: str = ""  # why its slots cannot be computed (a time zone written by hand)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for s in self.slots:
            out[s.state] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": self.counts()}


def _run_state(run: Mapping[str, Any]) -> str | None:
    if run["state"] != "done":
        return "running"
    return _OUTCOME_STATE.get(str(run["outcome"]))


def task_grid(
    task: Mapping[str, Any],
    runs: Iterable[Mapping[str, Any]],
    now: datetime,
    first: datetime | None = None,
    error_of: Any = None,
) -> TaskGrid:
    """The grid of one task (`task`: name, cadence, cron, time_zone, next_slot) from its runs in
    the window (id, slot, state, outcome, manual, error), at scheduler time `now`. `first`: no slot before
    it is owed (the config's creation). `error_of(error) -> str` summarises an error."""
    cadence = str(task["cadence"])
    since = now - GRID_WINDOW.get(cadence, GRID_WINDOW["hour"])
    zone = task.get("time_zone")
    grid = TaskGrid(str(task["name"]), cadence, str(task["cron"]), since, time_zone=zone)
    by_slot: dict[datetime, list[Mapping[str, Any]]] = {}
    for run in runs:
        if run.get("manual") or run["outcome"] in _IGNORED:
            continue
        by_slot.setdefault(run["slot"], []).append(run)
    pointer = task.get("next_slot")
    try:
        slots = slots_between(grid.cron, since, now + timedelta(microseconds=1), MAX_SLOTS, zone)
    except ScheduleError as exc:
        grid.error = str(exc)
        return grid
    for slot in slots:
        attempts = sorted(by_slot.get(slot, []), key=lambda r: int(r["id"]))
        if attempts:
            ok = [r for r in attempts if _run_state(r) == "ok"]
            chosen = ok[-1] if ok else attempts[-1]
            state = _run_state(chosen) or "failed"
            grid.slots.append(
                Slot(
                    slot,
                    state,
                    int(chosen["id"]),
                    chosen["outcome"],
                    len(attempts),
                    error_of(chosen.get("error")) if error_of and chosen.get("error") else "",
                )
            )
        elif first is not None and slot < first:
            grid.slots.append(Slot(slot, "skipped"))
        elif pointer is None or slot >= pointer:
            grid.slots.append(Slot(slot, "due"))
        else:
            grid.slots.append(Slot(slot, "skipped"))
    return grid
