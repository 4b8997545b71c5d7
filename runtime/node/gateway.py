"""The node's one way to the database.

Every statement a node sends goes through `_Session._send_counted`: on the work connection
(`PgGateway`) and on the listener's own (`PgListenerGateway`, from `PgGateway.listener`: LISTEN
needs a session of its own, possibly on another URL). It is counted there (the node's database
budget, a small fraction of a statement per run, is held to by a test and by
`python -m bench dbcost`), driver errors are translated there into the project's own
(`DatabaseUnavailable`, `Refused`, `Conflict`, `DatabaseError`), and every method returns typed
rows (runtime/node/records.py). `Gateway` and `ListenerGateway` are the interfaces the node's
duties and its listener are written against; `runtime.testing.memory_gateway` implements both
in memory for unit tests.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import Enum
from functools import cache
from typing import Any, Protocol

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from runtime import retention, store
from runtime.db import (
    Conflict,
    DatabaseError,
    DatabaseUnavailable,
    Refused,
    connect,
    describe_location,
)
from runtime.jsonable import iso_utc
from runtime.migrate import migrate
from runtime.node.records import (
    RECORDSETS,
    Claim,
    ClaimedRow,
    Completion,
    DueTask,
    ManualRow,
    OrphanRun,
    PluginCode,
    Pruned,
    StorageDelete,
    StorageWrite,
    recordset_columns,
)
from runtime.queries import query
from sandbox.outcome import FAILURES, Outcome


@dataclass(frozen=True)
class Registration:
    """What a node tells the fleet about itself when it (re)connects."""

    node_id: str
    hostname: str
    pid: int
    capabilities: tuple[str, ...]
    layers: Mapping[str, bool]
    concurrency: int
    posture: str = ""
    posture_reason: str = ""
    layer_reasons: Mapping[str, str] = field(default_factory=dict)


# The channels a node listens on (the triggers of migration 0001 NOTIFY them), and the one
# the listener probes itself on (runtime/node/listener.py).
CHANNELS = ("plugin_runtime_changes", "plugin_runtime_trigger")
PROBE_CHANNEL = "plugin_runtime_probe"


@dataclass(frozen=True)
class Notification:
    """A NOTIFY heard on a listened channel."""

    channel: str
    payload: str


class ListenerGateway(Protocol):
    """The listener's own session. Methods raise only the errors of runtime/db.py."""

    statements: int
    where: str  # the server it listens on, for messages (no password)

    def open(self) -> None: ...
    def listen(self) -> None:
        """LISTEN on CHANNELS."""
        ...

    def probe(self, token: str) -> None:
        """LISTEN on PROBE_CHANNEL, and NOTIFY `token` there from a second connection."""
        ...

    def notifications(
        self, timeout: float, stop_after: int | None = None
    ) -> Iterator[Notification]: ...
    def unlisten(self) -> None: ...
    def close(self) -> None: ...


class Gateway(Protocol):
    """What a node asks of the database. Methods raise only the errors of runtime/db.py."""

    statements: int

    def listener(self, url: str | None = None) -> ListenerGateway:
        """A session for the listener, to `url` (default: the gateway's own database)."""
        ...

    @property
    def connected(self) -> bool: ...
    def open(self, registration: Registration) -> None: ...
    def close(self) -> None: ...
    def transaction(self) -> AbstractContextManager[None]: ...
    def due_tasks(
        self, node_id: str, horizon: datetime, limit: int, stats: Mapping[str, Any]
    ) -> list[DueTask]: ...
    def record_claims(
        self, node_id: str, claims: Sequence[Claim], now: datetime
    ) -> list[ClaimedRow]: ...
    def claim_manual(self, node_id: str, limit: int) -> list[ManualRow]: ...
    def complete(
        self,
        completions: Sequence[Completion],
        writes: Sequence[StorageWrite],
        deletes: Sequence[StorageDelete],
        quarantine_after: int,
    ) -> None: ...
    def release(
        self, node_id: str, run_ids: Sequence[int], outcome: Outcome, now: datetime
    ) -> None: ...
    def orphan_runs(
        self, node_id: str, dead_after_s: float, held: Collection[int] = ()
    ) -> list[OrphanRun]: ...
    def mark_dead_nodes(self, dead_after_s: float) -> None: ...
    def stop_node(self, node_id: str) -> None: ...
    def plugin_code(self, plugin_id: int) -> PluginCode | None: ...
    def sync_tasks(self, config_ids: Sequence[int] | None) -> None: ...
    def reconcile_tasks(self) -> None: ...
    def config_values(self, config_ids: Sequence[int]) -> dict[int, dict[str, Any]]: ...
    def prune(
        self, runs_days: float | None, logs_days: float | None, max_batches: int, now: datetime
    ) -> Pruned: ...
    def quarantined_configs(self) -> list[dict[str, Any]]: ...
    def configs_enabled(self, config_ids: Sequence[int]) -> dict[int, bool]: ...


