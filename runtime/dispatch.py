"""Start claimed runs at their due time, at most `concurrency` at once, each in a fresh sandbox
child; hand every finished run to `on_done`. Knows nothing of the database."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runtime.clock import Clock, iso
from runtime.queue import ClaimedRun
from sandbox import Limits, Outcome, RunInfo, RunRequest, Sandbox, resolve_limits


@dataclass
class Finished:
    run: ClaimedRun
    outcome: Outcome
    started_at: datetime
    finished_at: datetime


class Dispatcher:
    def __init__(
        self,
        sandbox: Sandbox,
        clock: Clock,
        concurrency: int,
        caps: Limits,
        on_done: Callable[[Finished], None],
        on_start: Callable[[ClaimedRun, datetime], None] | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.clock = clock
        self.concurrency = concurrency
        self.caps = caps
        self.on_done = on_done
        self.on_start = on_start
        # Held runs, by due time: hourly/daily/cron and manual ones, and minute ones apart.
        self._held: list[tuple[datetime, int, ClaimedRun]] = []
        self._held_minute: list[tuple[datetime, int, ClaimedRun]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._slots = threading.Semaphore(concurrency)
        self._running: dict[int, ClaimedRun] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- what the supervisor asks -----------------------------------------------------------
    def add(self, runs: list[ClaimedRun]) -> None:
        with self._cond:
            for run in runs:
                heap = self._held_minute if run.cadence == "minute" else self._held
                heapq.heappush(heap, (run.due_at, next(self._seq), run))
            self._cond.notify()

    def _next_due(self) -> datetime | None:
        tops = [heap[0][0] for heap in (self._held, self._held_minute) if heap]
        return min(tops) if tops else None

    def _pop_next(self) -> ClaimedRun | None:
        """The earliest due run, but a due hourly/daily/cron run goes before due minute runs:
        when slots are scarce, minute runs may be late; the others must not be skipped."""
        now = self.clock.now()
        for heap in (self._held, self._held_minute):
            if heap and heap[0][0] <= now:
                return heapq.heappop(heap)[2]
        return None

    def held_count(self) -> int:
        with self._cond:
            return len(self._held) + len(self._held_minute)

    def running_count(self) -> int:
        with self._cond:
            return len(self._running)

    def busy(self) -> int:
        return self.held_count() + self.running_count()

    def known_ids(self) -> set[int]:
        """Runs this dispatcher holds or runs now."""
        with self._cond:
            held = self._held + self._held_minute
            return {item[2].run_id for item in held} | set(self._running)

    def held_configs(self) -> set[int]:
        with self._cond:
            return {item[2].config_id for item in self._held + self._held_minute}

    def update_settings(self, config_id: int, settings: dict[str, Any]) -> int:
        """Give held runs of a config its new settings; returns how many."""
        with self._cond:
            runs = [
                item[2] for item in self._held + self._held_minute if item[2].config_id == config_id
            ]
            for run in runs:
                run.settings = settings
            return len(runs)

    def take_held(self, config_id: int | None = None) -> list[ClaimedRun]:
        """Remove held (not yet started) runs, of one config or all; the caller releases them."""
        with self._cond:
            taken: list[tuple[datetime, int, ClaimedRun]] = []
            for name in ("_held", "_held_minute"):
                keep: list[tuple[datetime, int, ClaimedRun]] = []
                for item in getattr(self, name):
                    (taken if config_id is None or item[2].config_id == config_id else keep).append(
                        item
                    )
                heapq.heapify(keep)
                setattr(self, name, keep)
            return [item[2] for item in taken]

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no run is in flight (held runs are not waited for)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._running, timeout)

    # -- the loop -----------------------------------------------------------------------------
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
            # Wait for a free slot outside the lock, then take the earliest due run.
            while not self._slots.acquire(timeout=0.5):
                if self._stopping:
                    return
            with self._cond:
                run = self._pop_next()
                if run is None:
                    self._slots.release()
                    continue
                self._running[run.run_id] = run
            self._launch(run)

    def _launch(self, run: ClaimedRun) -> None:
        assert run.plugin is not None
        started_at = self.clock.now()
        if self.on_start is not None:
            self.on_start(run, started_at)
        request = RunRequest(
            plugin=run.plugin,
            task=run.task,
            config=run.settings,
            storage=run.storage,
            limits=resolve_limits(run.plugin.manifest.limits, caps=self.caps),
            run=RunInfo(
                config_id=run.config_id,
                task=run.task,
                slot=iso(run.slot),
                attempt=run.attempt,
                backfilled=run.backfilled,
                run_id=run.run_id,
            ),
        )
        future = self.sandbox.submit(request)

        def done(_: object) -> None:
            outcome = future.result()
            finished_at = self.clock.now()
            # Hand it on before forgetting it: a run is always either here or with on_done.
            self.on_done(Finished(run, outcome, started_at, finished_at))
            with self._cond:
                self._running.pop(run.run_id, None)
                self._cond.notify_all()
            self._slots.release()

        future.add_done_callback(done)
