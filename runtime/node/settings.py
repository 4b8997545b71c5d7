"""A node's settings (what `serve`'s flags set). A config's own values are not settings: they are
`values` everywhere in the node's code."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from runtime.schedule import SchedulePolicy
from sandbox.manifest import Limits
from sandbox.outcome import DEFAULT_LIMITS
from sandbox.services import IPNetwork

# Real seconds without a heartbeat after which a node is dead: its claimed runs are recorded as
# lost and its tasks freed (the sweep), and `status`/`doctor` show it dead. `serve --dead-after`
# and `status --dead-after` override it.
DEAD_AFTER_S = 20.0
MIN_REAL_INTERVAL_S = 0.2


@dataclass
class NodeSettings:
    node_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    concurrency: int = 32
    capabilities: tuple[str, ...] = ("scheduledTasks",)
    # Intervals are in seconds of the scheduler clock (a fast test clock shortens them in real
    # time, so the database cost per run does not depend on the time scale); never below
    # MIN_REAL_INTERVAL_S of real time.
    tick_interval_s: float = 10.0
    lookahead_s: float = 11.0
    flush_interval_s: float = 10.0
    flush_batch: int = 500
    sweep_interval_s: float = 15.0
    dead_after_s: float = DEAD_AFTER_S  # real seconds
    reconcile_interval_s: float = 60.0
    # LISTEN/NOTIFY: a direct connection for LISTEN alone (behind a pooler in transaction mode
    # the main URL cannot carry it), or none at all (`listen` False: reconcile only).
    listen_database_url: str | None = None
    listen: bool = True
    claim_limit: int = 5000
    quarantine_after: int = 10  # consecutive failures before quarantine; 0: never
    runs_retention_days: float | None = 30.0  # None: keep forever
    logs_retention_days: float | None = 7.0
    prune_interval_s: float = 3600.0  # real seconds between retention passes
    drain_timeout_s: float = 60.0
    caps: Limits = DEFAULT_LIMITS
    policy: SchedulePolicy = field(default_factory=SchedulePolicy)
    # Networks meta.fetch may reach although they are not public (`serve --allow-networks`).
    allow_networks: tuple[IPNetwork, ...] = ()

    @property
    def schedules(self) -> bool:
        """Whether this node claims scheduled tasks (else it only heartbeats and runs triggers)."""
        return "scheduledTasks" in self.capabilities