# Tasks inserted by one reconcile from which the claim's tables are analysed at once (configs
# added in bulk by SQL, e.g. a migration from another scheduler), not a minute later by autovacuum.
ANALYZE_AFTER_TASKS = 1000


@cache
def _statement(name: str) -> str:
    """The named query, with its recordset column lists filled in from the dataclasses."""
    text = query(name)
    for shape_name, shape in RECORDSETS.items():
        text = text.replace(f"/*columns:{shape_name}*/", recordset_columns(shape))
    failures = ", ".join(f"'{outcome.value}'" for outcome in sorted(FAILURES))
    return text.replace("/*outcomes:FAILURES*/", failures)


@dataclass(frozen=True)
class _Shape:
    """What `recordset_json` needs of a dataclass, worked out once per class."""

    names: tuple[str, ...]  # every field, in order
    times: tuple[str, ...]  # `timestamptz` fields
    time_lists: tuple[str, ...]  # `timestamptz[]` fields


_SHAPES: dict[type, _Shape] = {}


def _shape(cls: type) -> _Shape:
    shape = _SHAPES.get(cls)
    if shape is None:
        shape = _SHAPES[cls] = _Shape(
            names=tuple(f.name for f in fields(cls)),
            times=tuple(f.name for f in fields(cls) if f.metadata.get("sql") == "timestamptz"),
            time_lists=tuple(
                f.name for f in fields(cls) if f.metadata.get("sql") == "timestamptz[]"
            ),
        )
    return shape


