"""A tiny paged JSON API on 127.0.0.1 for the hourly_importer example's tests.

`GET /items?cursor=C` answers `{"items": [...], "next_cursor": ...}` over three pages and records
every request's path and headers, so a test can check the cursor and the API key that reached it.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# cursor -> (items, next cursor): three pages, 5 items.
PAGES: dict[str | None, tuple[list[dict[str, int]], str | None]] = {
    None: ([{"id": 1}, {"id": 2}], "page-2"),
    "page-2": ([{"id": 3}, {"id": 4}], "page-3"),
    "page-3": ([{"id": 5}], None),
}
TOTAL_ITEMS = 5


@dataclass
class ItemsApi:
    base_url: str
    requests: list[dict[str, object]] = field(default_factory=list)


@contextmanager
def items_api() -> Iterator[ItemsApi]:
    api = ItemsApi(base_url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            parts = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(parts.query)
            cursor = query.get("cursor", [None])[0]
            api.requests.append(
                {"path": parts.path, "cursor": cursor, "headers": dict(self.headers.items())}
            )
            if parts.path != "/items" or cursor not in PAGES:
                self.send_response(404)
                self.end_headers()
                return
            items, next_cursor = PAGES[cursor]
            body = json.dumps({"items": items, "next_cursor": next_cursor}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
