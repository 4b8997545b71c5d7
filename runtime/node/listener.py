"""LISTEN for changes to plugins and configs (a trigger NOTIFYs on every insert, update or
delete, including an UPDATE typed by hand in psql) and for manual triggers, on a connection and
a thread of its own. It only hands what it hears over (`drain`); the reload duty acts on it.
The node also reconciles periodically, in case a notification is lost while disconnected.

LISTEN needs a session of its own. Behind a pooler in transaction mode (PgBouncer) the LISTEN
lands on a pooled server connection that goes back to the pool at once, and notifications never
reach us, silently. So after each LISTEN the listener checks that it really hears: it NOTIFYs
a probe channel from a second connection and waits for it. When the probe does not come back it
says so once, gives up listening (`deaf`) and the node lives on its periodic reconcile; an
operator gives a direct connection for LISTEN alone with `serve --listen-database-url`, or says
there is none to listen on with `--no-listen`."""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from runtime.db import DatabaseUnavailable, connect, describe_location

log = logging.getLogger("plugin_runtime.node.listener")

CHANNELS = ("plugin_runtime_changes", "plugin_runtime_trigger")
PROBE_CHANNEL = "plugin_runtime_probe"
PROBE_TIMEOUT_S = 3.0


@dataclass
class Change:
    channel: str
    payload: dict[str, Any]


class Listener:
    def __init__(self, url: str, wake: threading.Event, *, probe: bool = True) -> None:
        self.url = url
        self.wake = wake
        self.probe = probe
        self.deaf = threading.Event()  # notifications do not arrive through `url`: not listening
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
                if self.probe and not self._hears(conn):
                    self._go_deaf(conn)
                    return
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
                        if note.channel == PROBE_CHANNEL:
                            continue  # a late probe answer (or another node's probe)
                        self.events.put(Change(note.channel, payload))
                        self.wake.set()
            except (psycopg.Error, DatabaseUnavailable) as exc:
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

    def _hears(self, conn: psycopg.Connection[Any]) -> bool:
        """NOTIFY a probe from a second connection and wait for it on `conn`: False when it does
        not arrive (a pooler in transaction mode between us and the server)."""
        token = secrets.token_hex(8)
        conn.execute(f"LISTEN {PROBE_CHANNEL}")
        with connect(self.url, application_name="plugin-runtime listener probe") as other:
            other.execute("SELECT pg_notify(%s, %s)", (PROBE_CHANNEL, token))
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            for note in conn.notifies(timeout=left, stop_after=1):
                if note.channel == PROBE_CHANNEL and note.payload == token:
                    return True
        return False

    def _go_deaf(self, conn: psycopg.Connection[Any]) -> None:
        try:
            conn.execute("UNLISTEN *")  # leave nothing listening on a pooled server connection
        except psycopg.Error:
            pass
        self.deaf.set()
        log.warning(
            "notifications do not arrive through %s (a pooler in transaction mode, such as "
            "PgBouncer?): not listening; changes take effect at the periodic reconcile. Give "
            "--listen-database-url a direct connection to PostgreSQL to hear them at once",
            describe_location(self.url),
        )
