"""The cuts to a run's CPU (docs/benchmarks.md, "Cuts this round") seen from outside, on real
jailed children: globals prepared once in the fork server are still fresh in every run, a child
without a cyclic collector still ends at its memory limit, and many runs ending together are
each reported once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sandbox import Limits, Plugin, RunRequest, Sandbox, load_plugin

TINY = Path(__file__).resolve().parents[1] / "plugins" / "tiny"


def _plugin(source: str) -> Plugin:
    return dataclasses.replace(load_plugin(TINY), source=source)


def test_each_run_gets_fresh_globals_from_the_prepared_ones() -> None:
    plugin = _plugin(
        "SEEN = []\n"
        "\n"
        "def run_every_minute(meta):\n"
        "    SEEN.append(1)\n"
        "    return {'seen': len(SEEN)}\n"
    )
    with Sandbox() as sandbox:
        for _ in range(3):
            report = sandbox.run(RunRequest(plugin=plugin, task="run_every_minute"))
            assert report.outcome == "ok", report
            assert report.result == {"seen": 1}


def test_garbage_cycles_without_a_collector_end_at_the_memory_limit() -> None:
    # The child runs with the cyclic collector off: a plugin that leaks cycles grows until
    # RLIMIT_AS stops it, and the run ends as memory_limit (not a hang, not a crash).
    plugin = _plugin(
        "def run_every_minute(meta):\n"
        "    while True:\n"
        "        node = [bytearray(1 << 16)]\n"
        "        node.append(node)\n"
    )
    healthy = _plugin("def run_every_minute(meta):\n    return 1\n")
    with Sandbox() as sandbox:
        report = sandbox.run(
            RunRequest(
                plugin=plugin,
                task="run_every_minute",
                limits=Limits(timeout_s=20.0, cpu_s=10.0, memory_mb=128),
            )
        )
        assert report.outcome == "memory_limit", report
        assert sandbox.run(RunRequest(plugin=healthy, task="run_every_minute")).result == 1


def test_runs_ending_together_are_each_reported_once() -> None:
    # Exits seen in one poll are reaped and reported in one write to the supervisor.
    plugin = _plugin("def run_every_minute(meta):\n    return meta.config.get('n')\n")
    with Sandbox() as sandbox:
        futures = [
            sandbox.submit(RunRequest(plugin=plugin, task="run_every_minute", config={"n": n}))
            for n in range(64)
        ]
        reports = [f.result(timeout=60) for f in futures]
    assert [r.outcome for r in reports] == ["ok"] * 64
    assert [r.result for r in reports] == list(range(64))


def test_start_frames_larger_than_the_socket_buffer_still_arrive_whole() -> None:
    # What does not fit in the run's socket at submit waits in its outbox; only such runs are
    # watched for room, and each leaves that watch once its outbox is empty.
    plugin = _plugin(
        "def run_every_minute(meta):\n    return [len(meta.config['blob']), meta.config['n']]\n"
    )
    size = 3 * 1024 * 1024
    with Sandbox() as sandbox:
        futures = [
            sandbox.submit(
                RunRequest(
                    plugin=plugin,
                    task="run_every_minute",
                    config={"blob": "x" * size, "n": n},
                    limits=Limits(timeout_s=20.0, cpu_s=10.0, memory_mb=256),
                )
            )
            for n in range(6)
        ]
        reports = [f.result(timeout=60) for f in futures]
        assert [r.result for r in reports] == [[size, n] for n in range(6)], reports
        assert sandbox._outboxed == {}
        small = sandbox.run(
            RunRequest(plugin=plugin, task="run_every_minute", config={"blob": "", "n": 9})
        )
        assert small.result == [0, 9]
