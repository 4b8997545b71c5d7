"""The retention duty: old runs and log lines go, in small batches, a bounded number per pass,
so that scheduling is never held up for long (runtime/retention.py has the rule)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from runtime.clock import Clock
from runtime.node.gateway import Gateway
from runtime.node.records import Pruned
from runtime.node.settings import NodeSettings

log = logging.getLogger("plugin_runtime.node.retention")

BATCHES_PER_PASS = 20


@dataclass
class RetentionDuty:
    gateway: Gateway
    clock: Clock
    settings: NodeSettings

    def prune(self) -> Pruned:
        done = self.gateway.prune(
            self.settings.runs_retention_days,
            self.settings.logs_retention_days,
            BATCHES_PER_PASS,
            now=self.clock.now(),  # run ages are scheduler time (a test clock may start anywhere)
        )
        if done.runs or done.logs:
            log.info("retention: pruned %s run(s) and %s log line(s)", done.runs, done.logs)
        return done
