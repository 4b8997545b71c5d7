"""Start claimed runs at their due time, at most `concurrency` at once, each in a fresh sandbox
child. Knows nothing of the database.

Threads: the dispatcher's own thread waits for due runs and concurrency permits and starts runs;
the sandbox's I/O thread calls back when a run ends. Both only hand over (`on_start`,
`on_finished`: the node queues them for its own thread); the dispatcher's state (held and
running runs) is touched only under its one lock.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from runtime.clock import Clock
from runtime.jsonable import iso_utc
from runtime.node.runs import ClaimedRun, Finished, Started
from sandbox import Limits, RunInfo, RunRequest, Sandbox, resolve_limits
from sandbox.manifest import Cadence

_Held = tuple[datetime, int, ClaimedRun]
MAX_RESOLVED_LIMITS = 1000  # distinct limits plugins ask for, kept resolved


class Dispatcher:
    def __init__(
        self,
        sandbox: Sandbox,
        clock: Clock,
        concurrency: int,
        caps: Limits,
        on_finished: Callable[[Finished], None],
        on_start: Callable[[Started], None],
    ) -> None:
        self.sandbox = sandbox
        self.clock = clock
        self.concurrency = concurrency
        self.caps = caps
        self.on_finished = on_finished
        self.on_start = on_start
        # Held runs, by due time: hourly/daily/cron and manual ones, and minute ones apart.
        self._held: list[_Held] = []
        self._held_minute: list[_Held] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._permits = threading.Semaphore(concurrency)  # one per run in flight
        self._running: dict[int, ClaimedRun] = {}
        # What each plugin asked for, resolved against the caps once (dispatcher thread only).
        self._limits: dict[Limits, Limits] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- what the node asks ---------------------------------------------------------------------
    def add(self, runs: list[ClaimedRun]) -> None:
        with self._cond:
            for run in runs:
                heap = self._held_minute if run.cadence is Cadence.MINUTE else self._held
                heapq.heappush(heap, (run.due_at, next(self._seq), run))
            self._cond.notify()

    def held_count(self) -> int:
        with self._cond:
            return len(self._held) + len(self._held_minute)

    def running_count(self) -> int:
        with self._cond:
            return len(self._running)

    def busy(self) -> int:
        with self._cond:
            return len(self._held) + len(self._held_minute) + len(self._running)

    def held_configs(self) -> set[int]:
        with self._cond:
            return {item[2].config_id for item in self._held + self._held_minute}

    def update_values(self, config_id: int, values: dict[str, Any]) -> int:
        """Give held runs of a config its new values; returns how many."""
        with self._cond:
            runs = [
                item[2] for item in self._held + self._held_minute if item[2].config_id == config_id
            ]
            for run in runs:
                run.values = values
            return len(runs)

    def take_held(self, config_id: int | None = None) -> list[ClaimedRun]:
        """Remove held (not yet started) runs, of one config or all; the caller releases them."""
        with self._cond:
            taken: list[_Held] = []
            kept: list[list[_Held]] = []
            for heap in (self._held, self._held_minute):
                keep: list[_Held] = []
                for item in heap:
                    mine = config_id is None or item[2].config_id == config_id
                    (taken if mine else keep).append(item)
                heapq.heapify(keep)
                kept.append(keep)
            self._held, self._held_minute = kept
            return [item[2] for item in taken]

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no run is in flight (held runs are not waited for)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._running, timeout)

    # -- the dispatcher's thread ------------------------------------------------------------------
    def _next_due(self) -> datetime | None:
        tops = [heap[0][0] for heap in (self._held, self._held_minute) if heap]
        return min(tops) if tops else None

    def _pop_next(self) -> ClaimedRun | None:
        """The earliest due run, but a due hourly/daily/cron run goes before due minute runs:
        when permits are scarce, minute runs may be late; the others must not be skipped."""
        now = self.clock.now()
        for heap in (self._held, self._held_minute):
            if heap and heap[0][0] <= now:
                return heapq.heappop(heap)[2]
        return None

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    due = self._next_due()
                    if due is not None:
                        wait = self.clock.real_seconds_until(due)
                        if wait <= 0:
                            break
                        self._cond.wait(min(wait, 1.0))
                    else:
                        self._cond.wait(1.0)
                if self._stopping:
                    return
            # Wait for a free permit outside the lock, then take the earliest due run.
            while not self._permits.acquire(timeout=0.5):
                if self._stopping:
                    return
            with self._cond:
                run = self._pop_next()
                if run is None:
                    self._permits.release()
                    continue
                self._running[run.run_id] = run
            self._launch(run)

    def _resolved(self, asked: Limits) -> Limits:
        limits = self._limits.get(asked)
        if limits is None:
            limits = resolve_limits(asked, caps=self.caps)
            if len(self._limits) >= MAX_RESOLVED_LIMITS:
                self._limits.clear()
            self._limits[asked] = limits
        return limits

    def _launch(self, run: ClaimedRun) -> None:
        started_at = self.clock.now()
        self.on_start(Started(run, started_at))
        request = RunRequest(
            plugin=run.plugin,
            task=run.task,
            config=run.values,
            storage=run.storage,
            limits=self._resolved(run.plugin.manifest.limits),
            run=RunInfo(
                config_id=run.config_id,
                task=run.task,
                slot=iso_utc(run.slot),
                attempt=run.attempt,
                backfilled=run.backfilled,
                run_id=run.run_id,
            ),
        )
        future = self.sandbox.submit(request)

        def finished(_: object) -> None:
            # On the sandbox's I/O thread: hand the run over, free its permit, nothing more.
            self.on_finished(Finished(run, future.result(), started_at, self.clock.now()))
            with self._cond:
                self._running.pop(run.run_id, None)
                if not self._running:
                    # Only `wait_idle` waits for this; the dispatcher's own loop waits for due
                    # runs and permits, and is not woken for nothing after every run.
                    self._cond.notify_all()
            self._permits.release()

        future.add_done_callback(finished)
