"""`meta.fetch` as the supervisor performs it: which addresses it refuses, one deadline for the
whole fetch, and what a plugin sees of the response. Real sockets and local servers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from runtime.testing.pytest_plugin import FakeHttp, PluginRunner, assert_ok
from sandbox import Plugin, RunRequest, load_plugin
from sandbox.protocol import FetchArgs
from sandbox.services import FetchRefused, HttpFetcher


@pytest.fixture
def plugin(tmp_path: Path) -> Plugin:
    (tmp_path / "plugin.json").write_text(
        json.dumps({"name": "f", "allowed_hosts": ["127.0.0.1", "localhost"]})
    )
    (tmp_path / "main.py").write_text("def run_every_minute(meta):\n    return 1\n")
    return load_plugin(tmp_path)


def test_loopback_is_refused_unless_its_network_is_allowed(plugin: Plugin) -> None:
    request = RunRequest(plugin=plugin, task="run_every_minute")
    with pytest.raises(FetchRefused, match="private or local"):
        HttpFetcher().check(request, "http://localhost:1/")
    with pytest.raises(FetchRefused, match="private or local"):
        HttpFetcher(allow_networks=["10.0.0.0/8"]).check(request, "http://127.0.0.1:1/")
    _, address, _ = HttpFetcher(allow_networks=["127.0.0.0/8"]).check(
        request, "http://127.0.0.1:1/"
    )
    assert address == "127.0.0.1"


class _Dripper:
    """A server on loopback that answers one byte at a time, `interval` apart: in its status
    line and headers (`where="headers"`) or in its body (`where="body"`)."""

    def __init__(self, where: str, interval: float = 0.2) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.where, self.interval = where, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
                if self.where == "body":
                    conn.sendall(head)
                    head = b"x" * 100000
                for byte in head:
                    if self.stop.is_set():
                        break
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        break
                    time.sleep(self.interval)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


@pytest.mark.parametrize("where", ["headers", "body"])
def test_one_deadline_cuts_a_server_that_drips(plugin: Plugin, where: str) -> None:
    """Each read is quick, so a per-read timeout never fires: the whole fetch is still cut at
    its deadline."""
    server = _Dripper(where)
    try:
        fetcher = HttpFetcher(allow_private=True)
        request = RunRequest(plugin=plugin, task="run_every_minute")
        started = time.monotonic()
        with pytest.raises(FetchRefused, match="took longer than 1 s"):
            fetcher.fetch(request, FetchArgs(url=f"http://127.0.0.1:{server.port}/", timeout_s=1))
        assert time.monotonic() - started < 2.5
    finally:
        server.close()


class _Echo(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length", 0))
        body = json.dumps(
            {
                "content_type": self.headers.get("Content-Type"),
                "host": self.headers.get("Host"),
                "body": self.rfile.read(length).decode(),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Mixed-Case", "yes")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_a_real_fetch_json_body_headers_and_host(
    tmp_path: Path, plugin_runner: PluginRunner, echo: int
) -> None:
    """A non-str body goes as JSON with its Content-Type; the plugin's own Host header does not
    re-aim the request; response headers are looked up without regard to case."""
    (tmp_path / "plugin.json").write_text(
        json.dumps({"name": "poster", "allowed_hosts": ["127.0.0.1"]})
    )
    (tmp_path / "main.py").write_text(
        "def run_every_minute(meta):\n"
        f"    r = meta.fetch('http://127.0.0.1:{echo}/', method='POST', body={{'n': 1}},\n"
        "                   headers={'Host': 'internal.example'})\n"
        "    return {'echo': r.json(), 'ct': r.headers['content-type'],\n"
        "            'mixed': r.headers.get('x-mixed-case'), 'has': 'X-MIXED-CASE' in r.headers,\n"
        "            'names': sorted(r.headers)}\n"
    )
    result = plugin_runner.run(tmp_path, allow_private=True)
    assert_ok(result)
    got = result.result
    assert got["echo"] == {
        "content_type": "application/json",
        "host": f"127.0.0.1:{echo}",
        "body": '{"n": 1}',
    }
    assert got["ct"] == "application/json" and got["mixed"] == "yes" and got["has"] is True
    assert "X-Mixed-Case" in got["names"]


def test_logger_formats_like_logging(tmp_path: Path, plugin_runner: PluginRunner) -> None:
    (tmp_path / "plugin.json").write_text(json.dumps({"name": "logs"}))
    (tmp_path / "main.py").write_text(
        "def run_every_minute(meta):\n"
        "    meta.logger.info('n=%d', 5)\n"
        "    meta.logger.warning('%s of %s', 'a', 'b')\n"
        "    meta.logger.info('%(x)s!', {'x': 'named'})\n"
        "    meta.logger.info('plain', 1, 2)\n"
        "    meta.logger.error('100%', 'done')\n"
        "    meta.logger.info('%d', 'not a number')\n"
    )
    result = plugin_runner.run(tmp_path)
    assert_ok(result)
    assert result.messages == [
        "n=5",
        "a of b",
        "named!",
        "plain 1 2",
        "100% done",
        "%d not a number",
    ]


def test_a_json_body_keeps_the_plugins_own_content_type(
    tmp_path: Path, plugin_runner: PluginRunner, fake_http: FakeHttp
) -> None:
    (tmp_path / "plugin.json").write_text(json.dumps({"name": "ct", "allowed_hosts": ["api.test"]}))
    (tmp_path / "main.py").write_text(
        "def run_every_minute(meta):\n"
        "    meta.fetch('https://api.test/a', method='POST', body=[1])\n"
        "    meta.fetch('https://api.test/b', method='POST', body=[1],\n"
        "               headers={'content-type': 'application/vnd.x+json'})\n"
        "    meta.fetch('https://api.test/c', method='POST', body='text')\n"
    )
    assert_ok(plugin_runner.run(tmp_path, http=fake_http))
    sent = [call.headers for call in fake_http.calls]
    assert sent[0] == {"Content-Type": "application/json"}
    assert sent[1] == {"content-type": "application/vnd.x+json"}
    assert sent[2] == {}
