"""What the parent does on a child's behalf: HTTP for `meta.fetch` and a cache for `meta.cache`.

`fetch` only reaches hosts in the plugin's `allowed_hosts`. It resolves the host itself and
refuses every address that is not globally routable (after unwrapping IPv4-mapped, 6to4 and NAT64
forms) unless the operator allowed its network, then connects to the address it checked, so DNS
rebinding cannot reach internal services. One deadline covers the whole fetch: connect, TLS,
request, headers and body together; a server that drips bytes is cut when it passes.

The arguments reaching here were validated and capped by the client (`FetchArgs.over_cap`,
`CacheArgs.over_cap`); the caps themselves live in sandbox/limits.py.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sandbox import limits
from sandbox.outcome import RunRequest
from sandbox.protocol import CacheArgs, FetchArgs, FetchResponse, json_size

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALL_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("0.0.0.0/0"),
    ipaddress.ip_network("::/0"),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: local use, never global
# Headers the supervisor sets itself: a plugin's own would re-aim or desynchronise the request.
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class FetchRefused(Exception):
    pass


def unwrapped(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped, 6to4, NAT64), else itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def is_reachable(ip: IPAddress, allow_networks: Iterable[IPNetwork] = ()) -> bool:
    """May a fetch connect to `ip`? Only when it is globally routable (`is_global`, not
    multicast) both as written and as the IPv4 address it wraps, or when it lies in a network
    the operator allowed."""
    inner = unwrapped(ip)
    for network in allow_networks:
        if ip.version == network.version and ip in network:
            return True
        if inner is not ip and inner.version == network.version and inner in network:
            return True
    if ip in _NAT64_LOCAL:
        return False
    return all(a.is_global and not a.is_multicast for a in (ip, inner))


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """`10.0.0.0/8,fd00::/8` as networks (for an operator's allow list); ValueError if bad."""
    return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())


class _Deadline:
    """One deadline for a whole fetch: when it passes, the socket being used is shut down, which
    ends whatever read, write or handshake is blocked on it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0 or self.expired:
            raise TimeoutError("deadline passed")
        return left

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            expired = self.expired
        if expired:
            self._shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self._sock
        if sock is not None:
            self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            # The plain socket's method, also for an SSLSocket: it acts on the descriptor.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass

    def cancel(self) -> None:
        self._timer.cancel()


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP(S) to the address we checked, under one deadline; for HTTPS with SNI and certificate
    checks for the host name."""

    def __init__(
        self,
        host: str,
        port: int,
        address: str,
        deadline: _Deadline,
        tls: ssl.SSLContext | None,
    ) -> None:
        super().__init__(host, port, timeout=deadline.remaining())
        self._address = address
        self._deadline = deadline
        self._tls = tls

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self._deadline.remaining())
        self._deadline.watch(sock)
        if self._tls is not None:
            sock = self._tls.wrap_socket(
                sock, server_hostname=self.host, do_handshake_on_connect=False
            )
            self._deadline.watch(sock)  # wrap_socket took over the descriptor
            sock.settimeout(self._deadline.remaining())
            sock.do_handshake()
        sock.settimeout(self._deadline.remaining())
        self.sock = sock


