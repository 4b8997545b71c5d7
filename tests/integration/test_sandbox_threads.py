"""The caller of `Sandbox.submit` (a node's dispatcher thread) never waits on a child: of the run's
start frame, which waits for the child to enter its jail when it is larger than the socket's
buffer, the caller sends only what fits at once; the rest is sent by the sandbox's I/O thread as
the child reads (the same path as every reply: no thread ever blocks sending to a child)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sandbox import RunRequest, Sandbox, load_plugin
from sandbox.client import Sandbox as SandboxClass

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def test_the_start_frame_is_sent_by_the_io_thread_not_by_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    senders: list[str] = []
    original = SandboxClass._flush

    def recording(self: SandboxClass, run: object) -> None:
        senders.append(threading.current_thread().name)
        original(self, run)  # type: ignore[arg-type]

    monkeypatch.setattr(SandboxClass, "_flush", recording)
    plugin = load_plugin(PLUGINS / "tiny")
    big = {f"k{i}": "x" * 1000 for i in range(4000)}  # 4 MB: more than a socket buffer holds
    with Sandbox() as sb:
        future = sb.submit(
            RunRequest(plugin=plugin, task="run_every_hour", config={"api_key": "k"}, storage=big)
        )
        report = future.result(timeout=60)
    assert report.ok, report.error
    assert senders and all(name == "sandbox-io" for name in senders), senders
    assert threading.current_thread().name not in senders


def test_data_that_cannot_be_sent_ends_the_run_not_the_caller() -> None:
    plugin = load_plugin(PLUGINS / "tiny")
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    with Sandbox() as sb:
        report = sb.submit(
            RunRequest(
                plugin=plugin, task="run_every_hour", config={"api_key": "k"}, storage={"d": deep}
            )
        ).result(timeout=60)
        assert report.outcome == "crashed" and "cannot be sent" in report.error.message  # type: ignore[union-attr]
        assert sb.run(RunRequest(plugin=plugin, task="run_every_hour", config={"api_key": "k"})).ok
