"""`plugin-runtime serve`: one node of the fleet.

The node is thin: it owns the lifecycle (start, signals, drain), the loop that gives each duty
its turn, and the node's stats. The work is the duties', each a small unit with explicit
collaborators (runtime/node/*.py): claim, record, sweep, reload, retention. One thread, the
node's, runs the loop and owns the database gateway, the ledger and the stats; the dispatcher's
and the sandbox's threads only hand over what happened (`_events`), which the loop takes in.

When the database goes away, runs in flight finish and their outcomes wait in memory; the loop
reconnects with backoff and carries on, and the task pointers in PostgreSQL make it catch up
every hourly and daily slot it owes. Any other error in one duty is logged as what it is and
the loop goes on with the others.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from runtime import metrics
from runtime.clock import Clock
from runtime.db import DatabaseUnavailable
from runtime.jsonable import iso_utc
from runtime.node.claim import ClaimDuty
from runtime.node.dispatch import Dispatcher
from runtime.node.gateway import Gateway, PgGateway, Registration
from runtime.node.listener import Listener
from runtime.node.plugins import PluginCache
from runtime.node.record import RecordDuty, owes_follow_up
from runtime.node.reload import ReloadDuty
from runtime.node.retention import RetentionDuty
from runtime.node.runs import Finished, Ledger, Started
from runtime.node.settings import MIN_REAL_INTERVAL_S, NodeSettings
from runtime.node.sweep import SweepDuty
from runtime.percentile import percentile
from runtime.run_error import error_summary
from sandbox import Sandbox
from sandbox.layers import EXPOSES
from sandbox.outcome import Outcome
from sandbox.services import LocalServices

log = logging.getLogger("plugin_runtime.node")

FIRST_PRUNE_AFTER_S = 60.0
MAX_BACKOFF_S = 15.0


@dataclass
class Stats:
    """What the node counts; touched on the node's thread only."""

    started: int = 0
    finished: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)
    lags: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    db_errors: int = 0
    avg_run_s: float = 0.05  # moving average of run wall time, for the claim size


