"""The claim duty: each tick, lock the tasks due within the lookahead, decide each one
(`runtime.schedule`), record the decisions and the runs they claim (two statements whatever the
batch), and hand the claimed runs to the dispatcher. Manual runs (`plugin-runtime trigger`) are
claimed here too.

Deciding one task can fail (a schedule croniter cannot compute, a row that makes no sense): that
is that task's failure — recorded as an `error` run of its config that counts in its failure
streak (so `runs`, `status` and `doctor` show it from the first one), logged with the task and
config, and the task is looked at again after `DECISION_RETRY` — and every other task of the
tick goes on.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from runtime import metrics, schedule
from runtime.clock import Clock
from runtime.node.gateway import Gateway
from runtime.node.plugins import PluginCache
from runtime.node.records import Claim, DueTask, ManualRow
from runtime.node.runs import ClaimedRun, Ledger, Owned
from runtime.node.settings import NodeSettings
from runtime.node.storable import MAX_REASON_CHARS
from runtime.schedule import SchedulePolicy, TaskState
from sandbox.manifest import ManifestError, Plugin
from sandbox.outcome import Outcome

log = logging.getLogger("plugin_runtime.node.claim")

MISSED_ROWS_PER_TICK = 1000  # missed slots recorded per task per tick (all are counted)
MANUAL_PER_CLAIM = 100
DECISION_RETRY = timedelta(hours=1)  # scheduler time before a task whose decision failed is retried


@dataclass
class Decision:
    """What one task's decision amounts to: the claim to record, and the run to start if any."""

    claim: Claim
    runs: bool
    task: TaskState  # the task as this claim leaves it (for the run's completion)
    missed: int = 0
    coalesced: int = 0
    failure: str | None = None


def decide(due: DueTask, now: datetime, horizon: datetime, policy: SchedulePolicy) -> Decision:
    """The decision for one locked task; never raises (a failure is the task's own)."""
    try:
        return _decide(due, now, horizon, policy)
    except Exception as exc:  # whatever went wrong, it is this task's failure alone
        reason = f"{type(exc).__name__}: {str(exc).strip()}"[:MAX_REASON_CHARS]
        waiting = due.state()
        claim = Claim(
            task_id=due.id,
            next_slot=due.next_slot,
            next_due_at=now + DECISION_RETRY,
            # attempt 0 marks a task not initialised yet whose decision failed: it waits too
            attempt=due.attempt if due.next_slot is not None else 0,
            error={
                "type": "ScheduleError",
                "message": f"the task could not be scheduled: {reason}",
                "traceback": traceback.format_exception_only(exc)[-1:],
            },
        )
        return Decision(claim=claim, runs=False, task=waiting, failure=reason)


def _decide(due: DueTask, now: datetime, horizon: datetime, policy: SchedulePolicy) -> Decision:
    task = due.state(attempt=max(due.attempt, 1))
    offset: float | None = None
    next_due_at = due.next_due_at
    if task.next_slot is None:
        # A new (or changed) task: give it its offset and first slot; if that is due within this
        # tick's horizon, claim it now rather than at the next tick.
        offset = schedule.spread_offset(f"{due.config_id}:{due.name}", task.cadence, policy)
        task.offset_s = offset
        init = schedule.initialise(task, now)
        task.next_slot, next_due_at = init.next_slot, init.next_due_at
        if next_due_at > horizon:
            claim = Claim(
                task_id=task.id,
                attempt=task.attempt,
                next_slot=init.next_slot,
                next_due_at=init.next_due_at,
                missed_slots=[],
                offset_s=offset,
            )
            return Decision(claim=claim, runs=False, task=task)
    start_at = max(now, next_due_at)
    d = schedule.decide_claim(task, start_at, policy)
    claim = Claim(
        task_id=task.id,
        run_slot=d.run_slot,
        attempt=d.attempt,
        backfilled=d.backfilled,
        due_at=start_at if d.run_slot else None,
        next_slot=d.next_slot,
        next_due_at=d.next_due_at,
        coalesced=d.coalesced,
        missed_count=d.missed_count,
        missed_slots=d.missed_slots[:MISSED_ROWS_PER_TICK],
        offset_s=offset,
    )
    # `task` is this decision's own copy (`due.state`): moved in place, not copied again.
    task.next_slot, task.attempt, task.active = d.next_slot, d.attempt, True
    return Decision(
        claim=claim,
        runs=d.run_slot is not None,
        task=task,
        missed=d.missed_count,
        coalesced=d.coalesced,
    )


@dataclass
class ClaimCounts:
    missed: int = 0
    coalesced: int = 0
    failed: int = 0


