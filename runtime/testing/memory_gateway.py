"""`MemoryGateway`: the node's database gateway (runtime/node/gateway.py) in memory, for unit
tests of the node's duties without PostgreSQL — as Procrastinate's `InMemoryConnector` lets its
worker be tested. It keeps the rules of the real statements that the duties rely on (which tasks
are due, what a claim, a completion, a release or a sweep writes), refuses what PostgreSQL would
refuse (data that does not encode, NUL and lone surrogates), counts statements the same way,
and can be told to fail: `fail_next("complete", DatabaseUnavailable("down"))`.

`MemoryListenerGateway` is the listener's session in memory (`MemoryGateway.listener()`): a test
NOTIFYs through it what the database's triggers would, and can make it deaf (a pooler in
transaction mode) or lose its connection.

The integration tests (tests/integration/) hold the real statements to the same behaviour.
"""

from __future__ import annotations

import copy
import queue
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runtime.db import DatabaseUnavailable, Refused
from runtime.node import records as rec
from runtime.node.gateway import (
    CHANNELS,
    PROBE_CHANNEL,
    Notification,
    Registration,
    recordset_json,
)
from sandbox.manifest import Cadence, Plugin
from sandbox.outcome import FAILURES, Outcome


@dataclass
class TaskRow:
    id: int
    config_id: int
    name: str
    cadence: Cadence
    cron: str
    time_zone: str | None = None
    offset_s: float = 0.0
    next_slot: datetime | None = None
    next_due_at: datetime | None = None  # None: "the database's now", always due
    attempt: int = 1
    active_run_id: int | None = None
    coalesced: int = 0
    missed: int = 0


@dataclass
class RunRow:
    id: int
    task_id: int | None
    config_id: int
    task: str
    slot: datetime
    attempt: int = 1
    manual: bool = False
    backfilled: bool = False
    state: str = "queued"
    outcome: Outcome | None = None
    node: str | None = None
    due_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: dict[str, Any] | None = None
    result: Any = None
    logs: list[dict[str, str]] = field(default_factory=list)


@dataclass
class ConfigRow:
    id: int
    plugin_id: int
    values: dict[str, Any]
    enabled: bool = True
    quarantined: bool = False
    consecutive_failures: int = 0


@dataclass
class MemoryListenerGateway:
    """The listener's session in memory. `hears=False`: notifications never arrive (a pooler in
    transaction mode); `fail_next("notifications", DatabaseUnavailable(...))`: the connection
    is lost while it waits. Statements are counted as the real session counts them."""

    statements: int = 0
    where: str = "memory"
    hears: bool = True
    is_open: bool = False
    opens: int = 0
    listening: set[str] = field(default_factory=set)
    _notes: queue.Queue[Notification] = field(default_factory=queue.Queue)
    _failures: dict[str, list[BaseException]] = field(default_factory=dict)

    def notify(self, channel: str, payload: str) -> None:
        """What a NOTIFY on `channel` does (from a trigger, or psql)."""
        if self.hears and self.is_open and channel in self.listening:
            self._notes.put(Notification(channel, payload))

    def fail_next(self, method: str, error: BaseException) -> None:
        self._failures.setdefault(method, []).append(error)

    def _fail(self, method: str) -> None:
        pending = self._failures.get(method)
        if pending:
            raise pending.pop(0)

    def _send(self, method: str, count: int = 1) -> None:
        if not self.is_open:
            raise DatabaseUnavailable("not connected")
        self._fail(method)
        self.statements += count

    def open(self) -> None:
        self._fail("open")
        self.is_open = True
        self.opens += 1

    def listen(self) -> None:
        self._send("listen", len(CHANNELS))
        self.listening.update(CHANNELS)

    def probe(self, token: str) -> None:
        self._send("probe", 2)  # LISTEN here, NOTIFY from a second connection
        self.listening.add(PROBE_CHANNEL)
        self.notify(PROBE_CHANNEL, token)

    def notifications(
        self, timeout: float, stop_after: int | None = None
    ) -> Iterator[Notification]:
        deadline = time.monotonic() + timeout
        got = 0
        while (left := deadline - time.monotonic()) > 0:
            self._fail("notifications")
            try:
                note = self._notes.get(timeout=min(left, 0.05))
            except queue.Empty:
                continue
            yield note
            got += 1
            if stop_after is not None and got >= stop_after:
                return

    def unlisten(self) -> None:
        self._send("unlisten")
        self.listening.clear()

    def close(self) -> None:
        self.is_open = False
        self.listening.clear()


