"""The boundary's pure parts, without processes: the frame decoder and the schema of a child's
messages, the argument caps, the cache's eviction (fake clock), which addresses a fetch may
reach, composing an outcome, and the documented caps being the enforced ones."""

from __future__ import annotations

import ipaddress
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from sandbox import RunInfo, RunRequest, limits, protocol
from sandbox.client import _compose, _Run
from sandbox.manifest import Plugin, parse_manifest
from sandbox.protocol import CacheArgs, FetchArgs, ProtocolError
from sandbox.services import HttpFetcher, MemoryCache, is_reachable, parse_networks


@pytest.fixture
def plugin() -> Plugin:
    return Plugin(manifest=parse_manifest({"name": "unit"}), source="")


def test_an_unnamed_signal_is_reported_not_raised() -> None:
    """A child dead by a real-time signal (no name in `signal.Signals`) still composes."""
    run = _Run(1, None, None, None, None, 1.0)  # type: ignore[arg-type]
    run.exit = {"t": "exit", "id": 1, "status": 40, "killed_for": None}
    outcome = _compose(run)
    assert outcome.outcome == "crashed" and outcome.signal == 40
    assert outcome.error is not None and "signal 40" in outcome.error.message


# -- unit: the frame decoder and the schema ----------------------------------------------------


def encoded(obj: Any) -> bytes:
    return protocol.encode(obj)


def test_decoder_limits() -> None:
    reader = protocol.FrameReader(max_frame=100)
    with pytest.raises(protocol.FrameTooLarge):
        reader.feed(struct.pack(">I", 101))
    deep = b"[" * 10_000 + b"]" * 10_000
    for body in [deep, b"NaN", b'{"a": Infinity}', b'{"a": 1e400}', b"\xff", b"9" * 5000, b"[]"]:
        with pytest.raises(ProtocolError):
            protocol.decode(body)
    nested = json.dumps({"t": "x", "v": eval("[" * 200 + "]" * 200)}).encode()
    with pytest.raises(ProtocolError, match="nested deeper"):
        protocol.decode(nested, max_depth=limits.MAX_VALUE_DEPTH)
    # Split anywhere, frames come out whole and in order.
    data = encoded({"t": "log", "level": "info", "message": "a"}) * 3
    reader = protocol.FrameReader()
    frames = [f for i in range(len(data)) for f in reader.feed(data[i : i + 1])]
    assert len(frames) == 3 and reader.pending == 0


def test_schema_types_every_field() -> None:
    ok = protocol.parse_child_frame(
        {"t": "call", "call": 3, "op": "fetch", "args": {"url": "https://x/", "headers": {}}}
    )
    assert isinstance(ok, protocol.CallFrame) and isinstance(ok.args, FetchArgs)
    assert ok.args.method == "GET" and ok.args.timeout_s == limits.DEFAULT_FETCH_TIMEOUT_S
    for bad in [
        {"t": "call", "call": True, "op": "cache", "args": {"action": "get", "key": "k"}},
        {"t": "call", "call": -1, "op": "cache", "args": {"action": "get", "key": "k"}},
        {"t": "call", "call": 1, "op": "cache", "args": {"action": "get", "key": 1}},
        {"t": "call", "call": 1, "op": "cache", "args": {"action": "get", "key": "k", "value": 1}},
        {"t": "call", "call": 1, "op": "fetch", "args": {"url": "u", "body": 1}},
        {"t": "call", "call": 1, "op": "fetch", "args": {"url": "u", "timeout_s": True}},
        {"t": "result", "status": "ok", "result": 1, "writes": {}},
        {"t": "result", "status": "output_limit", "message": 5},
    ]:
        with pytest.raises(ProtocolError):
            protocol.parse_child_frame(bad)


def test_fetch_and_cache_arguments_are_capped() -> None:
    assert FetchArgs(url="https://x/" + "a" * limits.MAX_URL_CHARS).over_cap()
    assert FetchArgs(url="https://x/ a").over_cap()
    assert FetchArgs(url="https://x/", method="GET\r\nX").over_cap()
    assert FetchArgs(url="https://x/", headers={"a\nb": "v"}).over_cap()
    assert FetchArgs(url="https://x/", headers={"a": "v\r\nInjected: 1"}).over_cap()
    many = {f"h{i}": "v" for i in range(limits.MAX_FETCH_HEADERS + 1)}
    assert FetchArgs(url="https://x/", headers=many).over_cap()
    assert FetchArgs(
        url="https://x/", headers={"a": "v" * limits.MAX_FETCH_HEADER_BYTES}
    ).over_cap()
    assert FetchArgs(url="https://x/", body="b" * (limits.MAX_FETCH_BODY_BYTES + 1)).over_cap()
    assert FetchArgs(url="https://x/", body="\ud800").over_cap()
    assert FetchArgs(url="https://x/", timeout_s=float("inf")).over_cap()
    assert (
        FetchArgs(url="https://x/", method="POST", headers={"A": "b"}, body="{}").over_cap() is None
    )
    assert CacheArgs("set", "k" * (limits.MAX_CACHE_KEY_BYTES + 1)).over_cap()
    assert CacheArgs("set", "k", "v" * limits.MAX_CACHE_VALUE_BYTES).over_cap()
    assert CacheArgs("incr", "k", 2**64).over_cap()
    assert CacheArgs("set", "k", {"a": [1, 2]}).over_cap() is None


