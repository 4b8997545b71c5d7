"""`plugin-runtime serve`: one node of the fleet.

One thread owns the database connection and does, in a loop: tick (lock due tasks, decide, record
claims: two statements whatever the batch), flush finished runs (one statement per batch), recover
runs of dead nodes, and react to notifications. The dispatcher starts claimed runs at their due
time in the sandbox; the listener hears of changes. When the database goes away, runs in flight
finish and their outcomes wait in memory; the loop reconnects with backoff and carries on, and the
task pointers in PostgreSQL make it catch up every hourly and daily slot it owes.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from runtime import metrics, schedule
from runtime.clock import Clock, iso
from runtime.db import DatabaseUnavailable, connect
from runtime.dispatch import Dispatcher, Finished
from runtime.migrate import migrate
from runtime.quarantine_watch import QuarantineWatch
from runtime.queue import ClaimedRun, Queue
from runtime.reload import Listener
from runtime.run_error import error_summary
from runtime.schedule import SchedulePolicy, TaskState
from sandbox import DEFAULT_LIMITS, Limits, Sandbox
from sandbox.layers import EXPOSES
from sandbox.manifest import ManifestError, Plugin, plugin_from_stored
from sandbox.services import IPNetwork, LocalServices

log = logging.getLogger("plugin_runtime.supervisor")

MAX_RESULT_CHARS = 64 * 1024
MISSED_ROWS_PER_TICK = 1000
MIN_REAL_INTERVAL_S = 0.2


@dataclass
class Settings:
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
    dead_after_s: float = 20.0  # real seconds without a heartbeat before a node's runs are released
    reconcile_interval_s: float = 60.0
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


@dataclass
class Stats:
    started: int = 0
    finished: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)
    lags: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    db_errors: int = 0
    missed: int = 0
    coalesced: int = 0


class Supervisor:
    def __init__(
        self,
        url: str,
        settings: Settings | None = None,
        clock: Clock | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.url = url
        self.settings = settings or Settings()
        self.clock = clock or Clock()
        self.sandbox = sandbox or Sandbox(
            caps=self.settings.caps,
            services=LocalServices(allow_networks=self.settings.allow_networks),
        )
        self.stats = Stats()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.db_ok = threading.Event()
        self.ready = threading.Event()
        self.statements = 0  # every statement this node sent (all connections of the queue)
        self._finished: deque[Finished] = deque()
        self._finished_lock = threading.Lock()
        self._urgent = False
        self._reported_down = False
        self._avg_run_s = 0.05  # moving average of run wall time, for the claim size
        self._plugins: dict[int, tuple[datetime, Plugin]] = {}
        self._queue: Queue | None = None
        self.quarantine_watch = QuarantineWatch()
        self.listener = Listener(url, self.wake)
        self.dispatcher = Dispatcher(
            self.sandbox,
            self.clock,
            self.settings.concurrency,
            self.settings.caps,
            on_done=self._on_done,
            on_start=self._on_start,
        )

    # -- lifecycle ----------------------------------------------------------------------------
    def request_stop(self, *_: Any) -> None:
        self.stopping.set()
        self.wake.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self) -> None:
        """Serve until SIGTERM (or request_stop), then drain gracefully."""
        self.sandbox.start()
        self._report_layers()
        self.dispatcher.start()
        self.listener.start()
        next_tick = next_flush = next_sweep = next_reconcile = 0.0
        tick_every = self._real(self.settings.tick_interval_s)
        flush_every = self._real(self.settings.flush_interval_s)
        sweep_every = max(self._real(self.settings.sweep_interval_s), 1.0)
        reconcile_every = self._real(self.settings.reconcile_interval_s)
        backoff = 0.5
        next_prune = time.monotonic() + 60.0
        while not self.stopping.is_set():
            try:
                q = self._ensure_connected()
                backoff = 0.5
                now = time.monotonic()
                if next_sweep == 0.0:
                    self._sweep(q)  # first: runs an earlier process of this node left claimed
                    next_sweep = now + sweep_every
                if self._handle_notifications(q):
                    next_tick = now
                if now >= next_reconcile:
                    self._reconcile(q)
                    next_reconcile = now + reconcile_every
                if self._flush_due(now, next_flush):
                    if self._flush(q):
                        next_tick = now  # a catch-up slot is owed at once: claim it now
                    next_flush = time.monotonic() + flush_every
                if now >= next_tick:
                    self._tick(q)
                    next_tick = time.monotonic() + tick_every
                    self.ready.set()
                if now >= next_prune:
                    self._prune(q)
                    next_prune = now + self.settings.prune_interval_s
                if now >= next_sweep:
                    self._sweep(q)
                    next_sweep = now + sweep_every
            except (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnavailable) as exc:
                self._lost_database(exc)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 15.0)
                continue
            except Exception:
                # A bug or bad data must not take the node down: log it, back off, carry on.
                log.exception("supervisor loop error; retrying")
                self._lost_database(RuntimeError("loop error"))
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 15.0)
                continue
            deadline = min(next_tick, next_sweep, next_reconcile, self._next_flush_at(next_flush))
            self.wake.wait(max(0.0, min(deadline - time.monotonic(), 1.0)))
            self.wake.clear()
        self._drain()

    def _real(self, scheduler_seconds: float) -> float:
        return max(MIN_REAL_INTERVAL_S, scheduler_seconds / self.clock.scale)

    def _report_layers(self) -> None:
        """One start-up line: the posture and why, the layers on; a warning per layer off."""
        sb = self.sandbox
        for name in (name for name, on in sb.layers.items() if not on):
            log.warning(
                "sandbox layer %s is off (%s): an escaped plugin can reach %s",
                name,
                sb.layer_reasons.get(name, "not supported on this host"),
                EXPOSES.get(name, "what it would stop"),
            )
        log.info(
            "sandbox posture %s (%s); layers on: %s",
            sb.posture or "?",
            sb.posture_reason,
            ", ".join(k for k, v in sb.layers.items() if v),
        )

    def _ensure_connected(self) -> Queue:
        if self._queue is not None and not self._queue.conn.closed:
            return self._queue
        conn = connect(self.url, application_name=f"plugin-runtime {self.settings.node_id}")
        migrate(conn)
        statements = self._queue.statements if self._queue is not None else 0
        self._queue = Queue(conn, self.settings.node_id)
        self._queue.statements = statements
        self._queue.register(
            socket.gethostname(),
            os.getpid(),
            list(self.settings.capabilities),
            self.sandbox.layers,
            self.settings.concurrency,
            self.sandbox.posture,
            self.sandbox.posture_reason,
            self.sandbox.layer_reasons,
        )
        if not self.db_ok.is_set():
            log.info("connected to the database; node %s registered", self.settings.node_id)
        self.db_ok.set()
        self._reported_down = False
        metrics.DB_UP.set(1)
        return self._queue

    def _lost_database(self, exc: BaseException) -> None:
        self.stats.db_errors += 1
        metrics.DB_ERRORS.inc()
        metrics.DB_UP.set(0)
        if self.db_ok.is_set() or not self._reported_down:
            self._reported_down = True
            log.error(
                "database unavailable: %s; runs in flight go on, retrying with backoff",
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
        self.db_ok.clear()
        if self._queue is not None:
            try:
                self._queue.conn.close()
            except psycopg.Error:
                pass

    def _drain(self) -> None:
        """Graceful stop: claim nothing more, release held runs, let running ones finish (up to
        their timeout), record everything, mark the node stopped."""
        log.info(
            "stopping: releasing held runs, waiting for %d running", self.dispatcher.running_count()
        )
        held = self.dispatcher.take_held()
        self.dispatcher.wait_idle(self.settings.drain_timeout_s)
        self.dispatcher.stop()
        for attempt in range(3):
            try:
                q = self._ensure_connected()
                q.release([r.run_id for r in held], "released", self.clock.now())
                held = []
                self._flush(q)
                q.stop()
                break
            except (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnavailable) as exc:
                self._lost_database(exc)
                time.sleep(0.5 * (attempt + 1))
        self.listener.stop()
        self.sandbox.close()
        if self._queue is not None:
            self.statements = self._queue.statements
            self._queue.conn.close()

    # -- plugins ------------------------------------------------------------------------------
    def _plugin(self, q: Queue, plugin_id: int, updated_at: datetime) -> Plugin | None:
        cached = self._plugins.get(plugin_id)
        if cached is not None and cached[0] == updated_at:
            return cached[1]
        row = q.plugin_code(plugin_id)
        if row is None:
            return None
        plugin = plugin_from_stored(row["manifest"], row["source"])
        self._plugins[plugin_id] = (row["updated_at"], plugin)
        return plugin

    # -- tick -----------------------------------------------------------------------------------
    def _capacity(self) -> int:
        """How many runs to claim this tick: what this node can start within the lookahead at its
        recent speed (so a node busy with slow or hanging runs leaves due work to the others)."""
        lookahead_real = self._real(self.settings.lookahead_s)
        per_slot = lookahead_real / max(self._avg_run_s, 0.005)
        fits = int(self.settings.concurrency * per_slot) - self.dispatcher.busy()
        return max(
            0,
            min(
                self.settings.claim_limit,
                max(fits, self.settings.concurrency - self.dispatcher.busy()),
            ),
        )

    def _node_stats(self) -> dict[str, Any]:
        lags = sorted(self.stats.lags)
        return {
            "started": self.stats.started,
            "finished": self.stats.finished,
            "running": self.dispatcher.running_count(),
            "held": self.dispatcher.held_count(),
            "lag_p50_s": lags[len(lags) // 2] if lags else None,
            "lag_p99_s": lags[int(len(lags) * 0.99)] if lags else None,
            "by_outcome": self.stats.by_outcome,
            "statements": self._queue.statements if self._queue is not None else 0,
            "missed": self.stats.missed,
            "coalesced": self.stats.coalesced,
            "layers_missing": [k for k, v in self.sandbox.layers.items() if not v],
            # The scheduler clock at this heartbeat: status windows follow it (fleet_clock.py).
            "clock_now": iso(self.clock.now()),
            "clock_scale": self.clock.scale,
        }

    def _tick(self, q: Queue) -> None:
        if "scheduledTasks" not in self.settings.capabilities:
            q.due_tasks(self.clock.now(), 0, self._node_stats())  # heartbeat only
            return
        now = self.clock.now()
        horizon = now + timedelta(seconds=self.settings.lookahead_s)
        policy = self.settings.policy
        claimed: list[ClaimedRun] = []
        with q.transaction():
            rows = q.due_tasks(horizon, self._capacity(), self._node_stats())
            if not rows:
                return
            decisions: list[dict[str, Any]] = []
            pending: dict[int, ClaimedRun] = {}
            for row in rows:
                task = TaskState(
                    id=row["id"],
                    cadence=row["cadence"],
                    cron=row["cron"],
                    offset_s=row["offset_s"],
                    next_slot=row["next_slot"],
                    attempt=row["attempt"],
                )
                offset: float | None = None
                next_due_at = row["next_due_at"]
                if task.next_slot is None:
                    # A new (or changed) task: give it its offset and first slot; if that is due
                    # within this tick's horizon, claim it now rather than at the next tick.
                    offset = schedule.spread_offset(
                        f"{row['config_id']}:{row['name']}", task.cadence, policy
                    )
                    task.offset_s = offset
                    init = schedule.initialise(task, now)
                    task.next_slot, next_due_at = init.next_slot, init.next_due_at
                    if next_due_at > horizon:
                        decisions.append(
                            _decision(
                                task.id,
                                None,
                                task.attempt,
                                False,
                                None,
                                init.next_slot,
                                init.next_due_at,
                                0,
                                0,
                                [],
                                offset,
                            )
                        )
                        continue
                start_at = max(now, next_due_at)
                d = schedule.decide_claim(task, start_at, policy)
                self.stats.missed += d.missed_count
                self.stats.coalesced += d.coalesced
                if d.missed_count:
                    metrics.MISSED.labels(task.cadence).inc(d.missed_count)
                if d.coalesced:
                    metrics.COALESCED.inc(d.coalesced)
                if d.missed_count:
                    log.warning(
                        "config %s task %s: %d slot(s) older than the catch-up window recorded as missed",
                        row["config_id"],
                        row["name"],
                        d.missed_count,
                    )
                decisions.append(
                    _decision(
                        task.id,
                        d.run_slot,
                        d.attempt,
                        d.backfilled,
                        start_at if d.run_slot else None,
                        d.next_slot,
                        d.next_due_at,
                        d.coalesced,
                        d.missed_count,
                        d.missed_slots[:MISSED_ROWS_PER_TICK],
                        offset,
                    )
                )
                if d.run_slot is not None:
                    pending[task.id] = ClaimedRun(
                        run_id=0,
                        task_id=task.id,
                        config_id=row["config_id"],
                        plugin_id=row["plugin_id"],
                        plugin_updated_at=row["plugin_updated_at"],
                        task=row["name"],
                        cadence=task.cadence,
                        cron=task.cron,
                        offset_s=task.offset_s,
                        slot=d.run_slot,
                        attempt=d.attempt,
                        backfilled=d.backfilled,
                        due_at=start_at,
                        settings=row["settings"],
                        storage={},
                        next_slot=d.next_slot,
                        task_attempt=d.attempt,
                    )
            for got in q.record_claims(decisions, now):
                run = pending[got["task_id"]]
                run.run_id = got["id"]
                run.storage = got["storage"]
                claimed.append(run)
            ready = self._attach_plugins(q, claimed)
        # Committed: from here on this node owns them (and the sweep knows it does).
        self.dispatcher.add(ready)

    def _attach_plugins(self, q: Queue, claimed: list[ClaimedRun]) -> list[ClaimedRun]:
        """Inside the claiming transaction: give each run its plugin code, and give back runs
        whose plugin cannot be loaded. If the database fails here, nothing was claimed."""
        ready: list[ClaimedRun] = []
        broken: list[ClaimedRun] = []
        for run in claimed:
            try:
                run.plugin = self._plugin(q, run.plugin_id, run.plugin_updated_at)
            except ManifestError as exc:
                log.error("plugin %s cannot be loaded: %s", run.plugin_id, exc)
                run.plugin = None
            (ready if run.plugin is not None else broken).append(run)
        if broken:
            q.release([r.run_id for r in broken], "released", self.clock.now())
        return ready

    def _claim_manual(self, q: Queue) -> None:
        claimed = []
        with q.transaction():
            for row in q.claim_manual(100):
                claimed.append(
                    ClaimedRun(
                        run_id=row["id"],
                        task_id=row["task_id"],
                        config_id=row["config_id"],
                        plugin_id=row["plugin_id"],
                        plugin_updated_at=row["plugin_updated_at"],
                        task=row["task"],
                        cadence=row["cadence"],
                        cron="",
                        offset_s=0.0,
                        slot=row["slot"],
                        attempt=row["attempt"],
                        backfilled=False,
                        due_at=self.clock.now(),
                        settings=row["settings"],
                        storage=row["storage"],
                        manual=True,
                    )
                )
            ready = self._attach_plugins(q, claimed)
        self.dispatcher.add(ready)

    # -- completion -----------------------------------------------------------------------------
    def _on_start(self, run: ClaimedRun, started_at: datetime) -> None:
        self.stats.started += 1
        if not run.manual:
            lag = (started_at - (run.slot + timedelta(seconds=run.offset_s))).total_seconds()
            if not run.backfilled and run.attempt == 1:
                self.stats.lags.append(lag / self.clock.scale)
                metrics.START_LAG.labels(run.cadence).observe(max(0.0, lag / self.clock.scale))
        metrics.QUEUE_DEPTH.set(self.dispatcher.held_count())
        metrics.RUNNING.set(self.dispatcher.running_count())

    def _on_done(self, finished: Finished) -> None:
        with self._finished_lock:
            self._finished.append(finished)
            count = len(self._finished)
        self.stats.finished += 1
        outcome = finished.outcome.outcome
        self.stats.by_outcome[outcome] = self.stats.by_outcome.get(outcome, 0) + 1
        run = finished.run
        self._avg_run_s = 0.9 * self._avg_run_s + 0.1 * (finished.outcome.duration_ms / 1000.0)
        metrics.RUNS.labels(run.cadence, outcome).inc()
        metrics.RUN_DURATION.labels(run.cadence).observe(finished.outcome.duration_ms / 1000.0)
        if outcome in metrics.KILL_OUTCOMES:
            metrics.SANDBOX_KILLS.labels(outcome).inc()
        error = error_summary(finished.outcome.error)
        log.log(
            logging.INFO if finished.outcome.ok else logging.WARNING,
            "run %s config %s task %s slot %s: %s in %.0f ms%s",
            run.run_id,
            run.config_id,
            run.task,
            iso(run.slot),
            outcome,
            finished.outcome.duration_ms,
            f": {error} (plugin-runtime runs show {run.run_id})" if error else "",
            extra={
                "run_id": run.run_id,
                "config_id": run.config_id,
                "task": run.task,
                "slot": iso(run.slot),
                "outcome": outcome,
                **({"error": error} if error else {}),
            },
        )
        if count >= self.settings.flush_batch or (
            (run.backfilled or finished.outcome.outcome != "ok") and run.cadence != "minute"
        ):
            # A catch-up or retry: record it now so the next owed slot (or attempt) can start.
            self._urgent = True
            self.wake.set()

    def _next_flush_at(self, next_flush: float) -> float:
        with self._finished_lock:
            return next_flush if self._finished else float("inf")

    def _flush_due(self, now: float, next_flush: float) -> bool:
        with self._finished_lock:
            n = len(self._finished)
        return n > 0 and (
            now >= next_flush
            or n >= self.settings.flush_batch
            or self._urgent
            or self.stopping.is_set()
        )

    def _flush(self, q: Queue) -> bool:
        """Record finished runs; True when one of them owes a follow-up run at once."""
        with self._finished_lock:
            batch = list(self._finished)
            self._finished.clear()
            urgent, self._urgent = self._urgent, False
        if not batch:
            return False
        try:
            self._record(q, batch)
        except BaseException:
            with self._finished_lock:  # nothing is lost: they go back in front
                self._finished.extendleft(reversed(batch))
                self._urgent = urgent
            raise
        return urgent

    def _record(self, q: Queue, batch: list[Finished]) -> None:
        now = self.clock.now()
        entries = [self._entry(item, now) for item in batch]
        try:
            self._complete(q, entries)
        except psycopg.DataError as exc:
            # One run's data that PostgreSQL refuses must not wedge every later flush: record
            # them one by one, and a run that still fails without its data.
            log.error(
                "a batch of finished runs could not be recorded (%s); recording one by one", exc
            )
            for entry in entries:
                try:
                    self._complete(q, [entry])
                except psycopg.DataError as one:
                    self._complete(q, [_stripped(entry, str(one))])

    def _entry(self, item: Finished, now: datetime) -> dict[str, Any]:
        """What the completion statement needs of one finished run (NUL characters, which
        PostgreSQL cannot store in text or jsonb, are replaced)."""
        run, outcome = item.run, item.outcome
        writes = {k: v for k, v in outcome.storage_writes.items()} if outcome.ok else {}
        return {
            "run": {
                "run_id": run.run_id,
                "node": self.settings.node_id,
                "outcome": outcome.outcome,
                "started_at": item.started_at,
                "finished_at": item.finished_at,
                "duration_ms": outcome.duration_ms,
                "error": _clean(outcome.error.__dict__) if outcome.error else None,
                "result": _clean(_capped_result(outcome.result)),
                "logs": [
                    {"level": line.level, "message": _clean(line.message)} for line in outcome.logs
                ],
                **_completion(run, outcome.ok, now, self.settings.policy),
            },
            "config_id": run.config_id,
            "writes": _clean(writes),
            "deletes": list(outcome.storage_deletes) if outcome.ok else [],
        }

    def _complete(self, q: Queue, entries: list[dict[str, Any]]) -> None:
        """One statement for the batch. Storage effects are merged per (config, key) in run
        order, so that each key is written or deleted once."""
        writes: dict[tuple[int, str], dict[str, Any]] = {}
        deletes: dict[tuple[int, str], dict[str, Any]] = {}
        for entry in entries:
            run_id, config_id = entry["run"]["run_id"], entry["config_id"]
            for key, value in entry["writes"].items():
                deletes.pop((config_id, key), None)
                writes[(config_id, key)] = {
                    "run_id": run_id,
                    "config_id": config_id,
                    "key": key,
                    "value": value,
                }
            for key in entry["deletes"]:
                writes.pop((config_id, key), None)
                deletes[(config_id, key)] = {"run_id": run_id, "config_id": config_id, "key": key}
        runs = [entry["run"] for entry in entries]
        for attempt in range(2):
            try:
                with q.transaction():
                    q.complete(
                        runs,
                        list(writes.values()),
                        list(deletes.values()),
                        self.settings.quarantine_after,
                    )
                return
            except psycopg.errors.UniqueViolation:
                # Another node recorded a success for the same slot at the same moment; the retry
                # sees it and records this one as a duplicate.
                if attempt:
                    raise

    # -- fleet ------------------------------------------------------------------------------------
    def _known_run_ids(self) -> set[int]:
        known = self.dispatcher.known_ids()  # first: a run leaves it only after reaching _finished
        with self._finished_lock:
            known |= {item.run.run_id for item in self._finished}
        return known

    def _sweep(self, q: Queue) -> None:
        """Runs claimed by nodes that stopped heartbeating: recorded as lost, their tasks freed
        (an hourly/daily slot is retried as a failed attempt)."""
        now = self.clock.now()
        with q.transaction():
            rows = q.runs_of_dead_nodes(self.settings.dead_after_s)
            if rows:
                known = self._known_run_ids()
                rows = [
                    r
                    for r in rows
                    if not (r["node"] == self.settings.node_id and r["run_id"] in known)
                ]
            if not rows:
                return
            runs = []
            for row in rows:
                pointer = NO_POINTER_MOVE
                if row["is_active"] and row["cadence"]:
                    task = TaskState(
                        id=row["task_id"],
                        cadence=row["cadence"],
                        cron=row["cron"],
                        offset_s=row["offset_s"],
                        next_slot=row["next_slot"],
                        attempt=row["task_attempt"],
                        active=True,
                    )
                    # A lost run is a failed attempt; its retry is due at once (it did not fail).
                    pointer = _pointer_after(
                        task,
                        row["slot"],
                        row["attempt"],
                        False,
                        now,
                        self.settings.policy,
                        retry_at_once=True,
                    )
                why = (
                    "an earlier process of this node died"
                    if row["node"] == self.settings.node_id
                    else f"node {row['node']} stopped heartbeating"
                )
                runs.append(
                    {
                        "run_id": row["run_id"],
                        "node": row["node"],
                        "outcome": "lost",
                        "started_at": None,
                        "finished_at": now,
                        "duration_ms": None,
                        "error": {"type": "Lost", "message": why, "traceback": []},
                        "result": None,
                        "logs": [],
                        **pointer,
                    }
                )
            q.complete(runs, [], [], 0)
            q.mark_dead_nodes(self.settings.dead_after_s)
        log.warning("recovered %d run(s) of dead node(s)", len(rows))

    def _prune(self, q: Queue) -> None:
        """Retention: old runs and logs go, in small batches, a bounded number per pass, so that
        scheduling is never held up for long."""
        from runtime.retention import prune

        done = prune(
            q.conn,
            self.settings.runs_retention_days,
            self.settings.logs_retention_days,
            max_batches=20,
            now=self.clock.now(),  # run ages are scheduler time (a test clock may start anywhere)
        )
        q.statements += int(done.get("statements", 0))
        if done.get("runs") or done.get("logs"):
            log.info(
                "retention: pruned %s run(s) and %s log line(s)", done.get("runs"), done.get("logs")
            )

    # -- reload -----------------------------------------------------------------------------------
    def _reconcile(self, q: Queue) -> None:
        q.execute("sync_tasks_insert", {"config_ids": None})
        self._claim_manual(q)

    def _handle_notifications(self, q: Queue) -> bool:
        """Apply changes heard on LISTEN; True when a tick should follow at once (new or changed
        configs get scheduled within seconds, not at the next regular tick)."""
        changes = self.listener.drain()
        if not changes:
            return False
        sync: set[int] = set()
        manual = False
        watch = False
        for change in changes:
            if change.channel == "plugin_runtime_trigger":
                manual = True
            elif change.channel == "reconnected":
                self._reconcile(q)
                watch = True
            elif change.payload.get("table") == "plugin_configs":
                watch = True
                config_id = int(change.payload["id"])
                if not change.payload.get("runnable", False):
                    held = self.dispatcher.take_held(config_id)
                    if held:
                        q.release([r.run_id for r in held], "cancelled", self.clock.now())
                        log.info(
                            "config %s disabled: %d held run(s) cancelled", config_id, len(held)
                        )
                if change.payload.get("op") != "DELETE":
                    sync.add(config_id)
        if sync:
            from runtime import store

            store.sync_tasks(q.conn, sorted(sync))
            q.statements += 3
            changed_held = sorted(sync & self.dispatcher.held_configs())
            if changed_held:
                for row in q.execute("config_settings", {"ids": changed_held}):
                    self.dispatcher.update_settings(row["id"], row["settings"])
        if manual:
            self._claim_manual(q)
        if watch:
            self._watch_quarantine(q)
        return bool(sync)

    def _watch_quarantine(self, q: Queue) -> None:
        """Log configs quarantined or released since the last look (quarantine_watch.py)."""
        quarantined = q.execute("quarantined_configs")
        released = self.quarantine_watch.released(quarantined)
        enabled = (
            {
                int(r["id"]): bool(r["enabled"])
                for r in q.execute("configs_enabled", {"ids": released})
            }
            if released
            else {}
        )
        self.quarantine_watch.observe(quarantined, enabled)


def _decision(
    task_id: int,
    run_slot: datetime | None,
    attempt: int,
    backfilled: bool,
    due_at: datetime | None,
    next_slot: datetime,
    next_due_at: datetime,
    coalesced: int,
    missed_count: int,
    missed_slots: list[datetime],
    offset_s: float | None,
) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "run_slot": run_slot,
        "attempt": attempt,
        "backfilled": backfilled,
        "due_at": due_at,
        "next_slot": next_slot,
        "next_due_at": next_due_at,
        "coalesced": coalesced,
        "missed_count": missed_count,
        "missed_slots": missed_slots,
        "offset_s": offset_s,
    }


def _completion(
    run: ClaimedRun, succeeded: bool, now: datetime, policy: SchedulePolicy
) -> dict[str, Any]:
    """Where the task's pointer goes after this run (nothing for manual runs)."""
    if run.manual or run.task_id is None:
        return NO_POINTER_MOVE
    task = TaskState(
        id=run.task_id,
        cadence=run.cadence,
        cron=run.cron,
        offset_s=run.offset_s,
        next_slot=run.next_slot,
        attempt=run.task_attempt,
        active=True,
    )
    return _pointer_after(task, run.slot, run.attempt, succeeded, now, policy)


