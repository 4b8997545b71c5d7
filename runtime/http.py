"""The node's HTTP port (`serve --http HOST:PORT`):

- `GET /metrics`   Prometheus text of runtime.metrics.REGISTRY (+ the configs gauges, quarantined
                   and by plugin and state, from the database at most every CONFIGS_REFRESH_S)
- `GET /healthz`   200 while the process is alive
- `GET /readyz`    200 when the node reaches the database and has ticked, else 503
- `GET /api/status` the `plugin-runtime status` snapshot as JSON
- `GET /`          the status page (runtime/web/status.html), with charts from `/api/charts`
- `GET /configs/ID` a config's page: its recent slots coloured by outcome (`/api/configs/ID`)
- `GET /runs/ID`   a run's page: error, traceback, logs, result (`/api/runs/ID`)
- `POST /api/configs/ID/disable|enable`, `POST /api/configs/ID/trigger/TASK`: only when
  $PLUGIN_RUNTIME_ADMIN_TOKEN is set, with `Authorization: Bearer TOKEN` (403 when admin actions
  are off, 401 without the right token).

The port is open to whoever can reach it, so it is built to hold against strangers:

- One event-loop thread reads every connection; a request's head must arrive whole within
  `read_timeout_s` (a client that drips bytes is cut off) and fit in MAX_HEAD_BYTES; the answer
  must be taken within `write_timeout_s`. At most `max_connections` are open at once; beyond
  that a connection gets a 503 and is closed without being read. One request per connection.
- Everything that touches the database runs in one small pool (`db_workers` threads, one short
  connection each): the status snapshot, the charts, the config and run pages' data, the
  configs gauges, admin actions. The status snapshot and the charts are cached: at most one
  query each per `status_interval_s`, whatever the request rate; requests meanwhile get the
  last one. Per-item requests (a config, a run, an admin action) wait in the pool, at most
  `max_pending_db` of them; beyond that they get 503. So the port can never hold more than `db_workers` of the
  database's connections, and the scheduler's own connections are untouched.
- `/healthz` and `/readyz` are answered on the loop from memory, so they answer while the pool
  is busy. Every other path checks the `Host` header against the allowed names (a page on
  another site that rebinds its DNS name to this address cannot read `/api/status`): IP
  literals, `localhost`, this host's name, the bind address and `--http-allowed-hosts`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import ipaddress
import logging
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from runtime import metrics, page_data, store
from runtime.db import DatabaseUnavailable, connect
from runtime.jsonable import dumps
from runtime.queries import query
from runtime.status import Thresholds, status_for_url
from runtime.text import Masker, visible

log = logging.getLogger("plugin_runtime.http")

ADMIN_TOKEN_ENV = "PLUGIN_RUNTIME_ADMIN_TOKEN"
CONFIGS_REFRESH_S = 10.0
MAX_HEAD_BYTES = 16 * 1024
WEB = Path(__file__).parent / "web"
_PAGE_PATH = re.compile(r"^/(?P<kind>configs|runs)/(?P<id>\d{1,18})/?$")
_API_PATH = re.compile(r"^/api/(?P<kind>configs|runs)/(?P<id>\d{1,18})$")
_ACTION = re.compile(
    r"^/api/configs/(?P<id>\d{1,18})/(?:(?P<verb>disable|enable)|trigger/(?P<task>[^/]{1,200}))$"
)
PAGE_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
UNCHECKED_HOST_PATHS = ("/healthz", "/readyz")


def page(name: str) -> bytes:
    """A page of runtime/web with the shared style and script inlined (one response, no
    external asset: the page works from the node alone, under a strict CSP)."""
    text = (WEB / name).read_text(encoding="utf-8")
    text = text.replace("/* page.css */", (WEB / "page.css").read_text(encoding="utf-8"))
    text = text.replace("/* common.js */", (WEB / "common.js").read_text(encoding="utf-8"))
    text = text.replace("/* visible.js */", (WEB / "visible.js").read_text(encoding="utf-8"))
    return text.encode()


@dataclass(frozen=True)
class HttpLimits:
    """How much of the node a stranger on the port can use."""

    max_connections: int = 1024
    read_timeout_s: float = 5.0
    write_timeout_s: float = 10.0
    db_workers: int = 2
    max_pending_db: int = 16  # per-item requests waiting for the pool; beyond: 503
    status_interval_s: float = 2.0


DEFAULT_LIMITS = HttpLimits()


@dataclass
class Response:
    code: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] | None = None


def _json(code: int, data: Any) -> Response:
    return Response(code, dumps(data).encode())


def _page(body: bytes) -> Response:
    return Response(
        200,
        body,
        "text/html; charset=utf-8",
        {"Content-Security-Policy": PAGE_CSP, "X-Frame-Options": "DENY"},
    )


# -- the Host check -----------------------------------------------------------------------------


def default_allowed_hosts(bind_host: str) -> set[str]:
    """localhost, this host's names and the bind address (IP literals are always allowed)."""
    names = {"localhost", bind_host.lower()}
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(name.lower())
    return names


