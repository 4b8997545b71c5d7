"""What the parent does on a child's behalf: HTTP for `meta.fetch` and a cache for `meta.cache`.

`fetch` only reaches hosts in the plugin's `allowed_hosts`; it resolves the host itself and
refuses loopback, private, link-local and other special addresses unless the operator allows
them, then connects to the address it checked, so DNS rebinding cannot reach internal services.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import threading
import time
import urllib.parse
from typing import Any

from sandbox.outcome import RunRequest

MAX_RESPONSE_BYTES = 2 * 1024 * 1024
MAX_FETCH_TIMEOUT_S = 30.0
MAX_CACHE_KEYS_PER_CONFIG = 10_000


class FetchRefused(Exception):
    pass


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


class HttpFetcher:
    def __init__(self, *, allow_private: bool = False, max_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self.allow_private = allow_private
        self.max_bytes = max_bytes

    def check(self, request: RunRequest, url: str) -> tuple[urllib.parse.SplitResult, str]:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchRefused(f"only http and https URLs can be fetched, not {parts.scheme!r}")
        host = (parts.hostname or "").lower()
        allowed = request.plugin.manifest.allowed_hosts
        if host not in allowed:
            raise FetchRefused(
                f"host {host!r} is not in the plugin's allowed_hosts {list(allowed)}"
            )
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise FetchRefused(f"cannot resolve {host!r}: {exc}") from None
        for info in infos:
            address = str(info[4][0])
            if self.allow_private or _is_public(ipaddress.ip_address(address)):
                return parts, address
        raise FetchRefused(f"host {host!r} resolves only to private or local addresses")

    def fetch(self, request: RunRequest, args: dict[str, Any]) -> dict[str, Any]:
        url = str(args.get("url", ""))
        parts, address = self.check(request, url)
        timeout = min(float(args.get("timeout_s") or 10.0), MAX_FETCH_TIMEOUT_S)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = _PinnedHTTPSConnection(parts.hostname or "", port, address, timeout=timeout)
        else:
            conn = http.client.HTTPConnection(address, port, timeout=timeout)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        headers = {str(k): str(v) for k, v in (args.get("headers") or {}).items()}
        headers.setdefault("Host", parts.netloc)
        headers.setdefault("User-Agent", "plugin-runtime")
        body = args.get("body")
        try:
            conn.request(str(args.get("method", "GET")), path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read(self.max_bytes + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise FetchRefused(f"fetch {url} failed: {exc}") from None
        finally:
            conn.close()
        if len(data) > self.max_bytes:
            raise FetchRefused(f"response from {url} is larger than {self.max_bytes} bytes")
        return {
            "status": response.status,
            "headers": dict(response.getheaders()),
            "body": data.decode("utf-8", errors="replace"),
            "url": url,
        }


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to the address we checked, with SNI and certificate checks for the host name."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


class MemoryCache:
    """meta.cache kept in the supervisor's memory, private to each config, with TTLs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[Any, dict[str, tuple[Any, float]]] = {}

    def __call__(self, request: RunRequest, args: dict[str, Any]) -> Any:
        scope = request.run.config_id if request.run.config_id is not None else request.plugin.name
        key = str(args.get("key"))
        action = args.get("action")
        now = time.monotonic()
        with self._lock:
            entries = self._data.setdefault(scope, {})
            current = entries.get(key)
            if current is not None and current[1] <= now:
                del entries[key]
                current = None
            if action == "get":
                return None if current is None else current[0]
            if action == "delete":
                entries.pop(key, None)
                return None
            if len(entries) >= MAX_CACHE_KEYS_PER_CONFIG and key not in entries:
                raise ValueError(f"cache holds more than {MAX_CACHE_KEYS_PER_CONFIG} keys")
            ttl = max(0.0, float(args.get("ttl_s", 60.0)))
            if action == "set":
                entries[key] = (args.get("value"), now + ttl)
                return None
            if action == "incr":
                base = current[0] if current is not None else 0
                if not isinstance(base, int):
                    raise ValueError(f"cache value for {key!r} is not an integer")
                value = base + int(args.get("value", 1))
                entries[key] = (value, current[1] if current is not None else now + ttl)
                return value
        raise ValueError(f"unknown cache action {action!r}")


class LocalServices:
    """Default services: real HTTP through HttpFetcher, an in-memory cache."""

    def __init__(self, *, allow_private: bool = False) -> None:
        self.fetcher = HttpFetcher(allow_private=allow_private)
        self.memory_cache = MemoryCache()

    def fetch(self, request: RunRequest, args: dict[str, Any]) -> dict[str, Any]:
        return self.fetcher.fetch(request, args)

    def cache(self, request: RunRequest, args: dict[str, Any]) -> Any:
        return self.memory_cache(request, args)
