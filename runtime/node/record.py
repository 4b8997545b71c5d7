"""The record duty: finished runs, recorded in batches (one statement per batch).

A batch records each run's outcome, timings, error, result and logs, applies the storage writes
of the successful ones, moves their tasks' pointers (`schedule.decide_completion`) and updates
failure streaks (quarantine). Recording can never block the node:

* preparing a run's record never raises (runtime/node/storable.py): data that cannot be stored
  is left out, and the run is recorded as an `error` with the reason (`RecordError`);
* a batch PostgreSQL refuses is recorded run by run; a run refused again is recorded without
  its data; one refused even so is left to the sweep, which records it as `lost`;
* only an outage puts a batch back (it waits in memory for the database to return); nothing is
  retried for ever.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime

from runtime import schedule
from runtime.clock import Clock
from runtime.db import Conflict, DatabaseError, DatabaseUnavailable
from runtime.node.gateway import Gateway
from runtime.node.records import Completion, PointerMove, StorageDelete, StorageWrite
from runtime.node.runs import Finished, Ledger
from runtime.node.settings import NodeSettings
from runtime.node.storable import MAX_REASON_CHARS, Unstorable, storable, text
from runtime.schedule import SchedulePolicy, TaskState
from sandbox.manifest import Cadence
from sandbox.outcome import Outcome

log = logging.getLogger("plugin_runtime.node.record")


@dataclass
class Entry:
    """One finished run, ready for `complete_runs`."""

    finished: Finished
    completion: Completion
    writes: dict[str, object] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> int:
        return self.completion.run_id

    @property
    def config_id(self) -> int:
        return self.finished.run.config_id


def pointer_after(
    task: TaskState,
    slot: datetime,
    attempt: int,
    succeeded: bool,
    now: datetime,
    policy: SchedulePolicy,
    retry_at_once: bool = False,
) -> PointerMove:
    """Where the task's pointer goes after a run of `slot` (`schedule.decide_completion`)."""
    d = schedule.decide_completion(task, slot, attempt, succeeded, now, policy)
    due = now if (retry_at_once and d.retry) else d.next_due_at
    return PointerMove(next_slot=d.next_slot, next_due_at=due, attempt=d.attempt)


def owes_follow_up(item: Finished) -> bool:
    """A catch-up or a retry (an hourly, daily, cron or manual run that was backfilled or
    failed): recorded at once, so that the next owed slot (or attempt) can start."""
    run = item.run
    return (run.backfilled or not item.report.ok) and run.cadence is not Cadence.MINUTE


def record_error(reason: str) -> dict[str, object]:
    return {
        "type": "RecordError",
        "message": text(f"the run's data could not be stored: {reason}")[:MAX_REASON_CHARS],
        "traceback": [],
    }


def prepare(
    item: Finished, node_id: str, ledger: Ledger, now: datetime, policy: SchedulePolicy
) -> Entry:
    """The record of one finished run. Never raises: what cannot be stored is left out, with
    the reason, and the run is recorded as an `error`."""
    run, report = item.run, item.report
    try:
        owned = ledger.get(run.run_id)
        pointer = (
            PointerMove()
            if owned is None or owned.task is None
            else pointer_after(owned.task, run.slot, run.attempt, report.ok, now, policy)
        )
    except Exception as exc:  # the task's schedule broke meanwhile: leave its pointer alone
        log.error("run %s: where its task goes next cannot be decided: %s", run.run_id, exc)
        pointer = PointerMove()
    completion = Completion(
        run_id=run.run_id,
        node=node_id,
        outcome=report.outcome,
        started_at=item.started_at,
        finished_at=item.finished_at,
        duration_ms=report.duration_ms,
        next_slot=pointer.next_slot,
        next_due_at=pointer.next_due_at,
        attempt=pointer.attempt,
        logs=[],
    )
    entry = Entry(item, completion)
    try:
        # The config's secret values are masked in what the plugin printed, raised and
        # returned, before anything is stored (runtime.text.Masker; never the record's keys).
        # A run that sent none of these (most runs) needs no masker.
        if report.error is not None or report.result is not None or report.logs:
            mask = run.masker()
            if report.error is not None:
                completion.error = storable(
                    {
                        "type": mask.text(str(report.error.type)),
                        "message": mask.text(str(report.error.message)),
                        "traceback": [mask.text(str(t)) for t in report.error.traceback],
                    },
                    "the error",
                )
            completion.result = storable(mask(report.result), "the result")
            completion.logs = [
                {"level": text(line.level), "message": text(mask.text(str(line.message)))}
                for line in report.logs
            ]
        if report.ok:
            entry.writes = {
                text(key): storable(value, f"storage key {text(key)!r}")
                for key, value in report.storage_writes.items()
            }
            entry.deletes = [text(key) for key in report.storage_deletes]
    except Unstorable as exc:
        return stripped(entry, str(exc))
    except Exception as exc:  # nothing a run sends may stop its record
        return stripped(entry, f"{type(exc).__name__}: {exc}")
    return entry


