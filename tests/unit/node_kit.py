"""What the node's unit tests share: a fixed clock, settings, a plugin, a memory gateway."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from runtime.node.claim import ClaimDuty
from runtime.node.plugins import PluginCache
from runtime.node.record import RecordDuty
from runtime.node.runs import ClaimedRun, Finished, Ledger
from runtime.node.settings import NodeSettings
from runtime.testing.memory_gateway import MemoryGateway
from sandbox.manifest import Cadence, load_plugin
from sandbox.outcome import ErrorInfo, LogLine, Outcome, RunReport

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
T0 = datetime(2026, 11, 27, 10, 0, 30, tzinfo=UTC)


class FixedClock:
    """A scheduler clock that moves only when told."""

    scale = 1.0

    def __init__(self, now: datetime = T0) -> None:
        self.t = now

    def now(self) -> datetime:
        return self.t

    def real_seconds_until(self, when: datetime) -> float:
        return (when - self.t).total_seconds()

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


@dataclass
class Kit:
    gateway: MemoryGateway = field(default_factory=MemoryGateway)
    clock: FixedClock = field(default_factory=FixedClock)
    settings: NodeSettings = field(
        default_factory=lambda: NodeSettings(node_id="node-a", quarantine_after=3)
    )
    ledger: Ledger = field(default_factory=Ledger)
    handed: list[ClaimedRun] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.plugin = load_plugin(PLUGINS / "tiny")
        self.plugin_id = self.gateway.add_plugin(self.plugin, T0)

    def config(self, **values: Any) -> int:
        return self.gateway.add_config(self.plugin_id, {"api_key": "k", **values})

    def task(
        self, config_id: int, cadence: Cadence = Cadence.MINUTE, cron: str = "* * * * *", **kw: Any
    ) -> int:
        name = {"minute": "run_every_minute", "hour": "run_every_hour"}.get(cadence.value, "custom")
        return self.gateway.add_task(config_id, kw.pop("name", name), cadence, cron, **kw)

    def claim(self) -> ClaimDuty:
        return ClaimDuty(
            self.gateway,
            self.clock,  # type: ignore[arg-type]
            self.settings,
            PluginCache(self.gateway),
            self.ledger,
            self.handed.extend,
        )

    def record(self) -> RecordDuty:
        return RecordDuty(self.gateway, self.clock, self.settings, self.ledger)  # type: ignore[arg-type]


def report(outcome: Outcome = Outcome.OK, **kw: Any) -> RunReport:
    if outcome is not Outcome.OK and "error" not in kw:
        kw["error"] = ErrorInfo("Boom", "it failed")
    kw.setdefault("logs", [LogLine("info", "hello")])
    return RunReport(outcome=outcome, duration_ms=5.0, **kw)


def finished(run: ClaimedRun, rep: RunReport, at: datetime) -> Finished:
    return Finished(run, rep, at, at + timedelta(milliseconds=5))
