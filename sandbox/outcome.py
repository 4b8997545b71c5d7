"""What a run asks for and what it ends in. Plain data; JSON in and out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from sandbox.manifest import Limits, Plugin


class Outcome(StrEnum):
    """How a run ended: the one vocabulary of the sandbox, the runtime, the database (a CHECK
    constraint holds `runs.outcome` to these values) and every command."""

    # What the sandbox reports.
    OK = "ok"
    ERROR = "error"  # the plugin raised
    TIMEOUT = "timeout"
    CPU_LIMIT = "cpu_limit"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    CRASHED = "crashed"
    BAD_PLUGIN = "bad_plugin"
    # What the runtime's bookkeeping records for runs that did not end in the sandbox.
    MISSED = "missed"  # slot older than the catch-up window, never run
    LOST = "lost"  # its node died while it was claimed
    CANCELLED = "cancelled"  # its config was disabled before it started
    RELEASED = "released"  # given back unstarted (shutdown, plugin that cannot be loaded)
    DUPLICATE = "duplicate"  # a second success for a slot that already had one

    @property
    def failed(self) -> bool:
        """Counts against the config (failure streaks, quarantine, `failed` in status)."""
        return self in FAILURES

    @property
    def killed(self) -> bool:
        """Ended by a limit of the sandbox."""
        return self in KILLS


# What a sandbox run can end in (`plugin-runtime run`, the pytest kit).
SANDBOX_OUTCOMES = (
    Outcome.OK,
    Outcome.ERROR,
    Outcome.TIMEOUT,
    Outcome.CPU_LIMIT,
    Outcome.MEMORY_LIMIT,
    Outcome.OUTPUT_LIMIT,
    Outcome.CRASHED,
    Outcome.BAD_PLUGIN,
)
KILLS = frozenset(
    {
        Outcome.TIMEOUT,
        Outcome.CPU_LIMIT,
        Outcome.MEMORY_LIMIT,
        Outcome.OUTPUT_LIMIT,
        Outcome.CRASHED,
    }
)
# A run of the plugin that did not succeed: every sandbox outcome but ok. Bookkeeping outcomes
# (missed, lost, cancelled, released, duplicate) are not the plugin's failures.
FAILURES = frozenset(SANDBOX_OUTCOMES) - {Outcome.OK}

# Defaults and operator caps (docs/scheduling.md, "Limits of a run"): a plugin may ask for less, or more up to the caps.
DEFAULT_LIMITS = Limits(timeout_s=30.0, cpu_s=30.0, memory_mb=256)


def resolve_limits(
    asked: Limits, *, defaults: Limits = DEFAULT_LIMITS, caps: Limits = DEFAULT_LIMITS
) -> Limits:
    """The limits a run gets: what the plugin (or the caller) asked for, else the default,
    never above the operator's cap."""

    def pick(name: str) -> Any:
        value = getattr(asked, name)
        if value is None:
            value = getattr(defaults, name)
        cap = getattr(caps, name)
        return min(value, cap) if cap is not None else value

    return Limits(timeout_s=pick("timeout_s"), cpu_s=pick("cpu_s"), memory_mb=pick("memory_mb"))


def lowered_limits(asked: Limits, caps: Limits = DEFAULT_LIMITS) -> list[tuple[str, Any, Any]]:
    """(name, asked, cap) for each limit asked above its cap: the run gets the cap instead."""
    out = []
    for name in ("timeout_s", "cpu_s", "memory_mb"):
        value, cap = getattr(asked, name), getattr(caps, name)
        if value is not None and cap is not None and value > cap:
            out.append((name, value, cap))
    return out


@dataclass
class RunInfo:
    """`meta.run` as the plugin sees it."""

    config_id: Any = None
    task: str = ""
    slot: str | None = None  # ISO 8601 UTC, the nominal time this run is for
    attempt: int = 1
    backfilled: bool = False
    run_id: Any = None


@dataclass
class RunRequest:
    plugin: Plugin
    task: str
    config: dict[str, Any] = field(default_factory=dict)
    storage: dict[str, Any] = field(default_factory=dict)
    limits: Limits = DEFAULT_LIMITS  # fully resolved (see resolve_limits)
    run: RunInfo = field(default_factory=RunInfo)
    # Test-only: run this source as plain, *unrestricted* Python inside the jailed child
    # (only honoured by a Sandbox started with allow_unrestricted=True).
    unrestricted_source: str | None = None

    @property
    def scope(self) -> Any:
        """Whose cache and fetch budget this run uses: its config, else (no config id, as under
        `plugin-runtime run`) its plugin."""
        return self.run.config_id if self.run.config_id is not None else self.plugin.name


@dataclass
class LogLine:
    level: str
    message: str


@dataclass
class ErrorInfo:
    type: str
    message: str
    traceback: list[str] = field(default_factory=list)


@dataclass
class RunReport:
    """Everything the sandbox reports of one run."""

    outcome: Outcome
    duration_ms: float = 0.0
    logs: list[LogLine] = field(default_factory=list)
    error: ErrorInfo | None = None
    result: Any = None
    # The run's storage effect, applied by the caller only when outcome == "ok".
    storage_writes: dict[str, Any] = field(default_factory=dict)
    storage_deletes: list[str] = field(default_factory=list)
    fetch_calls: list[dict[str, Any]] = field(default_factory=list)
    cpu_ms: float = 0.0
    max_rss_kb: int = 0
    signal: int | None = None  # the signal that ended the child, if one did
    layers: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.OK

    def apply_to(self, storage: dict[str, Any]) -> dict[str, Any]:
        """Storage after this run: its writes on success, unchanged otherwise."""
        if not self.ok:
            return dict(storage)
        after = {k: v for k, v in storage.items() if k not in self.storage_deletes}
        after.update(self.storage_writes)
        return after

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
