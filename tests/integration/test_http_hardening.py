"""The HTTP port against strangers: the Host check, the cached status snapshot (at most one
query per interval), the read deadline for clients that drip bytes, the bound on connections,
and a load test on a real `serve` node: hundreds of slow and fast clients on loopback while
/healthz and /readyz keep answering, the port holds at most its pool's connections to
PostgreSQL, and the node keeps running its minute configs."""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from browser import HOW_TO_GET_ONE, find_chromium

from runtime.http import HttpLimits, HttpServer, StatusCache, host_allowed
from runtime.testing.fleet import Fleet


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str, host: str | None = None, timeout: float = 10) -> tuple[int, bytes]:
    """One raw HTTP/1.1 request: (status code, body); (0, b"") when the server closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        head = f"GET {path} HTTP/1.1\r\n" + (f"Host: {host}\r\n" if host else "") + "\r\n"
        sock.sendall(head.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    if not data:
        return 0, b""
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def _code(port: int, path: str) -> int:
    try:
        return _get(port, path, timeout=2)[0]
    except OSError:
        return 0


# -- pure parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (None, True),
        ("127.0.0.1:9100", True),
        ("[::1]:9100", True),
        ("10.1.2.3", True),
        ("localhost:9100", True),
        ("LOCALHOST.", True),
        ("status.example.com", True),
        ("a.fleet.example.org:80", True),
        ("evil.example", False),
        ("127.0.0.1.evil.example", False),
        ("localhost.evil.example", False),
        ("example.org", False),
    ],
)
def test_host_check(header: str | None, ok: bool) -> None:
    allowed = {"localhost", "status.example.com", "*.fleet.example.org"}
    assert host_allowed(header, allowed) is ok


def test_status_is_queried_at_most_once_per_interval() -> None:
    now = [0.0]
    calls: list[float] = []
    gate = threading.Event()

    def fetch() -> bytes:
        calls.append(now[0])
        gate.wait(5)
        return b'{"n": %d}' % len(calls)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        cache = StatusCache(fetch, 2.0, pool, clock=lambda: now[0])
        futures = {id(cache.get_future()[1]) for _ in range(1000)}
        assert len(futures) == 1  # a thousand requests, one query in flight
        gate.set()
        value, pending = cache.get_future()
        assert pending is not None and pending.result(5) == b'{"n": 1}'
        for _ in range(1000):
            now[0] += 0.001  # one second of requests at 1000/s
            value, _ = cache.get_future()
            assert value == b'{"n": 1}'
        assert len(calls) == 1
        now[0] = 2.5
        cache.get_future()[1].result(5)  # type: ignore[union-attr]
        assert len(calls) == 2 and cache.queries == 2


# -- an in-process port -------------------------------------------------------------------------


@pytest.fixture
def port_server(database_url: str) -> Iterator[HttpServer]:
    events = [threading.Event() for _ in range(3)]
    events[0].set()
    events[1].set()
    supervisor = SimpleNamespace(
        url=database_url,
        settings=SimpleNamespace(node_id="n1", dead_after_s=20.0),
        db_ok=events[0],
        ready=events[1],
        stopping=events[2],
    )
    server = HttpServer(
        "127.0.0.1:0",
        supervisor,
        allowed_hosts=["status.example.com"],
        limits=HttpLimits(max_connections=40, read_timeout_s=1.0, status_interval_s=60),
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(10)


def test_host_header_is_checked_except_for_probes(port_server: HttpServer) -> None:
    port = port_server.server_address[1]
    assert _get(port, "/api/status", host="evil.example")[0] == 403
    assert _get(port, "/", host="evil.example")[0] == 403
    assert _get(port, "/metrics", host="evil.example")[0] == 403
    assert _get(port, "/healthz", host="evil.example")[0] == 200
    assert _get(port, "/readyz", host="evil.example")[0] == 200
    assert _get(port, "/api/status", host=f"127.0.0.1:{port}")[0] == 200
    assert _get(port, "/api/status", host="status.example.com")[0] == 200
    assert _get(port, "/api/status", host=f"localhost:{port}")[0] == 200


def test_a_client_that_drips_bytes_is_cut_off(port_server: HttpServer) -> None:
    port = port_server.server_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /api/status HTTP/1.1\r\n")
        closed = False
        for _ in range(20):  # one header byte every 0.2 s: each read is quick, the whole is not
            try:
                sock.sendall(b"X")
            except OSError:
                closed = True
                break
            sock.settimeout(0.2)
            try:
                if sock.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        assert closed, "a dripping client was held for 4 s"
        assert time.monotonic() - started < 3.0


def test_connections_beyond_the_bound_get_503(port_server: HttpServer) -> None:
    port = port_server.server_address[1]
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
    try:
        time.sleep(0.3)
        assert _get(port, "/healthz")[0] == 503  # the 41st
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 5
    while _get(port, "/healthz")[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_oversized_and_malformed_heads_are_400(port_server: HttpServer) -> None:
    port = port_server.server_address[1]
    for raw in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(raw)
            assert sock.recv(100).startswith(b"HTTP/1.1 400")


# -- the load test ------------------------------------------------------------------------------


def _status_backends(database_url: str) -> set[int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name IN ('plugin-runtime status', 'plugin-runtime metrics', "
            "'plugin-runtime admin') AND pid <> pg_backend_pid()"
        ).fetchall()
    return {int(r[0]) for r in rows}


def test_hundreds_of_slow_and_fast_clients(
    database_url: str, test_plugins_dir: Path, tmp_path: Path
) -> None:
    port = _free_port()
    with Fleet(
        database_url,
        tmp_path / "fleet",
        time_scale=60,
        tick_interval=10,
        concurrency=4,
        extra_args=["--http", f"127.0.0.1:{port}"],
    ) as fleet:
        fleet.install(test_plugins_dir / "tiny")
        fleet.create_configs("tiny", 2, {"api_key": "k"})
        fleet.start_nodes(1)
        fleet.wait_for(lambda: _code(port, "/readyz") == 200, 30, "/readyz")
        before = len(fleet.runs("state = 'done'"))

        stop = threading.Event()
        fast_answers: list[int] = []
        slow_sockets: list[socket.socket] = []

        def slow_client() -> None:  # opens a request and never finishes it, again and again
            while not stop.is_set():
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                    slow_sockets.append(sock)
                    sock.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                    sock.settimeout(0.5)
                    while not stop.is_set():
                        try:
                            if sock.recv(1) == b"":
                                break  # cut off by the read deadline: come back
                        except TimeoutError:
                            sock.sendall(b"X")  # one more byte of header
                except OSError:
                    time.sleep(0.1)

        def fast_client() -> None:
            while not stop.is_set():
                for path in ("/api/status", "/", "/metrics"):
                    try:
                        fast_answers.append(_get(port, path, host="127.0.0.1", timeout=10)[0])
                    except OSError:
                        fast_answers.append(0)

        threads = [threading.Thread(target=slow_client, daemon=True) for _ in range(300)]
        threads += [threading.Thread(target=fast_client, daemon=True) for _ in range(20)]
        for t in threads:
            t.start()
        probes: list[tuple[int, float]] = []
        backends: set[int] = set()
        most_at_once = 0
        try:
            end = time.monotonic() + 12
            while time.monotonic() < end:
                started = time.monotonic()
                code = _get(port, "/healthz", timeout=5)[0]
                ready = _get(port, "/readyz", timeout=5)[0]
                probes.append((min(code, ready), time.monotonic() - started))
                now_backends = _status_backends(database_url)
                backends |= now_backends
                most_at_once = max(most_at_once, len(now_backends))
                time.sleep(0.1)
        finally:
            stop.set()
            for t in threads:
                t.join(15)
            for sock in slow_sockets:
                sock.close()
        after = len(fleet.runs("state = 'done'"))

    print(
        f"load: {len(slow_sockets)} slow connections, {len(fast_answers)} fast requests "
        f"({fast_answers.count(200)} answered 200), {len(probes)} probes, slowest "
        f"{max(p[1] for p in probes) * 1000:.0f} ms; database connections of the port: "
        f"{len(backends)} seen, at most {most_at_once} at once; {after - before} runs finished"
    )
    assert len(slow_sockets) >= 300
    assert fast_answers.count(200) >= 100, f"{len(fast_answers)} answers"
    failed = [p for p in probes if p[0] != 200]
    assert not failed, f"probes failed under load: {failed[:5]}"
    slowest = max(p[1] for p in probes)
    assert slowest < 2.0, f"a probe took {slowest:.2f} s"
    # The port's database work runs in a pool of two: never more connections than that.
    assert most_at_once <= 2
    # Twelve seconds of requests: about one status query per 2 s interval, not one per request.
    assert len(backends) <= 12, f"{len(backends)} connections for {len(fast_answers)} requests"
    assert after - before >= 10, f"only {after - before} runs finished during the load"


# -- the page shows plugin text as text ---------------------------------------------------------

HOSTILE = "\x1b[2J\x1b]52;c;eA==\x07<img src=x onerror=alert(1)>\u202eevil"


def test_status_page_shows_control_characters_as_text(
    port_server: HttpServer, database_url: str, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    from runtime import store
    from runtime.db import connect
    from sandbox.manifest import load_plugin

    plugin = tmp_path / "p"
    plugin.mkdir()
    (plugin / "plugin.json").write_text('{"name": "shown"}')
    (plugin / "main.py").write_text("def run_every_minute(meta):\n    return 1\n")
    with connect(database_url) as conn:
        store.install_plugin(conn, load_plugin(plugin))
        config_id = store.create_config(conn, "shown", {})
        conn.execute(
            "UPDATE plugin_runtime.plugin_configs SET quarantined_at = now(), "
            "quarantine_reason = %s WHERE id = %s",
            (HOSTILE, config_id),
        )
    port = port_server.server_address[1]
    executable = find_chromium()
    if executable is None:
        pytest.fail(HOW_TO_GET_ONE, pytrace=False)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable, args=["--headless", "--no-sandbox"]
        )
        try:
            page = browser.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#quarantined").filter(has_text="\\x1b[2J").wait_for(timeout=15000)
            shown = page.locator("#quarantined").inner_text()
            assert "\\x1b]52;c;eA==\\x07" in shown and "\\u202eevil" in shown
            assert "<img src=x onerror=alert(1)>" in shown  # as text: no element, no script
            assert page.locator("#quarantined img").count() == 0 and not dialogs
            assert "\x1b" not in page.content()
        finally:
            browser.close()


def test_run_and_config_data_mask_the_configs_secrets(
    port_server: HttpServer, database_url: str, tmp_path: Path
) -> None:
    import json

    from psycopg.types.json import Jsonb

    from runtime import store
    from runtime.db import connect
    from sandbox.manifest import load_plugin

    secret = "tok-9f8e7d-secret"
    plugin = tmp_path / "v"
    plugin.mkdir()
    (plugin / "plugin.json").write_text(
        json.dumps({"name": "vault", "config_schema": {"token": {"secret": True}}})
    )
    (plugin / "main.py").write_text("def run_every_minute(meta):\n    return 1\n")
    with connect(database_url) as conn:
        store.install_plugin(conn, load_plugin(plugin))
        config_id = store.create_config(conn, "vault", {"token": secret})
        run = conn.execute(
            "INSERT INTO plugin_runtime.runs (config_id, task, slot, state, outcome, "
            "finished_at, error, result) VALUES (%s, 'run_every_minute', now(), 'done', "
            "'error', now(), %s, %s) RETURNING id",
            (
                config_id,
                Jsonb({"type": "E", "message": f"bad {secret}", "traceback": [secret]}),
                Jsonb({"t": secret}),
            ),
        ).fetchone()
        assert run is not None
        conn.execute(
            "INSERT INTO plugin_runtime.logs (run_id, config_id, level, message) "
            "VALUES (%s, %s, 'info', %s)",
            (run["id"], config_id, f"token={secret}"),
        )
    port = port_server.server_address[1]
    for path in (f"/api/runs/{run['id']}", f"/api/configs/{config_id}"):
        code, body = _get(port, path, host="127.0.0.1")
        assert code == 200, body
        assert secret.encode() not in body
    code, body = _get(port, f"/api/runs/{run['id']}", host="127.0.0.1")
    assert b"bad ***" in body and b"token=***" in body
