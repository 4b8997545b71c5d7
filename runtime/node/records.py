"""The shapes that cross between a node and its SQL, as dataclasses.

Rows a statement returns are read into frozen dataclasses (`from_row`). Batches a statement takes
(claims, completions, storage effects) are dataclasses too, sent as one JSON array and read back
in SQL with `jsonb_to_recordset(...) AS x(<columns>)`: the column list is produced from the
dataclass's fields (`recordset_columns`), so the Python side and the SQL side cannot drift.
A statement names the list it wants with a marker, e.g. `AS d(/*columns:Claim*/)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar, Self

from runtime.schedule import TaskState
from sandbox.manifest import Cadence
from sandbox.outcome import Outcome


def sql(type_name: str, default: Any = None) -> Any:
    """A field that crosses into SQL as a `type_name` column of a recordset."""
    return field(default=default, metadata={"sql": type_name})


def recordset_columns(shape: type) -> str:
    """`name type, ...` for `jsonb_to_recordset(...) AS x(...)`, from the dataclass's fields."""
    return ", ".join(f"{f.name} {f.metadata['sql']}" for f in fields(shape) if "sql" in f.metadata)


# -- what statements take -------------------------------------------------------------------------


@dataclass
class PointerMove:
    """Where a task's pointer goes after a run (all None: it does not move)."""

    next_slot: datetime | None = sql("timestamptz")
    next_due_at: datetime | None = sql("timestamptz")
    attempt: int | None = sql("integer")


@dataclass
class Claim:
    """What a tick decided for one task: its new pointer, and the slot to run now, if any.
    With `error`, deciding failed: the failure is recorded as a run and the task waits."""

    task_id: int = sql("bigint", 0)
    run_slot: datetime | None = sql("timestamptz")
    attempt: int = sql("integer", 1)
    backfilled: bool = sql("boolean", False)
    due_at: datetime | None = sql("timestamptz")
    next_slot: datetime | None = sql("timestamptz")
    next_due_at: datetime | None = sql("timestamptz")
    coalesced: int = sql("integer", 0)
    missed_count: int = sql("integer", 0)
    missed_slots: list[datetime] = sql("timestamptz[]", None)
    offset_s: float | None = sql("double precision")
    error: dict[str, Any] | None = sql("jsonb")


@dataclass
class Completion:
    """One finished run as `complete_runs` records it. Its JSON-valued fields (error, result,
    logs) hold only what PostgreSQL can store (see runtime/node/storable.py)."""

    run_id: int = sql("bigint", 0)
    node: str = sql("text", "")
    outcome: Outcome = sql("text", Outcome.OK)
    started_at: datetime | None = sql("timestamptz")
    finished_at: datetime | None = sql("timestamptz")
    duration_ms: float | None = sql("double precision")
    error: dict[str, Any] | None = sql("jsonb")
    result: Any = sql("jsonb")
    logs: list[dict[str, str]] = sql("jsonb", None)
    next_slot: datetime | None = sql("timestamptz")
    next_due_at: datetime | None = sql("timestamptz")
    attempt: int | None = sql("integer")


@dataclass
class StorageWrite:
    run_id: int = sql("bigint", 0)
    config_id: int = sql("bigint", 0)
    key: str = sql("text", "")
    value: Any = sql("jsonb")


@dataclass
class StorageDelete:
    run_id: int = sql("bigint", 0)
    config_id: int = sql("bigint", 0)
    key: str = sql("text", "")


RECORDSETS: dict[str, type] = {
    cls.__name__: cls for cls in (Claim, Completion, StorageWrite, StorageDelete)
}


# -- what statements return ------------------------------------------------------------------------


_PLAIN, _CADENCE, _FLAG = 0, 1, 2


class Row:
    """A row a statement returns, read field by field: a field reads the column of its name (or
    the one `COLUMNS` gives), a cadence becomes a `Cadence`, a flag a bool."""

    COLUMNS: ClassVar[dict[str, str]] = {}

    @classmethod
    def _reads(cls) -> tuple[tuple[str, str, int], ...]:
        """(field, column, how to read it) for each field, worked out once per class."""
        reads: tuple[tuple[str, str, int], ...] | None = cls.__dict__.get("_READS")
        if reads is None:
            reads = tuple(
                (
                    f.name,
                    cls.COLUMNS.get(f.name, f.name),
                    _CADENCE
                    if f.type.startswith("Cadence")
                    else _FLAG
                    if f.type == "bool"
                    else _PLAIN,
                )
                for f in fields(cls)  # type: ignore[arg-type]
            )
            type.__setattr__(cls, "_READS", reads)
        return reads

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        values: dict[str, Any] = {}
        for name, column, how in cls._reads():
            value = row[column]
            if how == _CADENCE and value is not None:
                value = Cadence(value)
            elif how == _FLAG:
                value = bool(value)
            values[name] = value
        return cls(**values)


@dataclass(frozen=True)
class DueTask(Row):
    """A task `claim_due_tasks` locked for this tick."""

    COLUMNS: ClassVar[dict[str, str]] = {"values": "settings"}

    id: int
    config_id: int
    name: str
    cadence: Cadence
    cron: str
    offset_s: float
    next_slot: datetime | None
    next_due_at: datetime
    attempt: int
    plugin_id: int
    values: dict[str, Any]  # the config's values (column `settings`)
    plugin_updated_at: datetime
    time_zone: str | None = None  # the zone its slots are computed in (None: UTC)

    def state(self, attempt: int | None = None) -> TaskState:
        """What the scheduling rules need of it."""
        return TaskState(
            id=self.id,
            cadence=self.cadence,
            cron=self.cron,
            offset_s=self.offset_s,
            next_slot=self.next_slot,
            attempt=self.attempt if attempt is None else attempt,
            time_zone=self.time_zone,
        )


@dataclass(frozen=True)
class ClaimedRow(Row):
    """A run `record_claims` inserted, with its config's storage snapshot."""

    COLUMNS: ClassVar[dict[str, str]] = {"run_id": "id"}

    run_id: int
    task_id: int
    storage: dict[str, Any]


@dataclass(frozen=True)
class ManualRow(Row):
    """A queued manual run `claim_manual_runs` claimed."""

    COLUMNS: ClassVar[dict[str, str]] = {"run_id": "id", "values": "settings"}

    run_id: int
    task_id: int | None
    config_id: int
    task: str
    slot: datetime
    attempt: int
    plugin_id: int
    plugin_updated_at: datetime
    cadence: Cadence | None  # None: the task is gone (the run still runs)
    values: dict[str, Any]
    storage: dict[str, Any]


@dataclass(frozen=True)
class OrphanRun(Row):
    """A run still claimed by a node that stopped heartbeating (or by an earlier process of this
    node), with its task as it is now (`is_active`: the task still names this run)."""

    run_id: int
    node: str
    task_id: int | None
    slot: datetime
    attempt: int
    manual: bool
    cadence: Cadence | None
    cron: str | None
    offset_s: float | None
    next_slot: datetime | None
    task_attempt: int | None
    is_active: bool
    time_zone: str | None = None


@dataclass(frozen=True)
class PluginCode(Row):
    id: int
    manifest: dict[str, Any]
    source: str
    updated_at: datetime


@dataclass(frozen=True)
class Pruned:
    runs: int
    logs: int
    statements: int
