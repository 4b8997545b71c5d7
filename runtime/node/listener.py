"""LISTEN for changes to plugins and configs (a trigger NOTIFYs on every insert, update or
delete, including an UPDATE typed by hand in psql) and for manual triggers, on a connection and
a thread of its own. It only hands what it hears over (`drain`); the reload duty acts on it.
The node also reconciles periodically, in case a notification is lost while disconnected."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from runtime.db import DatabaseUnavailable, connect

log = logging.getLogger("plugin_runtime.node.listener")

CHANNELS = ("plugin_runtime_changes", "plugin_runtime_trigger")


@dataclass
class Change:
    channel: str
    payload: dict[str, Any]


class Listener:
    def __init__(self, url: str, wake: threading.Event) -> None:
        self.url = url
        self.wake = wake
        self.events: queue.Queue[Change] = queue.Queue()
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="listener", daemon=True)
        self.reconnects = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def drain(self) -> list[Change]:
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def _loop(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                conn = connect(self.url, application_name="plugin-runtime listener")
            except (DatabaseUnavailable, psycopg.Error):
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            try:
                for channel in CHANNELS:
                    conn.execute(f"LISTEN {channel}")
                self.connected.set()
                # A reconnect may have missed notifications: ask for a full reconcile.
                self.events.put(Change("reconnected", {}))
                self.wake.set()
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=1.0):
                        try:
                            payload = (
                                json.loads(note.payload)
                                if note.payload.startswith("{")
                                else {"id": int(note.payload)}
                            )
                        except ValueError:
                            payload = {}
                        self.events.put(Change(note.channel, payload))
                        self.wake.set()
            except psycopg.Error as exc:
                log.warning(
                    "listener lost its connection: %s",
                    str(exc).splitlines()[0] if str(exc) else exc,
                )
                self.reconnects += 1
            finally:
                self.connected.clear()
                try:
                    conn.close()
                except psycopg.Error:
                    pass
            time.sleep(0.1)