@dataclass
class MemoryGateway:
    statements: int = 0
    plugins: dict[int, rec.PluginCode] = field(default_factory=dict)
    configs: dict[int, ConfigRow] = field(default_factory=dict)
    tasks: dict[int, TaskRow] = field(default_factory=dict)
    runs: dict[int, RunRow] = field(default_factory=dict)
    storage: dict[tuple[int, str], Any] = field(default_factory=dict)
    dead_nodes: set[str] = field(default_factory=set)  # nodes whose heartbeat is too old
    calls: list[tuple[str, Any]] = field(default_factory=list)  # sync, prune, ...: what was asked
    is_open: bool = True
    listener_session: MemoryListenerGateway | None = None  # the last `listener()` made
    _failures: dict[str, list[BaseException]] = field(default_factory=dict)
    _ids: int = 0

    # -- test set-up ----------------------------------------------------------------------------
    def _id(self) -> int:
        self._ids += 1
        return self._ids

    def add_plugin(self, plugin: Plugin, updated_at: datetime) -> int:
        plugin_id = self._id()
        self.plugins[plugin_id] = rec.PluginCode(
            plugin_id, dict(plugin.manifest.raw), plugin.source, updated_at
        )
        return plugin_id

    def add_config(self, plugin_id: int, values: dict[str, Any] | None = None) -> int:
        config_id = self._id()
        self.configs[config_id] = ConfigRow(config_id, plugin_id, dict(values or {}))
        return config_id

    def add_task(self, config_id: int, name: str, cadence: Cadence, cron: str, **kw: Any) -> int:
        task_id = self._id()
        self.tasks[task_id] = TaskRow(task_id, config_id, name, cadence, cron, **kw)
        return task_id

    def queue_manual(self, config_id: int, task: str, now: datetime) -> int:
        run_id = self._id()
        task_id = next(
            (t.id for t in self.tasks.values() if t.config_id == config_id and t.name == task),
            None,
        )
        self.runs[run_id] = RunRow(run_id, task_id, config_id, task, now, manual=True, due_at=now)
        return run_id

    def fail_next(self, method: str, error: BaseException) -> None:
        """The next call of `method` raises `error` (before it changes anything)."""
        self._failures.setdefault(method, []).append(error)

    def _send(self, method: str, count: int = 1) -> None:
        if not self.is_open:
            raise DatabaseUnavailable("not connected")
        self.statements += count
        pending = self._failures.get(method)
        if pending:
            raise pending.pop(0)

    # -- connection -----------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.is_open

    def listener(self, url: str | None = None) -> MemoryListenerGateway:
        self.listener_session = MemoryListenerGateway()
        return self.listener_session

    def open(self, registration: Registration) -> None:
        self.is_open = True
        self.calls.append(("open", registration.node_id))

    def close(self) -> None:
        self.is_open = False

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing, like a transaction: on an error every table is as it was."""
        saved = copy.deepcopy((self.configs, self.tasks, self.runs, self.storage, self._ids))
        try:
            yield
        except BaseException:
            self.configs, self.tasks, self.runs, self.storage, self._ids = saved
            raise

    # -- claims ---------------------------------------------------------------------------------
    def due_tasks(
        self, node_id: str, horizon: datetime, limit: int, stats: Mapping[str, Any]
    ) -> list[rec.DueTask]:
        self._send("due_tasks")
        self.calls.append(("heartbeat", dict(stats)))
        due = []
        for t in self.tasks.values():
            config = self.configs.get(t.config_id)
            if config is None or not config.enabled or config.quarantined:
                continue
            if t.active_run_id is not None:
                continue
            is_due = t.next_due_at is None or t.next_due_at <= horizon
            if is_due or (t.next_slot is None and t.attempt > 0):
                due.append(t)
        due.sort(key=lambda t: (t.cadence is Cadence.MINUTE, t.next_due_at or horizon))
        out = []
        for t in due[:limit]:
            row = {**vars(t), "next_due_at": t.next_due_at or horizon, **self._config_columns(t)}
            out.append(rec.DueTask.from_row(row))
        return out

    def record_claims(
        self, node_id: str, claims: Sequence[rec.Claim], now: datetime
    ) -> list[rec.ClaimedRow]:
        self._send("record_claims")
        recordset_json(claims)  # what PostgreSQL would be sent must encode
        out = []
        for c in claims:
            t = self.tasks[c.task_id]
            run_id = None
            if c.run_slot is not None:
                run_id = self._id()
                self.runs[run_id] = RunRow(
                    run_id, t.id, t.config_id, t.name, c.run_slot, c.attempt,
                    backfilled=c.backfilled, state="claimed", node=node_id, due_at=c.due_at,
                )  # fmt: skip
                storage = {k: v for (cid, k), v in self.storage.items() if cid == t.config_id}
                out.append(rec.ClaimedRow(run_id, t.id, copy.deepcopy(storage)))
            t.next_slot, t.next_due_at, t.attempt = c.next_slot, c.next_due_at, c.attempt
            if c.offset_s is not None:
                t.offset_s = c.offset_s
            t.active_run_id = run_id
            t.coalesced += c.coalesced
            t.missed += c.missed_count
            for slot in c.missed_slots or []:
                missed_id = self._id()
                self.runs[missed_id] = RunRow(
                    missed_id, t.id, t.config_id, t.name, slot, 0, state="done",
                    outcome=Outcome.MISSED, node=node_id, finished_at=now,
                )  # fmt: skip
            if c.error is not None:
                failed_id = self._id()
                self.runs[failed_id] = RunRow(
                    failed_id, t.id, t.config_id, t.name, c.next_slot or now, c.attempt,
                    state="done", outcome=Outcome.ERROR, node=node_id, finished_at=now,
                    error=c.error,
                )  # fmt: skip
                self.configs[t.config_id].consecutive_failures += 1
        return out

    def claim_manual(self, node_id: str, limit: int) -> list[rec.ManualRow]:
        self._send("claim_manual")
        out = []
        queued = sorted((r for r in self.runs.values() if r.state == "queued"), key=lambda r: r.id)
        for r in queued[:limit]:
            r.state, r.node = "claimed", node_id
            task = self.tasks.get(r.task_id) if r.task_id is not None else None
            storage = {k: v for (cid, k), v in self.storage.items() if cid == r.config_id}
            row = {
                **vars(r),
                **self._config_columns(r),
                "cadence": task.cadence if task else None,
                "storage": storage,
            }
            out.append(rec.ManualRow.from_row(row))
        return out

    def _config_columns(self, of: TaskRow | RunRow) -> dict[str, Any]:
        """The config's and its plugin's columns the claim statements join in."""
        config = self.configs[of.config_id]
        return {
            "plugin_id": config.plugin_id,
            "settings": dict(config.values),
            "plugin_updated_at": self.plugins[config.plugin_id].updated_at,
        }

    # -- completions ----------------------------------------------------------------------------
    def complete(
        self,
        completions: Sequence[rec.Completion],
        writes: Sequence[rec.StorageWrite],
        deletes: Sequence[rec.StorageDelete],
        quarantine_after: int,
    ) -> None:
        self._send("complete")
        for batch in (completions, writes, deletes):
            text = _encoded(batch)
            if "\\u0000" in text:
                raise Refused("unsupported Unicode escape sequence: \\u0000 cannot be stored")
        done: list[RunRow] = []
        for c in completions:
            r = self.runs.get(c.run_id)
            if r is None or r.state != "claimed" or r.node != c.node:
                continue
            outcome = Outcome(c.outcome)
            if outcome is Outcome.OK and not r.manual and any(
                o.task_id == r.task_id and o.slot == r.slot and o.outcome is Outcome.OK
                and not o.manual for o in self.runs.values()
            ):  # fmt: skip
                outcome = Outcome.DUPLICATE
            r.state, r.outcome = "done", outcome
            r.started_at, r.finished_at = c.started_at, c.finished_at
            r.error, r.result, r.logs = c.error, c.result, list(c.logs or [])
            done.append(r)
            t = self.tasks.get(r.task_id) if r.task_id is not None else None
            if t is not None and t.active_run_id == r.id:
                t.active_run_id = None
                t.next_slot = c.next_slot if c.next_slot is not None else t.next_slot
                t.next_due_at = c.next_due_at if c.next_due_at is not None else t.next_due_at
                t.attempt = c.attempt if c.attempt is not None else t.attempt
        ok_runs = {r.id for r in done if r.outcome is Outcome.OK}
        for w in writes:
            if w.run_id in ok_runs and w.config_id in self.configs:
                self.storage[(w.config_id, w.key)] = copy.deepcopy(w.value)
        for d in deletes:
            if d.run_id in ok_runs:
                self.storage.pop((d.config_id, d.key), None)
        for r in done:
            config = self.configs.get(r.config_id)
            if config is None:
                continue
            if r.outcome is Outcome.OK:
                config.consecutive_failures = 0
            elif r.outcome in FAILURES:
                config.consecutive_failures += 1
                if quarantine_after and config.consecutive_failures >= quarantine_after:
                    config.quarantined = True

    def release(
        self, node_id: str, run_ids: Sequence[int], outcome: Outcome, now: datetime
    ) -> None:
        if not run_ids:
            return
        self._send("release")
        for run_id in run_ids:
            r = self.runs.get(run_id)
            if r is None or r.state != "claimed" or r.node != node_id:
                continue
            r.state, r.outcome, r.finished_at = "done", Outcome(outcome), now
            t = self.tasks.get(r.task_id) if r.task_id is not None else None
            if t is not None and t.active_run_id == r.id:
                t.active_run_id = None

    # -- fleet ----------------------------------------------------------------------------------
    def orphan_runs(
        self, node_id: str, dead_after_s: float, held: Collection[int] = ()
    ) -> list[rec.OrphanRun]:
        self._send("orphan_runs")
        out = []
        for r in sorted(self.runs.values(), key=lambda r: r.id):
            if r.state != "claimed" or not (r.node in self.dead_nodes or r.node == node_id):
                continue
            if r.node == node_id and r.id in held:
                continue
            t = self.tasks.get(r.task_id) if r.task_id is not None else None
            task = {
                "cadence": t.cadence if t else None,
                "cron": t.cron if t else None,
                "time_zone": t.time_zone if t else None,
                "offset_s": t.offset_s if t else None,
                "next_slot": t.next_slot if t else None,
                "task_attempt": t.attempt if t else None,
                "is_active": t is not None and t.active_run_id == r.id,
            }
            out.append(
                rec.OrphanRun.from_row({**vars(r), "run_id": r.id, "node": r.node or "", **task})
            )
        return out

    def mark_dead_nodes(self, dead_after_s: float) -> None:
        self._send("mark_dead_nodes")
        self.calls.append(("mark_dead_nodes", sorted(self.dead_nodes)))

    def stop_node(self, node_id: str) -> None:
        self._send("stop_node")
        self.calls.append(("stop_node", node_id))

    def plugin_code(self, plugin_id: int) -> rec.PluginCode | None:
        self._send("plugin_code")
        return self.plugins.get(plugin_id)

    # -- reload ---------------------------------------------------------------------------------
    def sync_tasks(self, config_ids: Sequence[int] | None) -> None:
        self._send("sync_tasks", 3)
        self.calls.append(("sync_tasks", list(config_ids) if config_ids is not None else None))

    def reconcile_tasks(self) -> None:
        self._send("reconcile_tasks", 2)
        self.calls.append(("reconcile_tasks", None))

    def config_values(self, config_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        self._send("config_values")
        return {i: dict(self.configs[i].values) for i in config_ids if i in self.configs}

    # -- retention ------------------------------------------------------------------------------
    def quarantined_configs(self) -> list[dict[str, Any]]:
        self._send("quarantined_configs")
        return [
            {"id": c.id, "quarantine_reason": "quarantined", "enabled": c.enabled}
            for c in self.configs.values()
            if c.quarantined
        ]

    def configs_enabled(self, config_ids: Sequence[int]) -> dict[int, bool]:
        self._send("configs_enabled")
        return {i: self.configs[i].enabled for i in config_ids if i in self.configs}

    def prune(
        self, runs_days: float | None, logs_days: float | None, max_batches: int, now: datetime
    ) -> rec.Pruned:
        self._send("prune", 2)
        self.calls.append(("prune", (runs_days, logs_days, max_batches)))
        return rec.Pruned(runs=0, logs=0, statements=2)

    # -- what tests read ------------------------------------------------------------------------
    def runs_of(self, config_id: int) -> list[RunRow]:
        return [
            r for r in sorted(self.runs.values(), key=lambda r: r.id) if r.config_id == config_id
        ]


def _encoded(items: Sequence[Any]) -> str:
    try:
        text = recordset_json(items)
        text.encode("utf-8")
    except (ValueError, TypeError, RecursionError) as exc:
        raise Refused(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    return text


__all__ = ["MemoryGateway"]