@dataclass
class ClaimDuty:
    gateway: Gateway
    clock: Clock
    settings: NodeSettings
    plugins: PluginCache
    ledger: Ledger
    hand_over: Callable[[list[ClaimedRun]], None]  # to the dispatcher
    counts: ClaimCounts = field(default_factory=ClaimCounts)

    def tick(self, capacity: int, stats: dict[str, object]) -> None:
        """One tick: claim up to `capacity` due tasks; heartbeat with `stats`."""
        node_id = self.settings.node_id
        if not self.settings.schedules:
            self.gateway.due_tasks(node_id, self.clock.now(), 0, stats)  # heartbeat only
            return
        now = self.clock.now()
        horizon = now + timedelta(seconds=self.settings.lookahead_s)
        with self.gateway.transaction():
            due = self.gateway.due_tasks(node_id, horizon, capacity, stats)
            if not due:
                return
            decisions = {d.id: (d, decide(d, now, horizon, self.settings.policy)) for d in due}
            for task, decision in decisions.values():
                self._account(task, decision)
            claimed = self.gateway.record_claims(
                node_id, [decision.claim for _, decision in decisions.values()], now
            )
            runs: list[ClaimedRun] = []
            owned: list[tuple[int, Owned]] = []
            broken: list[int] = []
            for row in claimed:
                task, decision = decisions[row.task_id]
                plugin = self._plugin(task.plugin_id, task.plugin_updated_at)
                if plugin is None:
                    broken.append(row.run_id)
                    continue
                run = ClaimedRun(
                    run_id=row.run_id,
                    config_id=task.config_id,
                    task=task.name,
                    cadence=task.cadence,
                    slot=decision.claim.run_slot or now,
                    attempt=decision.claim.attempt,
                    backfilled=decision.claim.backfilled,
                    due_at=decision.claim.due_at or now,
                    values=task.values,
                    storage=row.storage,
                    plugin=plugin,
                    offset_s=decision.task.offset_s,
                )
                runs.append(run)
                owned.append((run.run_id, Owned(task.config_id, decision.task)))
            self._release(broken, now)
        # Committed: from here on this node owns them (and the sweep knows it does).
        self._own(owned)
        self.hand_over(runs)

    def claim_manual(self) -> None:
        """Claim runs queued by `plugin-runtime trigger`."""
        now = self.clock.now()
        runs: list[ClaimedRun] = []
        broken: list[int] = []
        with self.gateway.transaction():
            for row in self.gateway.claim_manual(self.settings.node_id, MANUAL_PER_CLAIM):
                plugin = self._plugin(row.plugin_id, row.plugin_updated_at)
                if plugin is None:
                    broken.append(row.run_id)
                    continue
                runs.append(self._manual_run(row, plugin, now))
            self._release(broken, now)
        self._own([(run.run_id, Owned(run.config_id, None)) for run in runs])
        self.hand_over(runs)

    def _own(self, owned: list[tuple[int, Owned]]) -> None:
        for run_id, what in owned:
            self.ledger.own(run_id, what)

    def _manual_run(self, row: ManualRow, plugin: Plugin, now: datetime) -> ClaimedRun:
        return ClaimedRun(
            run_id=row.run_id,
            config_id=row.config_id,
            task=row.task,
            cadence=row.cadence,
            slot=row.slot,
            attempt=row.attempt,
            backfilled=False,
            due_at=now,
            values=row.values,
            storage=row.storage,
            plugin=plugin,
            manual=True,
        )

    def _plugin(self, plugin_id: int, updated_at: datetime) -> Plugin | None:
        try:
            return self.plugins.get(plugin_id, updated_at)
        except ManifestError as exc:
            log.error("plugin %s cannot be loaded: %s", plugin_id, exc)
            return None

    def _release(self, broken: list[int], now: datetime) -> None:
        """Inside the claiming transaction: give back runs whose plugin cannot be loaded. If the
        database fails here, nothing was claimed."""
        if broken:
            self.gateway.release(self.settings.node_id, broken, Outcome.RELEASED, now)

    def _account(self, task: DueTask, decision: Decision) -> None:
        if decision.failure is not None:
            self.counts.failed += 1
            log.error(
                "config %s task %s (%s %r): cannot be scheduled, retried in %s: %s",
                task.config_id,
                task.name,
                task.cadence.value,
                task.cron,
                DECISION_RETRY,
                decision.failure,
                extra={"config_id": task.config_id, "task": task.name},
            )
            return
        self.counts.missed += decision.missed
        self.counts.coalesced += decision.coalesced
        if decision.missed:
            metrics.MISSED.labels(task.cadence.value).inc(decision.missed)
            log.warning(
                "config %s task %s: %d slot(s) older than the catch-up window recorded as missed",
                task.config_id,
                task.name,
                decision.missed,
            )
        if decision.coalesced:
            metrics.COALESCED.inc(decision.coalesced)
