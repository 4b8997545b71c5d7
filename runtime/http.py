"""The node's HTTP port (`serve --http HOST:PORT`), stdlib only:

- `GET /metrics`   Prometheus text of runtime.metrics.REGISTRY (+ quarantined configs, from the
                   database at most every QUARANTINE_REFRESH_S)
- `GET /healthz`   200 while the process is alive
- `GET /readyz`    200 when the node reaches the database and has ticked, else 503
- `GET /api/status` the `plugin-runtime status` snapshot as JSON (its own short connection)
- `GET /`          the status page (runtime/web/status.html), with charts from `/api/charts`
- `GET /configs/ID` a config's page: its recent slots coloured by outcome (`/api/configs/ID`)
- `GET /runs/ID`   a run's page: error, traceback, logs, result (`/api/runs/ID`)
- `POST /api/configs/ID/disable|enable`, `POST /api/configs/ID/trigger/TASK`: only when
  $PLUGIN_RUNTIME_ADMIN_TOKEN is set, with `Authorization: Bearer TOKEN` (403 when admin actions
  are off, 401 without the right token).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from runtime import metrics, page_data, store
from runtime.db import DatabaseUnavailable, connect
from runtime.jsonable import jsonable
from runtime.queries import query
from runtime.status import Thresholds, status_for_url

log = logging.getLogger("plugin_runtime.http")

ADMIN_TOKEN_ENV = "PLUGIN_RUNTIME_ADMIN_TOKEN"
QUARANTINE_REFRESH_S = 10.0
WEB = Path(__file__).parent / "web"
STATUS_PAGE = WEB / "status.html"
_PAGE_PATH = re.compile(r"^/(?P<kind>configs|runs)/(?P<id>\d{1,18})/?$")
_API_PATH = re.compile(r"^/api/(?P<kind>configs|runs)/(?P<id>\d{1,18})$")


def page(name: str) -> bytes:
    """A page of runtime/web with the shared style and script inlined (one response, no
    external asset: the page works from the node alone, under a strict CSP)."""
    text = (WEB / name).read_text(encoding="utf-8")
    text = text.replace("/* page.css */", (WEB / "page.css").read_text(encoding="utf-8"))
    text = text.replace("/* common.js */", (WEB / "common.js").read_text(encoding="utf-8"))
    return text.encode()


_ACTION = re.compile(
    r"^/api/configs/(?P<id>\d{1,18})/(?:(?P<verb>disable|enable)|trigger/(?P<task>[^/]{1,200}))$"
)
PAGE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    supervisor: Any
    admin_token: str | None
    quarantine_checked: float = 0.0
    quarantine_lock: threading.Lock

    def refresh_quarantined(self) -> None:
        """Update the quarantined-configs gauge, at most every QUARANTINE_REFRESH_S."""
        with self.quarantine_lock:
            if time.monotonic() - self.quarantine_checked < QUARANTINE_REFRESH_S:
                return
            self.quarantine_checked = time.monotonic()
            try:
                with connect(
                    self.supervisor.url,
                    connect_timeout=3,
                    application_name="plugin-runtime metrics",
                ) as conn:
                    row = conn.execute(query("quarantined_count")).fetchone()
                metrics.QUARANTINED.set(int(row["n"]) if row else 0)
            except Exception as exc:  # the gauge keeps its last value; /metrics still answers
                log.debug("could not refresh the quarantined gauge: %s", exc)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "plugin-runtime"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    # -- responses ------------------------------------------------------------------------------
    def _send(
        self, code: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, data: Any) -> None:
        self._send(code, json.dumps(jsonable(data)).encode(), "application/json")

    # -- GET ------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = self.path.split("?", 1)[0]
        sup = self.server.supervisor
        if path == "/healthz":
            self._json(200, {"alive": True, "node": sup.settings.node_id})
        elif path == "/readyz":
            db_ok, ticked = sup.db_ok.is_set(), sup.ready.is_set()
            ready = db_ok and ticked and not sup.stopping.is_set()
            self._json(200 if ready else 503, {"ready": ready, "database": db_ok, "ticked": ticked})
        elif path == "/metrics":
            self.server.refresh_quarantined()
            self._send(200, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST)
        elif path == "/api/status":
            status = status_for_url(
                sup.url,
                connect_timeout=3,
                thresholds=Thresholds(dead_after_s=sup.settings.dead_after_s),
            )
            status["node"] = sup.settings.node_id
            status["admin"] = self.server.admin_token is not None
            self._json(200, status)
        elif path in ("/", "/index.html"):
            self._page(STATUS_PAGE.read_bytes())
        elif (match := _PAGE_PATH.match(path)) is not None:
            self._page(page("config.html" if match["kind"] == "configs" else "run.html"))
        elif path == "/api/charts":
            self._data(lambda: page_data.charts(sup.url))
        elif (match := _API_PATH.match(path)) is not None:
            item = int(match["id"])
            if match["kind"] == "configs":
                self._data(lambda: page_data.config_page(sup.url, item))
            else:
                self._data(lambda: page_data.run_page(sup.url, item))
        else:
            self._json(404, {"error": f"no such page: {path}"})

    def _page(self, body: bytes) -> None:
        self._send(
            200,
            body,
            "text/html; charset=utf-8",
            {"Content-Security-Policy": PAGE_CSP, "X-Frame-Options": "DENY"},
        )

    def _data(self, produce: Callable[[], Any]) -> None:
        """JSON of `produce()`: 404 for an unknown config or run, 503 without the database."""
        try:
            self._json(200, produce())
        except store.NotFound as exc:
            self._json(404, {"error": str(exc)})
        except (DatabaseUnavailable, psycopg.Error) as exc:
            self._json(503, {"error": str(exc).splitlines()[0] if str(exc) else "database error"})

    do_HEAD = do_GET  # noqa: N815

    # -- POST (admin actions) -------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        path = self.path.split("?", 1)[0]
        match = _ACTION.match(path)
        if match is None:
            self._json(404, {"error": f"no such action: {path}"})
            return
        token = self.server.admin_token
        if token is None:
            self._json(403, {"error": f"admin actions are off: set {ADMIN_TOKEN_ENV} on the node"})
            return
        given = self.headers.get("Authorization", "")
        if not given.startswith("Bearer ") or not hmac.compare_digest(
            given[len("Bearer ") :].strip().encode(), token.encode()
        ):
            self._json(
                401,
                {"error": "a valid 'Authorization: Bearer TOKEN' header is required"},
            )
            return
        config_id = int(match["id"])
        try:
            with connect(
                self.server.supervisor.url,
                connect_timeout=3,
                application_name="plugin-runtime admin",
            ) as conn:
                if match["verb"]:
                    store.set_enabled(conn, config_id, match["verb"] == "enable")
                    message = f"config {config_id} {match['verb']}d"
                else:
                    run_id = store.trigger(conn, config_id, match["task"])
                    message = (
                        f"queued manual run {run_id} of {match['task']} for config {config_id}"
                    )
        except store.NotFound as exc:
            self._json(404, {"error": str(exc)})
            return
        except DatabaseUnavailable as exc:
            self._json(503, {"error": str(exc)})
            return
        log.info("admin action from %s: %s", self.address_string(), message)
        self._json(200, {"ok": True, "message": message})


def parse_addr(addr: str) -> tuple[str, int]:
    """ "HOST:PORT" (or "[v6]:PORT", or ":PORT" for all interfaces) -> (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got '{addr}'")
    return host.strip("[]") or "0.0.0.0", int(port)


def make_server(addr: str, supervisor: Any, admin_token: str | None = None) -> _Server:
    host, port = parse_addr(addr)
    server = _Server((host, port), _Handler)
    server.supervisor = supervisor
    server.admin_token = admin_token or None
    server.quarantine_lock = threading.Lock()
    return server


def serve_http(addr: str, supervisor: Any) -> threading.Thread:
    """Serve the node's HTTP port on a daemon thread and return that thread (its `server`
    attribute is the server; `server.server_address` has the bound port)."""
    try:
        server = make_server(addr, supervisor, os.environ.get(ADMIN_TOKEN_ENV))
    except (ValueError, OSError) as exc:
        print(
            f"error: --http {addr}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.server = server  # type: ignore[attr-defined]
    thread.start()
    host, port = server.server_address[:2]
    log.info(
        "serving /metrics, /healthz, /readyz and the status page on http://%s:%s/%s",
        host,
        port,
        " (admin actions on)" if server.admin_token else "",
    )
    return thread
