"""The scheduler's clock. Normally the wall clock; for fault-injection suites it can start at a
chosen time and run N times faster (`serve --testing --time-scale N --start-time ISO`).
Sandbox limits, heartbeats and leases always use real seconds."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(
        self, start: datetime | None = None, scale: float = 1.0, origin_unix: float | None = None
    ) -> None:
        """`origin_unix`: the wall-clock time (Unix seconds) at which the clock read `start`, so
        that several processes started at different moments share one scheduler clock."""
        if scale <= 0:
            raise ValueError("time scale must be > 0")
        self.scale = float(scale)
        lag = time.time() - origin_unix if origin_unix is not None else 0.0
        self._origin_real = time.monotonic() - lag
        self._origin = (start or datetime.now(UTC)).astimezone(UTC)
        self._wall = start is None and scale == 1.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        if self._wall:
            return datetime.now(UTC)
        elapsed = time.monotonic() - self._origin_real
        return self._origin + timedelta(seconds=elapsed * self.scale)

    def real_seconds_until(self, when: datetime) -> float:
        """How long, in real seconds, until the scheduler clock reads `when` (<= 0: passed)."""
        return (when - self.now()).total_seconds() / self.scale

    def jump(self, delta: timedelta) -> None:
        """Move the scheduler clock (fault injection: a clock jump)."""
        with self._lock:
            if self._wall:
                self._origin = datetime.now(UTC)
                self._origin_real = time.monotonic()
                self._wall = False
            self._origin += delta


def parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