class HttpFetcher:
    """Real HTTP for `meta.fetch`.

    `allow_networks`: the networks a fetch may reach although they are not globally routable
    (the hook behind an operator's "allow these private networks"; by default none).
    `allow_private=True` allows every address (tests and `plugin-runtime run --allow-private`).
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allow_networks: Iterable[IPNetwork | str] = (),
        max_bytes: int = limits.MAX_RESPONSE_BYTES,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        networks = tuple(ipaddress.ip_network(n) for n in allow_networks)
        self.allow_networks: tuple[IPNetwork, ...] = ALL_NETWORKS if allow_private else networks
        self.max_bytes = max_bytes
        self._tls = tls

    @property
    def allow_private(self) -> bool:
        return self.allow_networks == ALL_NETWORKS

    def check(self, request: RunRequest, url: str) -> tuple[urllib.parse.SplitResult, str, int]:
        """The URL's parts, the checked address to connect to, and the port."""
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise FetchRefused(f"bad URL: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise FetchRefused(f"only http and https URLs can be fetched, not {parts.scheme!r}")
        host = (parts.hostname or "").lower()
        allowed = request.plugin.manifest.allowed_hosts
        if host not in allowed:
            raise FetchRefused(
                f"host {host!r} is not in the plugin's allowed_hosts {list(allowed)}"
            )
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise FetchRefused(f"cannot resolve {host!r}: {exc}") from None
        for info in infos:
            address = str(info[4][0]).split("%", 1)[0]
            if is_reachable(ipaddress.ip_address(address), self.allow_networks):
                return parts, address, port
        raise FetchRefused(
            f"host {host!r} resolves only to private or local addresses (not globally routable: "
            "loopback, private, link-local, shared, reserved); the operator can allow a network"
        )

    def fetch(self, request: RunRequest, args: FetchArgs) -> FetchResponse:
        url = args.url
        parts, address, port = self.check(request, url)
        timeout = min(args.timeout_s, limits.MAX_FETCH_TIMEOUT_S)
        deadline = _Deadline(timeout)
        tls = None
        if parts.scheme == "https":
            tls = self._tls or ssl.create_default_context()
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        headers = {k: v for k, v in args.headers.items() if k.lower() not in _OWN_HEADERS}
        headers.setdefault("User-Agent", "plugin-runtime")
        body = args.body.encode("utf-8") if args.body is not None else None
        conn = None
        try:
            conn = _PinnedConnection(parts.hostname or "", port, address, deadline, tls)
            conn.request(args.method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read(self.max_bytes + 1)
            status = response.status
            got = response.getheaders()
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if deadline.expired or isinstance(exc, TimeoutError):
                raise FetchRefused(f"fetch {url} took longer than {timeout:g} s") from None
            raise FetchRefused(f"fetch {url} failed: {exc}") from None
        finally:
            deadline.cancel()
            if conn is not None:
                conn.close()
        if deadline.expired:
            raise FetchRefused(f"fetch {url} took longer than {timeout:g} s")
        if len(data) > self.max_bytes:
            raise FetchRefused(f"response from {url} is larger than {self.max_bytes} bytes")
        merged: dict[str, str] = {}
        for name, value in got:
            merged[name] = f"{merged[name]}, {value}" if name in merged else value
        return FetchResponse(
            status=status,
            headers=merged,
            body=data.decode("utf-8", errors="replace"),
            url=url,
        )


@dataclass
class _Entry:
    value: Any
    expires: float
    size: int


_ENTRY_OVERHEAD = 100  # bytes counted per entry on top of its key and value


class MemoryCache:
    """meta.cache kept in the supervisor's memory, private to each config, with TTLs and caps:
    entries and bytes per config, bytes per node. Past a cap the least recently used entry (of
    that config, or of the node) is evicted: a cache is allowed to forget."""

    def __init__(
        self,
        *,
        max_entries_per_config: int = limits.MAX_CACHE_ENTRIES_PER_CONFIG,
        max_bytes_per_config: int = limits.MAX_CACHE_BYTES_PER_CONFIG,
        max_bytes: int = limits.MAX_CACHE_BYTES_PER_NODE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries_per_config = max_entries_per_config
        self.max_bytes_per_config = max_bytes_per_config
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[Any, str], _Entry] = OrderedDict()  # node-wide LRU
        self._scopes: dict[Any, OrderedDict[str, None]] = {}  # per-config LRU
        self._scope_bytes: dict[Any, int] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def scope_bytes(self, scope: Any) -> int:
        return self._scope_bytes.get(scope, 0)

    def __call__(self, request: RunRequest, args: CacheArgs) -> Any:
        scope, key = request.scope, args.key
        now = self._clock()
        with self._lock:
            entry = self._entries.get((scope, key))
            if entry is not None and entry.expires <= now:
                self._drop(scope, key)
                entry = None
            if entry is not None:
                self._entries.move_to_end((scope, key))
                self._scopes[scope].move_to_end(key)
            if args.action == "get":
                return None if entry is None else entry.value
            if args.action == "delete":
                if entry is not None:
                    self._drop(scope, key)
                return None
            ttl = min(max(0.0, args.ttl_s), limits.MAX_CACHE_TTL_S)
            if args.action == "set":
                self._put(scope, key, args.value, now + ttl)
                return None
            if args.action == "incr":
                base = entry.value if entry is not None else 0
                if type(base) is not int:
                    raise ValueError(f"cache value for {key!r} is not an integer")
                value = base + int(args.value)
                if abs(value) > limits.MAX_CACHE_INT:
                    raise ValueError(f"cache value for {key!r} would leave the 64-bit range")
                self._put(scope, key, value, entry.expires if entry is not None else now + ttl)
                return value
        raise ValueError(f"unknown cache action {args.action!r}")

    def _put(self, scope: Any, key: str, value: Any, expires: float) -> None:
        size = len(key.encode("utf-8")) + json_size(value) + _ENTRY_OVERHEAD
        if (scope, key) in self._entries:
            self._drop(scope, key)
        order = self._scopes.setdefault(scope, OrderedDict())
        while order and (
            len(order) >= self.max_entries_per_config
            or self._scope_bytes.get(scope, 0) + size > self.max_bytes_per_config
        ):
            self._drop(scope, next(iter(order)))
        while self._entries and self.bytes + size > self.max_bytes:
            oldest_scope, oldest_key = next(iter(self._entries))
            self._drop(oldest_scope, oldest_key)
        self._entries[(scope, key)] = _Entry(value, expires, size)
        self._scopes.setdefault(scope, OrderedDict())[key] = None
        self._scope_bytes[scope] = self._scope_bytes.get(scope, 0) + size
        self.bytes += size

    def _drop(self, scope: Any, key: str) -> None:
        entry = self._entries.pop((scope, key))
        order = self._scopes[scope]
        del order[key]
        self._scope_bytes[scope] -= entry.size
        self.bytes -= entry.size
        if not order:
            del self._scopes[scope]
            del self._scope_bytes[scope]


class LocalServices:
    """Default services: real HTTP through HttpFetcher, an in-memory cache."""

    def __init__(
        self, *, allow_private: bool = False, allow_networks: Iterable[IPNetwork | str] = ()
    ) -> None:
        self.fetcher = HttpFetcher(allow_private=allow_private, allow_networks=allow_networks)
        self.memory_cache = MemoryCache()

    def fetch(self, request: RunRequest, args: FetchArgs) -> FetchResponse:
        return self.fetcher.fetch(request, args)

    def cache(self, request: RunRequest, args: CacheArgs) -> Any:
        return self.memory_cache(request, args)
