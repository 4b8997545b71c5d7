"""A run as the node holds it, from its claim to its record.

`ClaimedRun` is what the dispatcher needs to start it (and nothing of the task's pointer);
`Ledger` is the node's own account of the runs it owns, by database id: what the claim left the
task at (for the completion to move the pointer from), until the run is recorded or released.
The sweep asks the ledger which claimed runs this node still really holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runtime.metrics import MANUAL
from runtime.schedule import TaskState
from runtime.text import Masker, secret_values
from sandbox.manifest import Cadence, Plugin
from sandbox.outcome import RunReport


@dataclass
class ClaimedRun:
    """A run this node owns and will start at `due_at` (scheduler time)."""

    run_id: int  # the `runs` row's id
    config_id: int
    task: str
    cadence: Cadence | None  # None: a manual run of a task no longer scheduled
    slot: datetime
    attempt: int
    backfilled: bool
    due_at: datetime
    values: dict[str, Any]  # the config's values, as the plugin sees them
    storage: dict[str, Any]
    plugin: Plugin
    offset_s: float = 0.0
    manual: bool = False
    # The masker of `_masker_values` (the values it was built from): built once per run, again
    # only if the run's values are replaced (a config changed while the run was held).
    _masker: Masker | None = field(default=None, init=False, repr=False, compare=False)
    _masker_values: dict[str, Any] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def masker(self) -> Masker:
        """Masks this config's secret values in what its run printed, raised and returned
        (runtime.text: the database and the node's log never hold them)."""
        if self._masker is None or self._masker_values is not self.values:
            schema = self.plugin.manifest.config_schema
            secrets = secret_values({k: f.secret for k, f in schema.items()}, self.values)
            self._masker, self._masker_values = Masker(secrets), self.values
        return self._masker

    @property
    def label(self) -> str:
        """The cadence label of metrics and logs (one of `metrics.CADENCE_LABELS`)."""
        return MANUAL if self.manual or self.cadence is None else self.cadence.value


@dataclass(frozen=True)
class Started:
    """Handed over by the dispatcher when it starts a run."""

    run: ClaimedRun
    started_at: datetime


@dataclass(frozen=True)
class Finished:
    """Handed over by the sandbox's callback when a run ends."""

    run: ClaimedRun
    report: RunReport
    started_at: datetime
    finished_at: datetime


@dataclass(frozen=True)
class Owned:
    """What the ledger keeps of a run: the task as the claim left it (None: a manual run)."""

    config_id: int
    task: TaskState | None


@dataclass
class Ledger:
    """The runs this node has claimed and not yet recorded or released. Touched on the node's
    thread only."""

    runs: dict[int, Owned] = field(default_factory=dict)

    def own(self, run_id: int, owned: Owned) -> None:
        self.runs[run_id] = owned

    def get(self, run_id: int) -> Owned | None:
        return self.runs.get(run_id)

    def forget(self, run_ids: list[int] | set[int]) -> None:
        for run_id in run_ids:
            self.runs.pop(run_id, None)

    def ids(self) -> list[int]:
        return list(self.runs)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self.runs

    def __len__(self) -> int:
        return len(self.runs)
