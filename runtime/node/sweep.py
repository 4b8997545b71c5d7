"""The sweep duty: runs still claimed by nodes that stopped heartbeating (or left by an earlier
process of this node) are recorded as `lost` and their tasks freed. A lost hourly, daily or cron
run is a failed attempt whose retry is due at once (it did not fail: its node did)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from runtime.clock import Clock
from runtime.node.gateway import Gateway
from runtime.node.record import pointer_after
from runtime.node.records import Completion, OrphanRun, PointerMove
from runtime.node.runs import Ledger
from runtime.node.settings import NodeSettings
from runtime.schedule import TaskState
from sandbox.outcome import Outcome

log = logging.getLogger("plugin_runtime.node.sweep")


@dataclass
class SweepDuty:
    gateway: Gateway
    clock: Clock
    settings: NodeSettings
    ledger: Ledger  # the runs this node still holds: never recovered from under it

    def sweep(self) -> int:
        """Recover orphaned runs; returns how many."""
        now = self.clock.now()
        node_id = self.settings.node_id
        with self.gateway.transaction():
            # The runs this node holds are left out by the statement (not locked, not sent),
            # and, whatever a gateway returns, never recovered from under it.
            held = self.ledger.ids()
            orphans = [
                row
                for row in self.gateway.orphan_runs(node_id, self.settings.dead_after_s, held)
                if not (row.node == node_id and row.run_id in self.ledger)
            ]
            if not orphans:
                return 0
            lost = [self._lost(row, now) for row in orphans]
            self.gateway.complete(lost, [], [], 0)
            self.gateway.mark_dead_nodes(self.settings.dead_after_s)
        log.warning("recovered %d run(s) of dead node(s)", len(orphans))
        return len(orphans)

    def _lost(self, row: OrphanRun, now: datetime) -> Completion:
        pointer = PointerMove()
        if row.is_active and row.cadence is not None and row.task_id is not None:
            task = TaskState(
                id=row.task_id,
                cadence=row.cadence,
                cron=row.cron or "",
                offset_s=row.offset_s or 0.0,
                next_slot=row.next_slot,
                attempt=row.task_attempt or 1,
                active=True,
                time_zone=row.time_zone,
            )
            try:
                pointer = pointer_after(
                    task,
                    row.slot,
                    row.attempt,
                    False,
                    now,
                    self.settings.policy,
                    retry_at_once=True,
                )
            except Exception as exc:  # its schedule cannot be computed: free the task as it is
                log.error("run %s: where its task goes next cannot be decided: %s", row.run_id, exc)
        why = (
            "an earlier process of this node died"
            if row.node == self.settings.node_id
            else f"node {row.node} stopped heartbeating"
        )
        return Completion(
            run_id=row.run_id,
            node=row.node,
            outcome=Outcome.LOST,
            finished_at=now,
            error={"type": "Lost", "message": why, "traceback": []},
            result=None,
            logs=[],
            next_slot=pointer.next_slot,
            next_due_at=pointer.next_due_at,
            attempt=pointer.attempt,
        )
