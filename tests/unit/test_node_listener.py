"""The listener against its gateway session in memory (runtime.testing.memory_gateway): what it
hears and hands over, the probe that finds a pooler that swallows notifications, a lost
connection, and the reload duty driven by what the listener heard."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from runtime.db import DatabaseUnavailable
from runtime.node import listener as listener_module
from runtime.node.listener import Change, Listener
from runtime.node.node import Node
from runtime.queries import query
from runtime.testing.memory_gateway import MemoryGateway, MemoryListenerGateway
from sandbox.manifest import Cadence
from sandbox.outcome import Outcome
from tests.unit.node_kit import T0, Kit


def _until(predicate: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def started() -> Iterator[Callable[[MemoryListenerGateway], Listener]]:
    listeners: list[Listener] = []

    def start(session: MemoryListenerGateway) -> Listener:
        listener = Listener(session, threading.Event())
        listeners.append(listener)
        listener.start()
        return listener

    yield start
    for listener in listeners:
        listener.stop()
    for listener in listeners:
        listener.join(5)


def test_the_listener_hears_through_its_session_and_hands_over_what_it_heard(
    started: Callable[[MemoryListenerGateway], Listener],
) -> None:
    session = MemoryListenerGateway()
    listener = started(session)
    assert listener.connected.wait(5)
    assert listener.drain() == [Change("reconnected", {})]  # a reconcile follows every connect
    listener.wake.clear()
    change = {"table": "plugin_configs", "id": 3, "op": "UPDATE", "runnable": False}
    session.notify("plugin_runtime_changes", json.dumps(change))
    session.notify("plugin_runtime_probe", "another node's probe")  # not handed over
    session.notify("plugin_runtime_trigger", "42")
    session.notify("plugin_runtime_trigger", "not a run id")
    heard: list[Change] = []
    _until(lambda: heard.extend(listener.drain()) or len(heard) >= 3, "three changes")
    assert heard == [
        Change("plugin_runtime_changes", change),
        Change("plugin_runtime_trigger", {"id": 42}),
        Change("plugin_runtime_trigger", {}),
    ]
    assert listener.wake.is_set()
    # LISTEN twice, then the probe: LISTEN and NOTIFY. Counted by the session, as the node's.
    assert listener.statements == session.statements == 4
    assert not listener.deaf.is_set()


def test_a_listener_whose_probe_never_comes_back_stops_listening(
    started: Callable[[MemoryListenerGateway], Listener], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listener_module, "PROBE_TIMEOUT_S", 0.2)
    session = MemoryListenerGateway(hears=False)  # a pooler in transaction mode
    listener = started(session)
    assert listener.deaf.wait(5)
    assert not listener.connected.is_set() and listener.drain() == []
    assert session.listening == set() and not session.is_open  # UNLISTEN *, then closed
    assert session.statements == 5 and session.opens == 1


def test_a_listener_that_loses_its_connection_reconnects_and_asks_for_a_reconcile(
    started: Callable[[MemoryListenerGateway], Listener],
) -> None:
    session = MemoryListenerGateway()
    session.fail_next("open", DatabaseUnavailable("connection refused"))
    listener = started(session)
    assert listener.connected.wait(5), "it retries a refused connection"
    session.fail_next("notifications", DatabaseUnavailable("server closed the connection"))
    _until(lambda: session.opens == 2 and listener.connected.is_set(), "a reconnect")
    assert listener.reconnects == 1
    assert listener.drain() == [Change("reconnected", {}), Change("reconnected", {})]


def test_the_listener_gateway_statements_name_the_channels_the_listener_filters() -> None:
    assert query("listen_changes") == f"LISTEN {listener_module.CHANNELS[0]};"
    assert query("listen_trigger") == f"LISTEN {listener_module.CHANNELS[1]};"
    assert query("listen_probe") == f"LISTEN {listener_module.PROBE_CHANNEL};"


def test_the_reload_duty_acts_on_what_the_nodes_listener_heard() -> None:
    """A disable typed in psql, as the node sees it: the trigger's NOTIFY reaches the listener's
    session of the node's gateway, the reload duty cancels the config's held runs."""
    kit = Kit()

    class NoSandbox:
        layers: dict[str, bool] = {}
        layer_reasons: dict[str, str] = {}

    node = Node("postgresql://unused", kit.settings, kit.clock, NoSandbox(), kit.gateway)  # type: ignore[arg-type]
    assert isinstance(kit.gateway, MemoryGateway)
    session = kit.gateway.listener_session
    assert session is not None and node.listener.session is session
    config = kit.config()
    kit.task(config, Cadence.HOUR, "0 * * * *", next_slot=T0.replace(minute=0, second=0))
    node.claim.tick(10, {})
    assert node.dispatcher.held_count() == 1
    node.listener.start()
    try:
        assert node.listener.connected.wait(5)
        assert node.reload.handle() is False  # the reconcile after connecting
        kit.gateway.configs[config].enabled = False
        session.notify(
            "plugin_runtime_changes",
            json.dumps({"table": "plugin_configs", "id": config, "op": "UPDATE"}),
        )
        _until(node.listener.events.qsize, "the change")
        assert node.reload.handle() is True
    finally:
        node.listener.stop()
        node.listener.join(5)
    assert node.dispatcher.held_count() == 0 and len(node.ledger) == 0
    (run,) = kit.gateway.runs.values()
    assert run.outcome is Outcome.CANCELLED
    assert ("sync_tasks", [config]) in kit.gateway.calls