class Node:
    def __init__(
        self,
        url: str,
        settings: NodeSettings | None = None,
        clock: Clock | None = None,
        sandbox: Sandbox | None = None,
        gateway: Gateway | None = None,
    ) -> None:
        self.url = url
        self.settings = settings or NodeSettings()
        self.clock = clock or Clock()
        self.sandbox = sandbox or Sandbox(
            caps=self.settings.caps,
            services=LocalServices(allow_networks=self.settings.allow_networks),
            max_runs=self.settings.concurrency,
        )
        self.gateway: Gateway = gateway or PgGateway(
            url, application_name=f"plugin-runtime {self.settings.node_id}"
        )
        self.stats = Stats()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.db_ok = threading.Event()
        self.ready = threading.Event()
        self._events: queue.SimpleQueue[Started | Finished] = queue.SimpleQueue()
        self._reported_down = False
        self.ledger = Ledger()
        self.listener = Listener(
            self.gateway.listener(self.settings.listen_database_url or None), self.wake
        )
        self.dispatcher = Dispatcher(
            self.sandbox,
            self.clock,
            self.settings.concurrency,
            self.settings.caps,
            on_finished=self._hand_over,
            on_start=self._hand_over,
        )
        self.claim = ClaimDuty(
            self.gateway,
            self.clock,
            self.settings,
            PluginCache(self.gateway),
            self.ledger,
            self.dispatcher.add,
        )
        self.record = RecordDuty(self.gateway, self.clock, self.settings, self.ledger)
        self.sweep = SweepDuty(self.gateway, self.clock, self.settings, self.ledger)
        self.reload = ReloadDuty(
            self.gateway,
            self.clock,
            self.settings,
            self.listener.drain,
            self.dispatcher,
            self.ledger,
            self.claim.claim_manual,
        )
        self.retention = RetentionDuty(self.gateway, self.clock, self.settings)

    @property
    def statements(self) -> int:
        """Every statement this node sent."""
        return self.gateway.statements

    # -- lifecycle --------------------------------------------------------------------------------
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
        if self.settings.listen:
            self.listener.start()
        else:
            log.info(
                "not listening for changes (--no-listen): they take effect at the periodic "
                "reconcile, every %.0f s",
                self.settings.reconcile_interval_s,
            )
        self._loop()
        self._drain()

    def _loop(self) -> None:
        s = self.settings
        next_tick = next_flush = next_sweep = next_reconcile = 0.0
        tick_every = self._real(s.tick_interval_s)
        flush_every = self._real(s.flush_interval_s)
        sweep_every = max(self._real(s.sweep_interval_s), 1.0)
        reconcile_every = self._real(s.reconcile_interval_s)
        next_prune = time.monotonic() + FIRST_PRUNE_AFTER_S
        backoff = 0.5
        while not self.stopping.is_set():
            self._take_events()
            try:
                self._connect()
            except DatabaseUnavailable as exc:
                self._lost_database(exc)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = 0.5
            now = time.monotonic()
            if next_sweep == 0.0:
                # First: runs an earlier process of this node left claimed.
                self._turn("sweep", self.sweep.sweep)
                next_sweep = now + sweep_every
            ok, tick_now = self._turn("reload", self.reload.handle)
            if ok and tick_now:
                next_tick = now
            if now >= next_reconcile:
                self._turn("reconcile", self.reload.reconcile)
                next_reconcile = now + reconcile_every
            if self.record.due(now, next_flush, self.stopping.is_set()):
                ok, owed = self._turn("record", self.record.flush)
                if ok and owed:
                    next_tick = now  # a catch-up slot is owed at once: claim it now
                next_flush = time.monotonic() + flush_every
            if now >= next_tick:
                ok, _ = self._turn("claim", self._tick)
                if ok:
                    self.ready.set()
                next_tick = time.monotonic() + tick_every
            if now >= next_prune:
                self._turn("retention", self.retention.prune)
                next_prune = now + s.prune_interval_s
            if now >= next_sweep:
                self._turn("sweep", self.sweep.sweep)
                next_sweep = now + sweep_every
            waiting = self.record.pending or not self._events.empty()
            flush_at = next_flush if waiting else float("inf")
            deadline = min(next_tick, next_sweep, next_reconcile, flush_at)
            self.wake.wait(max(0.0, min(deadline - time.monotonic(), 1.0)))
            self.wake.clear()

    def _turn(self, duty: str, work: Callable[[], Any]) -> tuple[bool, Any]:
        """One duty's turn: (whether it succeeded, what it returned). An outage is handled as
        one (the loop reconnects); any other error is logged as what it is, and the other
        duties go on."""
        if not self.gateway.connected:
            return False, None
        try:
            return True, work()
        except DatabaseUnavailable as exc:
            self._lost_database(exc)
        except Exception:
            log.exception("%s failed; the node goes on with its other duties", duty)
        return False, None

    def _tick(self) -> None:
        self.claim.tick(self._capacity(), self.node_stats())

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

    def _connect(self) -> None:
        if self.gateway.connected:
            return
        self.gateway.open(
            Registration(
                node_id=self.settings.node_id,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                capabilities=self.settings.capabilities,
                layers=self.sandbox.layers,
                concurrency=self.settings.concurrency,
                posture=self.sandbox.posture,
                posture_reason=self.sandbox.posture_reason,
                layer_reasons=self.sandbox.layer_reasons,
            )
        )
        if not self.db_ok.is_set():
            log.info("connected to the database; node %s registered", self.settings.node_id)
        self.db_ok.set()
        self._reported_down = False
        metrics.DB_UP.set(1)

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
        self.gateway.close()

    def _drain(self) -> None:
        """Graceful stop: claim nothing more, release held runs, let running ones finish (up to
        their timeout), record everything, mark the node stopped."""
        log.info(
            "stopping: releasing held runs, waiting for %d running", self.dispatcher.running_count()
        )
        held = [run.run_id for run in self.dispatcher.take_held()]
        self.dispatcher.wait_idle(self.settings.drain_timeout_s)
        self.dispatcher.stop()
        self._take_events()
        for attempt in range(3):
            try:
                self._connect()
                self.gateway.release(
                    self.settings.node_id, held, Outcome.RELEASED, self.clock.now()
                )
                self.ledger.forget(held)
                held = []
                if self.record.pending:
                    self.record.flush()
                self.gateway.stop_node(self.settings.node_id)
                break
            except DatabaseUnavailable as exc:
                self._lost_database(exc)
                time.sleep(0.5 * (attempt + 1))
            except Exception:
                log.exception("stopping: recording failed")
                break
        self.listener.stop()
        self.sandbox.close()
        self.gateway.close()

    # -- what other threads hand over ---------------------------------------------------------------
    def _hand_over(self, event: Started | Finished) -> None:
        """Called on the dispatcher's and the sandbox's threads: queue it; wake the loop for a
        run that owes a follow-up at once, or when a batch's worth is waiting. Any other run is
        taken in at the loop's next turn (within its tick, or a second), and recorded with its
        batch as before: a wake-up per run cost both threads more than the run's record."""
        self._events.put(event)
        if isinstance(event, Finished) and (
            owes_follow_up(event) or self._events.qsize() >= self.settings.flush_batch
        ):
            self.wake.set()

    def _take_events(self) -> None:
        taken = False
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            taken = True
            if isinstance(event, Started):
                self._started(event)
            else:
                self._finished(event)
                self.record.add(event)
        if taken:  # once per batch of events, not per run
            metrics.QUEUE_DEPTH.set(self.dispatcher.held_count())
            metrics.RUNNING.set(self.dispatcher.running_count())

    def _started(self, event: Started) -> None:
        run = event.run
        self.stats.started += 1
        if not run.manual and not run.backfilled and run.attempt == 1:
            due = run.slot + timedelta(seconds=run.offset_s)
            lag = (event.started_at - due).total_seconds() / self.clock.scale
            self.stats.lags.append(lag)
            metrics.run_started(run.plugin.name, run.label, lag)

    def _finished(self, finished: Finished) -> None:
        run, report = finished.run, finished.report
        outcome = report.outcome
        self.stats.finished += 1
        self.stats.by_outcome[outcome.value] = self.stats.by_outcome.get(outcome.value, 0) + 1
        self.stats.avg_run_s = 0.9 * self.stats.avg_run_s + 0.1 * (report.duration_ms / 1000.0)
        metrics.run_finished(run.plugin.name, run.label, outcome, report.duration_ms / 1000.0)
        level = logging.INFO if report.ok else logging.WARNING
        if not log.isEnabledFor(level):
            return  # nothing of the line is built (a node logging at WARNING runs thousands)
        # The error is the plugin's text: its config's secrets are masked in the log line too.
        summary = error_summary(report.error)
        error = run.masker().text(summary) if summary else ""
        slot = iso_utc(run.slot)
        log.log(
            level,
            "run %s config %s task %s slot %s: %s in %.0f ms%s",
            run.run_id,
            run.config_id,
            run.task,
            slot,
            outcome.value,
            report.duration_ms,
            f": {error} (plugin-runtime runs show {run.run_id})" if error else "",
            extra={
                "run_id": run.run_id,
                "config_id": run.config_id,
                "task": run.task,
                "slot": slot,
                "outcome": outcome.value,
                **({"error": error} if error else {}),
            },
        )

    # -- stats --------------------------------------------------------------------------------------
    def _capacity(self) -> int:
        """How many runs to claim this tick: what this node can start within the lookahead at its
        recent speed (so a node busy with slow or hanging runs leaves due work to the others)."""
        s = self.settings
        per_permit = self._real(s.lookahead_s) / max(self.stats.avg_run_s, 0.005)
        busy = self.dispatcher.busy()
        fits = int(s.concurrency * per_permit) - busy
        return max(0, min(s.claim_limit, max(fits, s.concurrency - busy)))

    def node_stats(self) -> dict[str, Any]:
        """What the heartbeat stores in `nodes.stats` (read by `status` and the status page)."""
        lags = sorted(self.stats.lags)  # sorted once: percentile then sorts a sorted list
        return {
            "started": self.stats.started,
            "finished": self.stats.finished,
            "running": self.dispatcher.running_count(),
            "held": self.dispatcher.held_count(),
            "lag_p50_s": percentile(lags, 50) if lags else None,
            "lag_p99_s": percentile(lags, 99) if lags else None,
            "by_outcome": dict(self.stats.by_outcome),
            "statements": self.gateway.statements,
            "missed": self.claim.counts.missed,
            "coalesced": self.claim.counts.coalesced,
            "layers_missing": [k for k, v in self.sandbox.layers.items() if not v],
            # The scheduler clock at this heartbeat: status windows follow it (fleet_clock.py).
            "clock_now": iso_utc(self.clock.now()),
            "clock_scale": self.clock.scale,
        }
