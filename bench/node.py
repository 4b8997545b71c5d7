"""A real supervisor (`runtime.node.Node`) on a thread of the benchmark process, and
a real `plugin-runtime serve` process, both on a benchmark database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import REPO_ROOT, BenchDatabase, BenchError
from runtime.clock import Clock
from runtime.jsonable import iso_utc
from runtime.node import Node, NodeSettings


def minute_start(lead_s: float, scale: float) -> datetime:
    """A scheduler start time `lead_s` real seconds before a minute boundary (so the first slot
    comes soon), on today's date."""
    now = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    return now - timedelta(seconds=lead_s * scale)


class InProcessNode:
    """`Node(url, NodeSettings(...), Clock(...)).run()` on a thread, until `stop()`."""

    def __init__(self, db: BenchDatabase, settings: NodeSettings, clock: Clock) -> None:
        self.supervisor = Node(db.url, settings, clock)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-supervisor", daemon=True)

    def _run(self) -> None:
        try:
            self.supervisor.run()
        except BaseException as exc:  # reported by stop()
            self._error = exc

    def start(self, timeout: float = 60.0) -> InProcessNode:
        self._thread.start()
        if not self.supervisor.ready.wait(timeout):
            raise BenchError(f"the supervisor did not make its first tick within {timeout:.0f} s")
        return self

    def stop(self) -> None:
        self.supervisor.request_stop()
        self._thread.join(120)
        if self._error is not None:
            raise BenchError(f"the supervisor failed: {self._error!r}")


class ServeProcess:
    """`python -m runtime serve` as its own process (what an operator runs)."""

    def __init__(
        self,
        db: BenchDatabase,
        workdir: Path,
        *,
        time_scale: float = 1.0,
        start_time: datetime | None = None,
        concurrency: int = 32,
        tick_interval: float = 10.0,
        extra: list[str] | None = None,
        url: str | None = None,
    ) -> None:
        """`url`: what the node connects with, when not `db.url` (e.g. through PgBouncer)."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{db.name}.serve.log"
        args = [
            sys.executable,
            "-m",
            "runtime",
            "serve",
            "--database-url",
            url or db.url,
            "--node-id",
            "bench-node",
            "--concurrency",
            str(concurrency),
            "--tick-interval",
            str(tick_interval),
            "--log-format",
            "json",
        ]
        if time_scale != 1.0 or start_time is not None:
            args += ["--testing", "--time-scale", str(time_scale)]
            if start_time is not None:
                args += ["--start-time", iso_utc(start_time)]
        self.args = args + list(extra or [])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServeProcess:
        env = {k: v for k, v in os.environ.items() if k != "PLUGIN_RUNTIME_DATABASE_URL"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=log, env=env, cwd=REPO_ROOT, start_new_session=True
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise BenchError(
                f"serve exited with {self.process.returncode}: {tail.strip().splitlines()[-1:]}"
            )


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.25
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
