"""The sandbox's processes live and die together: no run outlives its fork server."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil

from sandbox import Limits, RunRequest, Sandbox, load_plugin

FAULTY = Path(__file__).resolve().parents[2] / "examples" / "faulty"


def test_runs_die_with_a_killed_fork_server() -> None:
    plugin = load_plugin(FAULTY / "infinite_loop")
    sandbox = Sandbox().start()
    try:
        server_pid = sandbox.fork_server_pid
        assert server_pid is not None
        future = sandbox.submit(
            RunRequest(
                plugin=plugin,
                task="run_every_minute",
                limits=Limits(timeout_s=30, cpu_s=30, memory_mb=128),
            )
        )
        deadline = time.monotonic() + 10
        children: list[psutil.Process] = []
        while not children and time.monotonic() < deadline:
            children = psutil.Process(server_pid).children()
            time.sleep(0.05)
        assert children, "the run's child started"
        time.sleep(0.3)  # past the jail setup: the child runs plugin code as its own uid
        assert children[0].uids().real >= 200_000
        os.kill(server_pid, signal.SIGKILL)
        gone, alive = psutil.wait_procs(children, timeout=5)
        assert alive == [], "the child died with its fork server (PDEATHSIG survives the uid drop)"
        outcome = future.result(timeout=10)
        assert outcome.outcome == "crashed"
        # The next run starts a new fork server.
        healthy = load_plugin(Path(__file__).resolve().parents[2] / "examples" / "minute_counter")
        assert sandbox.run(RunRequest(plugin=healthy, task="run_every_minute")).outcome == "ok"
    finally:
        sandbox.close()
