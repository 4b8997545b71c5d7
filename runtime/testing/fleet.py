"""A real fleet of `plugin-runtime serve` processes on one database, for fault-injection tests.

    fleet = Fleet(database_url, time_scale=60, start_time=T0)
    fleet.install("examples/minute_counter")
    ids = fleet.create_configs("minute_counter", 10)
    fleet.start_nodes(3)
    fleet.nodes[0].kill()            # SIGKILL
    fleet.wait_for(lambda: ..., timeout=30)
    fleet.stop()

Every node is a real process started with the real command line; the database is real.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from runtime import store
from runtime.db import connect
from runtime.jsonable import iso_utc
from runtime.migrate import migrate
from sandbox.manifest import load_plugin


@dataclass
class Node:
    node_id: str
    make_args: Callable[[], list[str]]  # built at each start: the clock reads "now" then
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def start(self) -> Node:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(
            self.make_args(), stdout=log, stderr=log, env=self.env, start_new_session=True
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.process is not None
            os.kill(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL the node and its whole process group (fork server, children)."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait for the graceful drain."""
        if self.process is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def restart(self) -> Node:
        self.kill()
        self.restarts += 1
        return self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Fleet:
    """`start_time` is what the scheduler clock reads when it is set (or when the fleet is made);
    from then on the fleet's clock runs `time_scale` times faster than real time, and every node
    started or restarted later starts its clock at the fleet's current scheduler time."""

    database_url: str
    workdir: Path
    time_scale: float = 1.0
    start_time: datetime | None = None
    tick_interval: float = 10.0
    concurrency: int = 16
    extra_args: Sequence[str] = ()
    # The URL the nodes connect with, when not `database_url` (e.g. through PgBouncer); the
    # harness's own checks always use `database_url`.
    node_database_url: str | None = None
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._origin_real = time.monotonic()
        self._origin_unix = time.time()
        with connect(self.database_url) as conn:
            migrate(conn)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "start_time":
            super().__setattr__("_origin_real", time.monotonic())
            super().__setattr__("_origin_unix", time.time())

    def jump_clock(self, delta: timedelta) -> None:
        """Jump the scheduler clock of every node forward (nodes must have been started with
        `--jump-on-sigusr1` of the same number of minutes); later (re)starts follow."""
        assert self.start_time is not None
        object.__setattr__(self, "start_time", self.start_time + delta)  # keep the origin
        for node in self.nodes:
            node.signal(signal.SIGUSR1)

    def scheduler_now(self) -> datetime | None:
        """The fleet's scheduler time now (None: the wall clock)."""
        if self.start_time is None:
            if self.time_scale == 1.0:
                return None
            self.start_time = datetime.now(UTC)
        assert self.start_time is not None
        elapsed = (time.monotonic() - self._origin_real) * self.time_scale
        return self.start_time + timedelta(seconds=elapsed)

    # -- data ---------------------------------------------------------------------------------
    def conn(self) -> Any:
        return connect(self.database_url)

    def install(self, plugin_dir: str | Path) -> int:
        with self.conn() as conn:
            return store.install_plugin(conn, load_plugin(plugin_dir))

    def create_configs(
        self,
        plugin_name: str,
        count: int,
        settings: dict[str, Any] | None = None,
        enabled: bool = True,
    ) -> list[int]:
        with self.conn() as conn:
            return [
                store.create_config(conn, plugin_name, dict(settings or {}), enabled=enabled)
                for _ in range(count)
            ]

    def query(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        with self.conn() as conn:
            cur = conn.execute(sql, params)  # type: ignore[arg-type]
            return list(cur.fetchall()) if cur.description else []

    def runs(self, where: str = "TRUE", params: Any = None) -> list[dict[str, Any]]:
        return self.query(f"SELECT * FROM plugin_runtime.runs WHERE {where} ORDER BY id", params)

    # -- nodes --------------------------------------------------------------------------------
    def node_args(self, node_id: str) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "runtime",
            "serve",
            "--database-url",
            self.node_database_url or self.database_url,
            "--node-id",
            node_id,
            "--concurrency",
            str(self.concurrency),
            "--tick-interval",
            str(self.tick_interval),
            "--log-format",
            "json",
        ]
        if self.scheduler_now() is not None:
            # One clock for the whole fleet: each node computes it from the same origin, however
            # long it took to start.
            assert self.start_time is not None
            args += [
                "--testing",
                "--time-scale",
                str(self.time_scale),
                "--start-time",
                iso_utc(self.start_time),
                "--clock-origin",
                repr(self._origin_unix),
            ]
        return args + list(self.extra_args)

    def add_node(self, node_id: str | None = None) -> Node:
        node_id = node_id or f"node-{len(self.nodes) + 1}"
        env = {k: v for k, v in os.environ.items() if k != "PLUGIN_RUNTIME_DATABASE_URL"}
        node = Node(node_id, lambda: self.node_args(node_id), self.workdir / f"{node_id}.log", env)
        self.nodes.append(node)
        return node.start()

    def start_nodes(self, count: int) -> list[Node]:
        return [self.add_node() for _ in range(count)]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every running node has registered and heartbeated."""
        ids = [n.node_id for n in self.nodes if n.alive()]
        self.wait_for(
            lambda: (
                len(
                    self.query(
                        "SELECT id FROM plugin_runtime.nodes WHERE id = ANY(%s) AND stopped_at IS NULL",
                        (ids,),
                    )
                )
                == len(ids)
            ),
            timeout,
            "nodes to register",
        )

    def wait_for(
        self,
        predicate: Callable[[], Any],
        timeout: float,
        what: str = "condition",
        interval: float = 0.2,
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n.node_id}\n{n.log_text()[-3000:]}" for n in self.nodes)
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}\n{logs}")
            time.sleep(interval)

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive():
                node.signal(signal.SIGTERM)
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(20)
                except subprocess.TimeoutExpired:
                    node.kill()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
