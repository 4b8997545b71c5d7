"""Start claimed runs at their due time, at most `concurrency` at once, each in a fresh sandbox
child; hand every finished run to `on_done`. Knows nothing of the database."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

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
        self._held: list[tuple[datetime, int, ClaimedRun]] = []
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
                heapq.heappush(self._held, (run.due_at, next(self._seq), run))
            self._cond.notify()

    def held_count(self) -> int:
        with self._cond:
            return len(self._held)

    def running_count(self) -> int:
        with self._cond:
            return len(self._running)

    def busy(self) -> int:
        return self.held_count() + self.running_count()

    def take_held(self, config_id: int | None = None) -> list[ClaimedRun]:
        """Remove held (not yet started) runs, of one config or all; the caller releases them."""
        with self._cond:
            keep: list[tuple[datetime, int, ClaimedRun]] = []
            taken: list[tuple[datetime, int, ClaimedRun]] = []
            for item in self._held:
                (taken if config_id is None or item[2].config_id == config_id else keep).append(item)
            heapq.heapify(keep)
            self._held = keep
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
                    if self._held:
                        wait = self.clock.real_seconds_until(self._held[0][0])
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
                if not self._held or self.clock.real_seconds_until(self._held[0][0]) > 0:
                    self._slots.release()
                    continue
                _, _, run = heapq.heappop(self._held)
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
            with self._cond:
                self._running.pop(run.run_id, None)
                self._cond.notify_all()
            self._slots.release()
            self.on_done(Finished(run, outcome, started_at, finished_at))

        future.add_done_callback(done)