def stripped(entry: Entry, reason: str) -> Entry:
    """The run recorded without its data, as an error that says why."""
    completion = replace(
        entry.completion, outcome=Outcome.ERROR, error=record_error(reason), result=None, logs=[]
    )
    return Entry(entry.finished, completion)


def merge_storage(entries: list[Entry]) -> tuple[list[StorageWrite], list[StorageDelete]]:
    """Storage effects merged per (config, key) in run order, so that each key is written or
    deleted once per statement."""
    writes: dict[tuple[int, str], StorageWrite] = {}
    deletes: dict[tuple[int, str], StorageDelete] = {}
    for entry in entries:
        run_id, config_id = entry.run_id, entry.config_id
        for key, value in entry.writes.items():
            deletes.pop((config_id, key), None)
            writes[(config_id, key)] = StorageWrite(run_id, config_id, key, value)
        for key in entry.deletes:
            writes.pop((config_id, key), None)
            deletes[(config_id, key)] = StorageDelete(run_id, config_id, key)
    return list(writes.values()), list(deletes.values())


@dataclass
class RecordDuty:
    gateway: Gateway
    clock: Clock
    settings: NodeSettings
    ledger: Ledger
    pending: deque[Finished] = field(default_factory=deque)
    urgent: bool = False  # a run that owes a follow-up at once is waiting to be recorded

    def add(self, item: Finished) -> None:
        self.pending.append(item)
        if len(self.pending) >= self.settings.flush_batch or owes_follow_up(item):
            self.urgent = True

    def pending_ids(self) -> set[int]:
        return {item.run.run_id for item in self.pending}

    def due(self, now: float, next_flush: float, stopping: bool = False) -> bool:
        return bool(self.pending) and (
            now >= next_flush
            or len(self.pending) >= self.settings.flush_batch
            or self.urgent
            or stopping
        )

    def flush(self) -> bool:
        """Record the finished runs; True when one of them owes a follow-up run at once."""
        if not self.pending:
            return False
        batch = list(self.pending)
        self.pending.clear()
        urgent, self.urgent = self.urgent, False
        now = self.clock.now()
        policy = self.settings.policy
        entries = [prepare(item, self.settings.node_id, self.ledger, now, policy) for item in batch]
        remaining = list(entries)
        try:
            self._record(remaining)
        except DatabaseUnavailable:
            # Nothing is lost: what was not recorded goes back in front, and waits.
            self.pending.extendleft(reversed([entry.finished for entry in remaining]))
            self.urgent = self.urgent or urgent
            raise
        return urgent

    def _record(self, remaining: list[Entry]) -> None:
        """Record `remaining`, removing what is recorded (or given up) from it as it goes."""
        try:
            self._complete(remaining)
            self._done(remaining, len(remaining))
            return
        except DatabaseUnavailable:
            raise
        except DatabaseError as exc:
            log.error(
                "a batch of %d finished run(s) could not be recorded (%s); recording one by one",
                len(remaining),
                exc,
            )
        while remaining:
            entry = remaining[0]
            try:
                self._complete([entry])
            except DatabaseUnavailable:
                raise
            except DatabaseError as exc:
                self._complete_stripped(entry, str(exc))
            self._done(remaining, 1)

    def _complete_stripped(self, entry: Entry, reason: str) -> None:
        try:
            self._complete([stripped(entry, reason)])
        except DatabaseUnavailable:
            raise
        except DatabaseError as again:
            # Left claimed: the sweep records it as lost (its node no longer holds it).
            log.error(
                "run %s could not be recorded even without its data (%s); the sweep will "
                "record it as lost",
                entry.run_id,
                again,
            )

    def _done(self, remaining: list[Entry], count: int) -> None:
        self.ledger.forget([entry.run_id for entry in remaining[:count]])
        del remaining[:count]

    def _complete(self, entries: list[Entry]) -> None:
        writes, deletes = merge_storage(entries)
        completions = [entry.completion for entry in entries]
        for attempt in range(2):
            try:
                with self.gateway.transaction():
                    self.gateway.complete(
                        completions, writes, deletes, self.settings.quarantine_after
                    )
                return
            except Conflict:
                # Another node recorded a success for the same slot at the same moment; the
                # retry sees it and records this one as a duplicate.
                if attempt:
                    raise
