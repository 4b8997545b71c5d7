"""LISTEN for changes to plugins and configs (a trigger NOTIFYs on every insert, update or
delete, including an UPDATE typed by hand in psql) and for manual triggers, on a session and a
thread of its own (a `ListenerGateway`: every statement goes through the node's gateway module,
counted and with the project's own errors). It only hands what it hears over (`drain`); the
reload duty acts on it. The node also reconciles periodically, in case a notification is lost
while disconnected.

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

from runtime.db import DatabaseError
from runtime.node.gateway import (
    CHANNELS,
    PROBE_CHANNEL,
    ListenerGateway,
    PgListenerGateway,
)

log = logging.getLogger("plugin_runtime.node.listener")

__all__ = ["CHANNELS", "PROBE_CHANNEL", "PROBE_TIMEOUT_S", "Change", "Listener"]

PROBE_TIMEOUT_S = 3.0


@dataclass
class Change:
    channel: str
    payload: dict[str, Any]


def _payload(text: str) -> dict[str, Any]:
    """A notification's payload: a JSON object (changes) or a run id (manual triggers)."""
    try:
        value = json.loads(text) if text.startswith("{") else {"id": int(text)}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class Listener:
    def __init__(
        self, session: ListenerGateway | str, wake: threading.Event, *, probe: bool = True
    ) -> None:
        """`session`: the listener's gateway (`Gateway.listener(url)`), or a database URL."""
        self.session = PgListenerGateway(session) if isinstance(session, str) else session
        self.wake = wake
        self.probe = probe
        self.deaf = threading.Event()  # notifications do not arrive through the session
        self.events: queue.Queue[Change] = queue.Queue()
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="listener", daemon=True)
        self.reconnects = 0

    @property
    def statements(self) -> int:
        """Every statement the listener sent."""
        return self.session.statements

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

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
                self.session.open()
            except DatabaseError:
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            try:
                self.session.listen()
                if self.probe and not self._hears():
                    self._go_deaf()
                    return
                self.connected.set()
                # A reconnect may have missed notifications: ask for a full reconcile.
                self.events.put(Change("reconnected", {}))
                self.wake.set()
                while not self._stop.is_set():
                    for note in self.session.notifications(timeout=1.0):
                        if note.channel == PROBE_CHANNEL:
                            continue  # a late probe answer (or another node's probe)
                        self.events.put(Change(note.channel, _payload(note.payload)))
                        self.wake.set()
            except DatabaseError as exc:
                log.warning(
                    "listener lost its connection: %s",
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )
                self.reconnects += 1
            finally:
                self.connected.clear()
                self.session.close()
            time.sleep(0.1)

    def _hears(self) -> bool:
        """NOTIFY a probe from a second connection and wait for it: False when it does not
        arrive (a pooler in transaction mode between us and the server)."""
        token = secrets.token_hex(8)
        self.session.probe(token)
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            for note in self.session.notifications(timeout=left, stop_after=1):
                if note.channel == PROBE_CHANNEL and note.payload == token:
                    return True
        return False

    def _go_deaf(self) -> None:
        try:
            self.session.unlisten()  # leave nothing listening on a pooled server connection
        except DatabaseError:
            pass
        self.session.close()  # before `deaf` is said: whoever waits on it finds the session shut
        self.deaf.set()
        log.warning(
            "notifications do not arrive through %s (a pooler in transaction mode, such as "
            "PgBouncer?): not listening; changes take effect at the periodic reconcile. Give "
            "--listen-database-url a direct connection to PostgreSQL to hear them at once",
            self.session.where,
        )