def _timestamp(value: datetime) -> str:
    """A time as text PostgreSQL reads as the same instant: ISO 8601 with its UTC offset
    (`isoformat`, several times cheaper than converting to UTC first); a naive time is UTC."""
    return value.isoformat() if value.tzinfo is not None else iso_utc(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _timestamp(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


_ENCODE = json.JSONEncoder(default=_json_default, allow_nan=False).encode


def recordset_json(items: Sequence[Any]) -> str:
    """A batch of dataclasses as the JSON array `jsonb_to_recordset` reads. ValueError or
    TypeError when a value cannot be encoded (the caller's data is refused). The time fields
    are written as text here, so the encoder calls back only for a time found elsewhere."""
    if not items:
        return "[]"
    shape = _shape(type(items[0]))
    rows = []
    for item in items:
        row = {name: getattr(item, name) for name in shape.names}
        for name in shape.times:
            value = row[name]
            if isinstance(value, datetime):
                row[name] = _timestamp(value)
        for name in shape.time_lists:
            values = row[name]
            if isinstance(values, list):
                row[name] = [_timestamp(v) if isinstance(v, datetime) else v for v in values]
        rows.append(row)
    return _ENCODE(rows)


def _param(value: Any) -> Any:
    # psycopg dumps a Python Enum by its name; the database speaks the values.
    return value.value if isinstance(value, Enum) else value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Session:
    """One autocommit psycopg connection, owned by one thread: where statements are sent,
    counted and their driver errors translated."""

    def __init__(self, url: str, application_name: str) -> None:
        self.url = url
        self.application_name = application_name
        self.statements = 0
        self._conn: psycopg.Connection[DictRow] | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def _open(self) -> None:
        if not self.connected:
            self._conn = connect(self.url, application_name=self.application_name)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def _connection(self) -> psycopg.Connection[DictRow]:
        if self._conn is None or self._conn.closed:
            raise DatabaseUnavailable("not connected")
        return self._conn

    # -- the one place statements are sent ---------------------------------------------------------
    def _send(self, name: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        rows, _ = self._send_counted(name, params)
        return rows

    def _send_counted(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        conn: psycopg.Connection[DictRow] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Rows (if the statement returns any) and the number of rows it touched (on `conn`,
        by default the session's own connection)."""
        conn = conn or self._connection()
        values = {key: _param(value) for key, value in (params or {}).items()}
        self.statements += 1
        try:
            cur = conn.execute(_statement(name), values)
            rows = list(cur.fetchall()) if cur.description else []
            return rows, max(cur.rowcount, 0)
        except psycopg.Error as exc:
            raise self._translate(exc) from exc
        except (UnicodeError, ValueError, TypeError) as exc:  # psycopg could not encode a value
            raise Refused(f"{name}: {_first_line(exc)}") from exc

    @staticmethod
    def _translate(exc: psycopg.Error) -> DatabaseError:
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return DatabaseUnavailable(_first_line(exc))
        if isinstance(exc, psycopg.errors.UniqueViolation):
            return Conflict(_first_line(exc))
        if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
            return Refused(_first_line(exc))
        return DatabaseError(_first_line(exc))


class PgListenerGateway(_Session):
    """The listener's session: LISTEN, the probe, and the notifications that arrive. Owned by
    the listener's thread."""

    def __init__(self, url: str, *, application_name: str = "plugin-runtime listener") -> None:
        super().__init__(url, application_name)
        self.where = describe_location(url)

    def open(self) -> None:
        self._open()

    def listen(self) -> None:
        for name in ("listen_changes", "listen_trigger"):
            self._send(name)

    def probe(self, token: str) -> None:
        self._send("listen_probe")
        with connect(self.url, application_name=f"{self.application_name} probe") as other:
            self._send_counted("notify_probe", {"channel": PROBE_CHANNEL, "token": token}, other)

    def notifications(
        self, timeout: float, stop_after: int | None = None
    ) -> Iterator[Notification]:
        conn = self._connection()
        try:
            for note in conn.notifies(timeout=timeout, stop_after=stop_after):
                yield Notification(note.channel, note.payload)
        except psycopg.Error as exc:
            raise self._translate(exc) from exc

    def unlisten(self) -> None:
        self._send("unlisten_all")


class PgGateway(_Session):
    """The gateway over one autocommit psycopg connection, owned by the node's thread."""

    def __init__(self, url: str, *, application_name: str = "plugin-runtime") -> None:
        super().__init__(url, application_name)

    def listener(self, url: str | None = None) -> PgListenerGateway:
        return PgListenerGateway(
            url or self.url, application_name=f"{self.application_name} listener"
        )

    # -- connection ---------------------------------------------------------------------------
    def open(self, registration: Registration) -> None:
        """Connect (if not connected), apply migrations, and register the node."""
        if self.connected:
            return
        try:
            self._open()
            assert self._conn is not None
            migrate(self._conn)
        except psycopg.Error as exc:
            self.close()
            raise DatabaseUnavailable(_first_line(exc)) from exc
        except DatabaseUnavailable:
            self.close()
            raise
        self._send(
            "register_node",
            {
                "id": registration.node_id,
                "hostname": registration.hostname,
                "pid": registration.pid,
                "capabilities": list(registration.capabilities),
                "layers": Jsonb(dict(registration.layers)),
                "concurrency": registration.concurrency,
                "posture": registration.posture,
                "posture_reason": registration.posture_reason,
                "layer_reasons": Jsonb(dict(registration.layer_reasons)),
            },
        )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        conn = self._connection()
        try:
            with conn.transaction():
                yield
        except psycopg.Error as exc:  # raised by COMMIT or ROLLBACK themselves
            raise self._translate(exc) from exc

    @staticmethod
    def _recordset(name: str, items: Sequence[Any]) -> str:
        try:
            return recordset_json(items)
        except (ValueError, TypeError, RecursionError) as exc:
            raise Refused(f"{name}: {_first_line(exc)}") from exc

    # -- claims -----------------------------------------------------------------------------------
    def due_tasks(
        self, node_id: str, horizon: datetime, limit: int, stats: Mapping[str, Any]
    ) -> list[DueTask]:
        """Lock due tasks (inside the caller's transaction) and heartbeat."""
        rows = self._send(
            "claim_due_tasks",
            {"node": node_id, "horizon": horizon, "limit": limit, "stats": Jsonb(dict(stats))},
        )
        return [DueTask.from_row(row) for row in rows]

    def record_claims(
        self, node_id: str, claims: Sequence[Claim], now: datetime
    ) -> list[ClaimedRow]:
        rows = self._send(
            "record_claims",
            {"node": node_id, "now": now, "claims": self._recordset("record_claims", claims)},
        )
        return [ClaimedRow.from_row(row) for row in rows]

    def claim_manual(self, node_id: str, limit: int) -> list[ManualRow]:
        rows = self._send("claim_manual_runs", {"node": node_id, "limit": limit})
        return [ManualRow.from_row(row) for row in rows]

    # -- completions ------------------------------------------------------------------------------
    def complete(
        self,
        completions: Sequence[Completion],
        writes: Sequence[StorageWrite],
        deletes: Sequence[StorageDelete],
        quarantine_after: int,
    ) -> None:
        self._send(
            "complete_runs",
            {
                "runs": self._recordset("complete_runs", completions),
                "writes": self._recordset("complete_runs", writes),
                "deletes": self._recordset("complete_runs", deletes),
                "quarantine_after": quarantine_after,
            },
        )

    def release(
        self, node_id: str, run_ids: Sequence[int], outcome: Outcome, now: datetime
    ) -> None:
        if run_ids:
            self._send(
                "release_runs",
                {"run_ids": list(run_ids), "outcome": outcome, "node": node_id, "now": now},
            )

    # -- fleet ------------------------------------------------------------------------------------
    def orphan_runs(
        self, node_id: str, dead_after_s: float, held: Collection[int] = ()
    ) -> list[OrphanRun]:
        """Runs of dead nodes, and the runs claimed under this node's id that it does not hold
        (`held`, its ledger): left by an earlier process with the same id, or by a claim whose
        commit was lost."""
        rows = self._send(
            "runs_of_dead_nodes",
            {"dead_after_s": dead_after_s, "own_node": node_id, "held": list(held)},
        )
        return [OrphanRun.from_row(row) for row in rows]

    def mark_dead_nodes(self, dead_after_s: float) -> None:
        self._send("mark_dead_nodes", {"dead_after_s": dead_after_s})

    def stop_node(self, node_id: str) -> None:
        self._send("stop_node", {"id": node_id})

    def plugin_code(self, plugin_id: int) -> PluginCode | None:
        rows = self._send("get_plugin_code", {"id": plugin_id})
        return PluginCode.from_row(rows[0]) if rows else None

    # -- reload -----------------------------------------------------------------------------------
    def sync_tasks(self, config_ids: Sequence[int] | None) -> None:
        params = {"config_ids": list(config_ids) if config_ids is not None else None}
        with self.transaction():
            for name in store.SYNC_TASKS_STATEMENTS:
                self._send(name, params)

    def reconcile_tasks(self) -> None:
        """Every config's tasks: the missing ones inserted, and the daily and cron ones whose
        time zone is no longer their config's (changed in psql while no notification was
        heard) re-initialised; after a bulk insert, the claim's tables analysed."""
        with self.transaction():
            self._send("sync_tasks_zones")
            _, inserted = self._send_counted("sync_tasks_insert", {"config_ids": None})
        if inserted >= ANALYZE_AFTER_TASKS:
            self._send("analyze_scheduling")

    def config_values(self, config_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        rows = self._send("config_settings", {"ids": list(config_ids)})
        return {int(row["id"]): row["settings"] for row in rows}

    def quarantined_configs(self) -> list[dict[str, Any]]:
        """Every quarantined config: id, quarantine_reason, enabled (quarantine_watch.py)."""
        return self._send("quarantined_configs")

    def configs_enabled(self, config_ids: Sequence[int]) -> dict[int, bool]:
        rows = self._send("configs_enabled", {"ids": list(config_ids)})
        return {int(row["id"]): bool(row["enabled"]) for row in rows}

    # -- retention --------------------------------------------------------------------------------
    def prune(
        self, runs_days: float | None, logs_days: float | None, max_batches: int, now: datetime
    ) -> Pruned:
        done = retention.prune(
            lambda name, params: self._send_counted(name, params)[1],
            runs_days,
            logs_days,
            max_batches=max_batches,
            now=now,
        )
        return Pruned(runs=done["runs"], logs=done["logs"], statements=done["statements"])
