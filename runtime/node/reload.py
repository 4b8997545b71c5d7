"""The reload duty: act on what the listener heard, without a restart. A config that may no
longer run has its held runs cancelled at once; changed configs get their tasks synced (and a
tick follows at once, so they are scheduled within seconds) and their held runs the new values;
manual triggers are claimed. A reconnect of the listener, and a periodic timer, reconcile in
case a notification was lost."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from runtime.clock import Clock
from runtime.node.dispatch import Dispatcher
from runtime.node.gateway import Gateway
from runtime.node.listener import Change
from runtime.node.runs import Ledger
from runtime.node.settings import NodeSettings
from runtime.quarantine_watch import QuarantineWatch
from sandbox.outcome import Outcome

log = logging.getLogger("plugin_runtime.node.reload")


@dataclass
class ReloadDuty:
    gateway: Gateway
    clock: Clock
    settings: NodeSettings
    heard: Callable[[], list[Change]]  # the listener's drain
    dispatcher: Dispatcher
    ledger: Ledger
    claim_manual: Callable[[], None]
    quarantine: QuarantineWatch = field(default_factory=QuarantineWatch)

    def reconcile(self) -> None:
        self.gateway.reconcile_tasks()
        self.claim_manual()

    def handle(self) -> bool:
        """Apply what was heard; True when a tick should follow at once."""
        changes = self.heard()
        if not changes:
            return False
        sync: set[int] = set()
        manual = False
        watch = False
        for change in changes:
            if change.channel == "plugin_runtime_trigger":
                manual = True
            elif change.channel == "reconnected":
                self.reconcile()
                watch = True
            elif change.payload.get("table") == "plugin_configs":
                watch = True
                try:
                    config_id = int(change.payload["id"])
                except (KeyError, TypeError, ValueError):
                    log.warning("ignored a change notification without a config id: %r", change)
                    continue
                if not change.payload.get("runnable", False):
                    self._cancel_held(config_id)
                if change.payload.get("op") != "DELETE":
                    sync.add(config_id)
        if sync:
            self.gateway.sync_tasks(sorted(sync))
            changed_held = sorted(sync & self.dispatcher.held_configs())
            if changed_held:
                for config_id, values in self.gateway.config_values(changed_held).items():
                    self.dispatcher.update_values(config_id, values)
        if manual:
            self.claim_manual()
        if watch:
            self._watch_quarantine()
        return bool(sync)

    def _watch_quarantine(self) -> None:
        """Log configs quarantined or released since the last look (quarantine_watch.py)."""
        quarantined = self.gateway.quarantined_configs()
        released = self.quarantine.released(quarantined)
        enabled = self.gateway.configs_enabled(released) if released else {}
        self.quarantine.observe(quarantined, enabled)

    def _cancel_held(self, config_id: int) -> None:
        held = [run.run_id for run in self.dispatcher.take_held(config_id)]
        if not held:
            return
        try:
            self.gateway.release(self.settings.node_id, held, Outcome.CANCELLED, self.clock.now())
        finally:
            # Released, or (if that failed) left to the sweep: this node no longer holds them.
            self.ledger.forget(held)
        log.info("config %s disabled: %d held run(s) cancelled", config_id, len(held))