# -- unit: the cache's caps and eviction -------------------------------------------------------


def _request(config_id: Any, plugin: Plugin) -> RunRequest:
    return RunRequest(plugin=plugin, task="t", run=RunInfo(config_id=config_id))


def test_cache_evicts_per_config_and_per_node(plugin: Plugin) -> None:
    now = [0.0]
    cache = MemoryCache(
        max_entries_per_config=3,
        max_bytes_per_config=10_000,
        max_bytes=20_000,
        clock=lambda: now[0],
    )
    a, b = _request("A", plugin), _request("B", plugin)
    for i in range(5):
        cache(a, CacheArgs("set", f"k{i}", i))
    assert [cache(a, CacheArgs("get", f"k{i}")) for i in range(5)] == [None, None, 2, 3, 4]
    # bytes per config: A's big values push out A's own oldest entries, never B's
    cache(b, CacheArgs("set", "keep", "b"))
    for i in range(3):
        cache(a, CacheArgs("set", f"big{i}", "x" * 4000))
    assert cache.scope_bytes("A") <= 10_000
    assert cache(b, CacheArgs("get", "keep")) == "b"
    # bytes per node: the least recently used entry of the node goes
    for config in "CDEF":
        cache(_request(config, plugin), CacheArgs("set", "v", "x" * 6000))
    assert cache.bytes <= 20_000
    assert cache(_request("F", plugin), CacheArgs("get", "v")) == "x" * 6000
    # TTL, incr range
    cache(b, CacheArgs("set", "short", 1, ttl_s=5))
    now[0] = 6.0
    assert cache(b, CacheArgs("get", "short")) is None
    cache(b, CacheArgs("incr", "n", limits.MAX_CACHE_INT))
    with pytest.raises(ValueError, match="64-bit"):
        cache(b, CacheArgs("incr", "n", 1))


REFUSED = [
    "127.0.0.1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # link-local cloud metadata
    "100.64.0.1",  # shared address space (RFC 6598)
    "100.100.100.200",  # a cloud metadata service lives in 100.64.0.0/10
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",
    "233.1.1.1",  # multicast, which `is_global` alone lets through
    "240.0.0.1",
    "255.255.255.255",
    "198.18.0.1",  # benchmarking
    "192.0.2.1",  # documentation
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::ffff:100.64.0.1",
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2002:6440:1::",  # 6to4 of 100.64.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::a00:1",  # local-use NAT64
    "2001:db8::1",
    "2001::1",  # Teredo
]
REACHABLE = ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", REFUSED)
def test_addresses_that_are_not_globally_routable_are_refused(address: str) -> None:
    assert not is_reachable(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", REACHABLE)
def test_public_addresses_are_reachable(address: str) -> None:
    assert is_reachable(ipaddress.ip_address(address))


def test_the_operator_allows_networks_explicitly() -> None:
    allowed = parse_networks("10.0.0.0/8, fd00::/8")
    assert is_reachable(ipaddress.ip_address("10.2.3.4"), allowed)
    assert is_reachable(ipaddress.ip_address("::ffff:10.2.3.4"), allowed)  # the same host
    assert is_reachable(ipaddress.ip_address("fd00::5"), allowed)
    assert not is_reachable(ipaddress.ip_address("192.168.0.1"), allowed)
    assert not is_reachable(ipaddress.ip_address("127.0.0.1"), allowed)
    assert HttpFetcher().allow_networks == ()  # by default: nothing private
    assert HttpFetcher(allow_networks=["10.0.0.0/8"]).allow_networks == allowed[:1]
    with pytest.raises(ValueError):
        parse_networks("10.0.0.0/33")


def human(n: int) -> str:
    if n >= limits.MIB and n % limits.MIB == 0:
        return f"{n // limits.MIB} MiB"
    if n >= limits.KIB and n % limits.KIB == 0:
        return f"{n // limits.KIB} KiB"
    return f"{n:,}"


def test_the_documented_caps_are_the_enforced_ones() -> None:
    """docs/plugins.md states each cap, next to its name in sandbox/limits.py, with the number
    that name holds: change one without the other and this fails."""
    lines = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text().splitlines()
    names = [n for n in dir(limits) if n.startswith("MAX_")]
    for name in names:
        rows = [line for line in lines if f"`{name}`" in line]
        assert rows, f"docs/plugins.md does not state {name}"
        value = getattr(limits, name)
        shown = human(value) if isinstance(value, int) else f"{value:g} s"
        assert shown in rows[0], f"docs/plugins.md shows {name} as {rows[0]!r}, enforced: {shown}"