def host_allowed(header: str | None, allowed: Iterable[str]) -> bool:
    """Whether a `Host` header names this node. A DNS-rebinding page reaches the port under the
    attacker's own domain name, so only names are checked: an IP literal, and a request without
    a Host header (no browser sends one), are allowed."""
    if header is None:
        return True
    host = header.strip().lower()
    if host.startswith("["):  # [v6]:port
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    host = host.rstrip(".")
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    allowed = set(allowed)
    return (
        "*" in allowed
        or host in allowed
        or any(a.startswith("*.") and host.endswith(a[1:]) for a in allowed)
    )


# -- the status snapshot ------------------------------------------------------------------------


class StatusCache:
    """The status JSON, queried at most once per `interval_s` whatever the request rate.

    A request while a fresh snapshot exists gets it; a request after it has gone stale gets
    the stale one and starts one refresh in the pool (at most one at a time). Only the very
    first request waits for the database."""

    def __init__(
        self,
        fetch: Callable[[], bytes],
        interval_s: float,
        pool: concurrent.futures.Executor,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._interval = interval_s
        self._pool = pool
        self._clock = clock
        self._lock = threading.Lock()
        self._value: bytes | None = None
        self._started: float | None = None
        self._pending: concurrent.futures.Future[bytes] | None = None
        self.queries = 0  # how many times the database was asked (for tests and metrics)

    def _refresh(self) -> bytes:
        value = self._fetch()
        with self._lock:
            self._value = value
        return value

    def get_future(self) -> tuple[bytes | None, concurrent.futures.Future[bytes] | None]:
        """(the cached value, or None) and the refresh in flight, if any."""
        with self._lock:
            now = self._clock()
            due = self._started is None or now - self._started >= self._interval
            if due and (self._pending is None or self._pending.done()):
                self._started = now
                self.queries += 1
                self._pending = self._pool.submit(self._refresh)
            return self._value, self._pending


# -- the server ---------------------------------------------------------------------------------


class HttpServer:
    """The port, served by an asyncio loop on a thread of its own (`start`, `stop`)."""

    def __init__(
        self,
        addr: str,
        supervisor: Any,
        admin_token: str | None = None,
        *,
        allowed_hosts: Iterable[str] = (),
        limits: HttpLimits = DEFAULT_LIMITS,
    ) -> None:
        host, port = parse_addr(addr)
        self.supervisor = supervisor
        self.admin_token = admin_token or None
        self.limits = limits
        self.allowed_hosts = default_allowed_hosts(host) | {h.lower() for h in allowed_hosts}
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=limits.db_workers, thread_name_prefix="http-db"
        )
        self.status = StatusCache(self._query_status, limits.status_interval_s, self.pool)
        self.charts = StatusCache(
            lambda: dumps(page_data.charts(supervisor.url)).encode(),
            limits.status_interval_s,
            self.pool,
        )
        self.page = page("status.html")
        self.pages = {"configs": page("config.html"), "runs": page("run.html")}
        self.open_connections = 0
        self.pending_db = 0
        self._pending_lock = threading.Lock()
        self._configs_checked = 0.0
        # Bind now, in the caller's thread, so that a bad address fails at start-up.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
            self._socket.listen(min(limits.max_connections, 1024))
        except OSError:
            self._socket.close()
            raise
        self._socket.setblocking(False)
        self.server_address: tuple[str, int] = self._socket.getsockname()[:2]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = threading.Event()

    # -- database work (in the pool) ------------------------------------------------------------
    def _query_status(self) -> bytes:
        sup = self.supervisor
        status = status_for_url(
            sup.url,
            connect_timeout=3,
            thresholds=Thresholds(dead_after_s=sup.settings.dead_after_s),
        )
        status["node"] = sup.settings.node_id
        status["admin"] = self.admin_token is not None
        return dumps(status).encode()

    def _refresh_configs(self) -> None:
        """The configs gauges (quarantined, and by plugin and state): one statement."""
        try:
            with connect(
                self.supervisor.url, connect_timeout=3, application_name="plugin-runtime metrics"
            ) as conn:
                rows = conn.execute(query("configs_by_plugin")).fetchall()
            metrics.set_configs(
                [
                    metrics.PluginConfigCount(
                        plugin=str(row["plugin"]),
                        enabled=int(row["enabled"]),
                        disabled=int(row["disabled"]),
                        quarantined=int(row["quarantined"]),
                    )
                    for row in rows
                ]
            )
        except Exception as exc:  # the gauges keep their last values; /metrics still answers
            log.debug("could not refresh the configs gauges: %s", exc)

    def _item(self, kind: str, item: int) -> Response:
        """A config's or a run's page data (`page_data`). A run's error, logs and result are
        its plugin's text: its config's secrets are masked again here (runs recorded before
        masking, secrets changed since)."""
        url = self.supervisor.url
        try:
            data = (page_data.config_page if kind == "configs" else page_data.run_page)(url, item)
            config_id = data["config"]["config_id"] if kind == "configs" else data["config_id"]
            with connect(url, connect_timeout=3, application_name="plugin-runtime page") as conn:
                secrets = store.config_secrets(conn, [config_id])
            mask = Masker(secrets.get(config_id, []))
            if kind == "configs":  # only the slots' errors are the plugin's text
                for grid in data["grids"]:
                    for slot in grid.get("slots") or []:
                        if isinstance(slot.get("error"), str):
                            slot["error"] = mask.text(slot["error"])
                return _json(200, data)
            run = data
            run["error"] = mask.fields(run.get("error"))
            run["error_summary"] = mask(run.get("error_summary"))
            run["logs"] = [
                {**line, "message": mask.text(str(line.get("message")))}
                for line in run.get("logs") or []
            ]
            run["result_preview"] = mask(run.get("result_preview"))
            return _json(200, run)
        except store.NotFound as exc:
            return _json(404, {"error": str(exc)})
        except (DatabaseUnavailable, psycopg.Error) as exc:
            return _json(503, {"error": str(exc).splitlines()[0] if str(exc) else "database error"})

    def _admin_action(self, config_id: int, verb: str | None, task: str | None) -> Response:
        try:
            with connect(
                self.supervisor.url, connect_timeout=3, application_name="plugin-runtime admin"
            ) as conn:
                if verb:
                    store.set_enabled(conn, config_id, verb == "enable")
                    message = f"config {config_id} {verb}d"
                else:
                    assert task is not None
                    run_id = store.trigger(conn, config_id, task)
                    message = f"queued manual run {run_id} of {task} for config {config_id}"
        except store.NotFound as exc:
            return _json(404, {"error": str(exc)})
        except DatabaseUnavailable as exc:
            return _json(503, {"error": str(exc)})
        log.info("admin action: %s", visible(message))
        return _json(200, {"ok": True, "message": message})

    # -- routing (on the loop) ------------------------------------------------------------------
    async def _route(self, method: str, path: str, headers: dict[str, str]) -> Response:
        sup = self.supervisor
        if method in ("GET", "HEAD") and path == "/healthz":
            return _json(200, {"alive": True, "node": sup.settings.node_id})
        if method in ("GET", "HEAD") and path == "/readyz":
            db_ok, ticked = sup.db_ok.is_set(), sup.ready.is_set()
            ready = db_ok and ticked and not sup.stopping.is_set()
            return _json(
                200 if ready else 503, {"ready": ready, "database": db_ok, "ticked": ticked}
            )
        if not host_allowed(headers.get("host"), self.allowed_hosts):
            return _json(
                403, {"error": "this Host is not served here (see serve --http-allowed-hosts)"}
            )
        if method in ("GET", "HEAD"):
            return await self._get(path)
        if method == "POST":
            return await self._post(path, headers)
        return Response(
            405, b'{"error": "method not allowed"}', headers={"Allow": "GET, HEAD, POST"}
        )

    async def _get(self, path: str) -> Response:
        if path == "/metrics":
            if time.monotonic() - self._configs_checked >= CONFIGS_REFRESH_S:
                self._configs_checked = time.monotonic()
                self.pool.submit(self._refresh_configs)
            return Response(200, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST)
        if path == "/api/status":
            return await self._cached(self.status)
        if path == "/api/charts":
            return await self._cached(self.charts)
        if path in ("/", "/index.html"):
            return _page(self.page)
        if (match := _PAGE_PATH.match(path)) is not None:
            return _page(self.pages[match["kind"]])
        if (match := _API_PATH.match(path)) is not None:
            return await self._pooled(self._item, match["kind"], int(match["id"]))
        return _json(404, {"error": f"no such page: {path}"})

    async def _cached(self, cache: StatusCache) -> Response:
        value, pending = cache.get_future()
        if value is None and pending is not None:
            try:
                value = await asyncio.wait_for(asyncio.wrap_future(pending), timeout=15)
            except Exception as exc:
                return _json(503, {"error": f"unavailable: {type(exc).__name__}"})
        return Response(200, value or b"{}")

    async def _pooled(self, fn: Callable[..., Response], *args: Any) -> Response:
        """`fn(*args)` in the database pool, unless too many already wait (503)."""
        with self._pending_lock:
            if self.pending_db >= self.limits.max_pending_db:
                return _json(503, {"error": "too many requests at once; retry"})
            self.pending_db += 1
        try:
            return await asyncio.wrap_future(self.pool.submit(fn, *args))
        finally:
            with self._pending_lock:
                self.pending_db -= 1

    async def _post(self, path: str, headers: dict[str, str]) -> Response:
        match = _ACTION.match(path)
        if match is None:
            return _json(404, {"error": f"no such action: {path}"})
        token = self.admin_token
        if token is None:
            return _json(
                403, {"error": f"admin actions are off: set {ADMIN_TOKEN_ENV} on the node"}
            )
        given = headers.get("authorization", "")
        if not given.startswith("Bearer ") or not hmac.compare_digest(
            given[len("Bearer ") :].strip().encode(), token.encode()
        ):
            return _json(401, {"error": "a valid 'Authorization: Bearer TOKEN' header is required"})
        return await self._pooled(
            self._admin_action, int(match["id"]), match["verb"], match["task"]
        )

    # -- connections ----------------------------------------------------------------------------
    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise ValueError("bad request line")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError("bad header line")
            headers[name.strip().lower()] = value.strip()
        return parts[0].upper(), parts[1].split("?", 1)[0], headers

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        try:
            if self.open_connections > self.limits.max_connections:
                await self._write(writer, "GET", _json(503, {"error": "too many connections"}))
                return
            try:
                method, path, headers = await asyncio.wait_for(
                    self._read_head(reader), self.limits.read_timeout_s
                )
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return  # too slow, or gone: closed without an answer
            except (asyncio.LimitOverrunError, ValueError):
                await self._write(writer, "GET", _json(400, {"error": "bad request"}))
                return
            try:
                response = await self._route(method, path, headers)
            except Exception:
                log.exception("HTTP %s %s failed", method, visible(path))
                response = _json(500, {"error": "internal error"})
            log.debug("%s %s -> %s", method, visible(path), response.code)
            await self._write(writer, method, response)
        finally:
            self.open_connections -= 1
            writer.close()

    async def _write(self, writer: asyncio.StreamWriter, method: str, response: Response) -> None:
        try:
            reason = HTTPStatus(response.code).phrase
        except ValueError:
            reason = ""
        head = [
            f"HTTP/1.1 {response.code} {reason}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Cache-Control: no-store",
            "X-Content-Type-Options: nosniff",
            "Connection: close",
            "Server: plugin-runtime",
        ]
        head += [f"{k}: {v}" for k, v in (response.headers or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if method != "HEAD":
            writer.write(response.body)
        try:
            await asyncio.wait_for(writer.drain(), self.limits.write_timeout_s)
        except (TimeoutError, ConnectionError):
            writer.transport.abort()

    # -- life cycle -----------------------------------------------------------------------------
    def serve_forever(self) -> None:
        """Run the loop on this thread until `stop`."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            server = loop.run_until_complete(
                asyncio.start_server(self._handle, sock=self._socket, limit=MAX_HEAD_BYTES)
            )
            loop.run_until_complete(self._wait_stopped())
            server.close()
            loop.run_until_complete(server.wait_closed())
        finally:
            loop.close()
            self.pool.shutdown(wait=False, cancel_futures=True)

    async def _wait_stopped(self) -> None:
        while not self._stopped.is_set():
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        self._stopped.set()


def parse_addr(addr: str) -> tuple[str, int]:
    """ "HOST:PORT" (or "[v6]:PORT", or ":PORT" for all interfaces) -> (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got '{addr}'")
    return host.strip("[]") or "0.0.0.0", int(port)


def make_server(
    addr: str,
    supervisor: Any,
    admin_token: str | None = None,
    *,
    allowed_hosts: Iterable[str] = (),
    limits: HttpLimits = DEFAULT_LIMITS,
) -> HttpServer:
    return HttpServer(addr, supervisor, admin_token, allowed_hosts=allowed_hosts, limits=limits)


def serve_http(
    addr: str, supervisor: Any, *, allowed_hosts: Iterable[str] = ()
) -> threading.Thread:
    """Serve the node's HTTP port on a daemon thread and return that thread (its `server`
    attribute is the server; `server.server_address` has the bound port)."""
    try:
        server = make_server(
            addr, supervisor, os.environ.get(ADMIN_TOKEN_ENV), allowed_hosts=allowed_hosts
        )
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