NO_POINTER_MOVE: dict[str, Any] = {"next_slot": None, "next_due_at": None, "attempt": None}


def _pointer_after(
    task: TaskState,
    slot: datetime,
    attempt: int,
    succeeded: bool,
    now: datetime,
    policy: SchedulePolicy,
    retry_at_once: bool = False,
) -> dict[str, Any]:
    """The completion statement's pointer fields, from `schedule.decide_completion`."""
    d = schedule.decide_completion(task, slot, attempt, succeeded, now, policy)
    due = now if (retry_at_once and d.retry) else d.next_due_at
    return {"next_slot": d.next_slot, "next_due_at": due, "attempt": d.attempt}


def _clean(value: Any) -> Any:
    """`value` with NUL characters (which PostgreSQL refuses in text and jsonb) replaced."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _stripped(entry: dict[str, Any], reason: str) -> dict[str, Any]:
    """A run recorded without its data, when its data cannot be stored."""
    run = dict(entry["run"])
    run.update(
        outcome="error",
        result=None,
        logs=[],
        error={
            "type": "RecordError",
            "message": f"the run's data could not be stored: {reason}"[:2000],
            "traceback": [],
        },
    )
    return {"run": run, "config_id": entry["config_id"], "writes": {}, "deletes": []}


def _capped_result(result: Any) -> Any:
    import json

    text = json.dumps(result, default=str)
    if len(text) > MAX_RESULT_CHARS:
        return {"truncated": True, "preview": text[:1000]}
    return result
