"""The `meta` object a plugin function receives, as it exists inside the jailed child.

Storage is a local snapshot whose writes are sent back with the result (the caller applies them
only on success); cache and fetch are requests to the supervisor over the channel; logs are sent
as they happen, capped.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator, Mapping
from typing import Any

from sandbox import protocol
from sandbox.limits import (
    LOG_LEVELS,
    MAX_CACHE_VALUE_BYTES,
    MAX_LOG_BYTES,
    MAX_LOG_LINE,
    MAX_LOG_LINES,
    MAX_RESULT_BYTES,
    MAX_STORAGE_KEY_BYTES,
    MAX_STORAGE_KEYS_PER_RUN,
    MAX_STORAGE_VALUE_BYTES,
    MAX_STORAGE_WRITE_BYTES,
    MAX_VALUE_DEPTH,
)

__all__ = [
    "MAX_LOG_BYTES",
    "MAX_LOG_LINE",
    "MAX_LOG_LINES",
    "MAX_RESULT_BYTES",
    "Channel",
    "FetchError",
    "Headers",
    "Meta",
    "PrintSink",
    "ValueTooLarge",
    "checked_json",
]


class ValueTooLarge(ValueError):
    """A value over its size cap (a result over it ends the run as output_limit)."""


class FetchError(Exception):
    """meta.fetch refused or failed (host not allowed, timeout, too large)."""


class Channel:
    """The child's end of its run socket to the supervisor. These checks only fail early with a
    clear error: the supervisor enforces every cap again (sandbox/limits.py)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader: protocol.FrameReader | None = None  # made on first use: most runs never
        self._call_seq = 0
        self.log_lines = 0
        self.log_bytes = 0

    @property
    def reader(self) -> protocol.FrameReader:
        if self._reader is None:
            self._reader = protocol.FrameReader(max_frame=protocol.MAX_CONTROL_FRAME_BYTES)
        return self._reader

    def send(self, message: dict[str, Any]) -> None:
        protocol.send(self.sock, message, strict=True)

    def log(self, level: str, message: str) -> None:
        message = message[:MAX_LOG_LINE]
        self.log_lines += 1
        self.log_bytes += len(message.encode("utf-8", "surrogatepass"))
        if self.log_lines > MAX_LOG_LINES or self.log_bytes > MAX_LOG_BYTES:
            # Stop at once: the plugin cannot catch its way past an output flood.
            self.send(
                {
                    "t": "result",
                    "status": "output_limit",
                    "message": f"more than {MAX_LOG_LINES} log lines or {MAX_LOG_BYTES} bytes",
                }
            )
            os._exit(0)
        self.send(
            {"t": "log", "level": level if level in LOG_LEVELS else "info", "message": message}
        )

    def receive(self, kind: str) -> dict[str, Any]:
        """Block until a frame of type `kind` arrives (the run's start frame). Before any call
        there is nothing buffered: frames are read one at a time, whole, without a reader."""
        while True:
            if self._reader is None:
                frames = [protocol.recv_one(self.sock, protocol.MAX_CONTROL_FRAME_BYTES)]
            else:
                frames = protocol.recv(self.sock, self._reader)
            for frame in frames:
                if frame.get("t") == kind:
                    return frame

    def call(self, op: str, **args: Any) -> Any:
        self._call_seq += 1
        self.send({"t": "call", "call": self._call_seq, "op": op, "args": args})
        while True:
            for frame in protocol.recv(self.sock, self.reader):
                if frame.get("t") == "reply" and frame.get("call") == self._call_seq:
                    if frame.get("error"):
                        raise (
                            FetchError(str(frame["error"]))
                            if op == "fetch"
                            else ValueError(str(frame["error"]))
                        )
                    return frame.get("value")


def checked_json(value: Any, what: str, max_bytes: int, *, allow_nul: bool = True) -> int:
    """The size of `value` as JSON, or a TypeError/ValueError saying why the supervisor would
    refuse it (not JSON, NaN, too deep, a lone surrogate, a NUL, too large)."""
    if (value is None or value is True or value is False) and max_bytes >= 5:
        return 5 if value is False else 4  # what most tasks return: valid JSON, nothing to check
    try:
        encoded = json.dumps(value, allow_nan=False)
        decoded = json.loads(encoded)
    except RecursionError:
        raise ValueError(f"{what} is nested deeper than {MAX_VALUE_DEPTH} levels") from None
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serialisable: {exc}") from None
    problem = protocol.value_problem(decoded, MAX_VALUE_DEPTH, allow_nul=allow_nul)
    if problem:
        if "NUL" in problem:
            problem += ", which cannot be stored"
        raise ValueError(f"{what}: {problem}")
    if len(encoded) > max_bytes:
        raise ValueTooLarge(f"{what} is larger than {max_bytes} bytes")
    return len(encoded)


class ReadOnlyConfig(Mapping[str, Any]):
    def __init__(self, values: dict[str, Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Config({sorted(self._values)})"


class Storage:
    def __init__(self, snapshot: dict[str, Any]) -> None:
        self._data = dict(snapshot)
        self._writes: dict[str, Any] = {}
        self._deletes: set[str] = set()
        self._sizes: dict[str, int] = {}

    def effect(self) -> tuple[dict[str, Any], list[str]]:
        """The run's writes and deletes, as copies (the child sends them with its result; plugin
        code cannot reach the live ones to slip past `set`'s checks)."""
        return dict(self._writes), sorted(self._deletes)

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(str(key), default)

    def _check_key(self, key: str) -> None:
        if "\x00" in key:
            raise ValueError("storage keys cannot contain NUL characters")
        if len(key.encode("utf-8", "surrogatepass")) > MAX_STORAGE_KEY_BYTES:
            raise ValueError(f"storage key longer than {MAX_STORAGE_KEY_BYTES} bytes")
        checked_json(key, "storage key", MAX_STORAGE_KEY_BYTES * 6)
        new = key not in self._writes and key not in self._deletes
        if new and len(self._writes) + len(self._deletes) >= MAX_STORAGE_KEYS_PER_RUN:
            raise ValueError(
                f"a run can write or delete at most {MAX_STORAGE_KEYS_PER_RUN} storage keys"
            )

    def set(self, key: str, value: Any) -> None:
        key = str(key)
        self._check_key(key)
        size = checked_json(
            value, f"storage value for '{key}'", MAX_STORAGE_VALUE_BYTES, allow_nul=False
        )
        total = sum(self._sizes.values()) - self._sizes.get(key, 0) + size
        if total > MAX_STORAGE_WRITE_BYTES:
            raise ValueError(
                f"a run can write at most {MAX_STORAGE_WRITE_BYTES} bytes of storage values"
            )
        self._data[key] = value
        self._writes[key] = value
        self._sizes[key] = size
        self._deletes.discard(key)

    def delete(self, key: str) -> None:
        key = str(key)
        self._check_key(key)
        self._data.pop(key, None)
        self._writes.pop(key, None)
        self._sizes.pop(key, None)
        self._deletes.add(key)


class Cache:
    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def get(self, key: str, default: Any = None) -> Any:
        value = self._channel.call("cache", action="get", key=str(key))
        return default if value is None else value

    def set(self, key: str, value: Any, ttl_s: float = 60.0) -> None:
        checked_json(value, f"cache value for '{key}'", MAX_CACHE_VALUE_BYTES)
        self._channel.call("cache", action="set", key=str(key), value=value, ttl_s=float(ttl_s))

    def incr(self, key: str, by: int = 1, ttl_s: float = 60.0) -> int:
        return int(
            self._channel.call(
                "cache", action="incr", key=str(key), value=int(by), ttl_s=float(ttl_s)
            )
        )

    def delete(self, key: str) -> None:
        self._channel.call("cache", action="delete", key=str(key))


def format_message(args: tuple[Any, ...]) -> str:
    """Like `logging`: `info("n=%d", 5)` formats; arguments that do not fit the format, or no
    format at all, are joined with spaces (`info("a", 1)` -> "a 1")."""
    if len(args) > 1 and isinstance(args[0], str) and "%" in args[0]:
        params: Any = args[1:]
        if len(params) == 1 and isinstance(params[0], Mapping) and params[0]:
            params = params[0]  # logging's `info("%(n)s", {"n": 1})`
        try:
            return str(args[0]) % params
        except (TypeError, ValueError, KeyError):
            pass
    return " ".join(str(a) for a in args)


class Logger:
    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def _emit(self, level: str, args: tuple[Any, ...]) -> None:
        self._channel.log(level, format_message(args))

    def debug(self, *args: Any, **_: Any) -> None:
        self._emit("debug", args)

    def info(self, *args: Any, **_: Any) -> None:
        self._emit("info", args)

    def warning(self, *args: Any, **_: Any) -> None:
        self._emit("warning", args)

    warn = warning

    def error(self, *args: Any, **_: Any) -> None:
        self._emit("error", args)

    critical = exception = error


class Headers(Mapping[str, str]):
    """Response headers: looked up without regard to case (`r.headers["content-type"]`), listed
    with the server's spelling."""

    def __init__(self, items: Mapping[str, str]) -> None:
        self._items = {str(k).lower(): (str(k), str(v)) for k, v in items.items()}

    def __getitem__(self, key: str) -> str:
        return self._items[str(key).lower()][1]

    def __contains__(self, key: object) -> bool:
        return str(key).lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, _ in self._items.values()])

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return repr(dict(self._items.values()))


class Response:
    """What meta.fetch returns."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.status = int(data.get("status", 0))
        self.headers = Headers(data.get("headers") or {})
        self.text: str = str(data.get("body", ""))
        self.url: str = str(data.get("url", ""))

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.text)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.url}>"


class RunMeta:
    def __init__(self, info: dict[str, Any]) -> None:
        self.config_id = info.get("config_id")
        self.task = info.get("task")
        self.slot = info.get("slot")
        self.attempt = info.get("attempt", 1)
        self.backfilled = bool(info.get("backfilled", False))
        self.deadline = info.get("deadline")
        self.run_id = info.get("run_id")


class Meta:
    def __init__(
        self, channel: Channel, config: dict[str, Any], storage: dict[str, Any], run: dict[str, Any]
    ) -> None:
        self.config = ReadOnlyConfig(config)
        self.storage = Storage(storage)
        self.cache = Cache(channel)
        self.logger = Logger(channel)
        self.run = RunMeta(run)
        self._channel = channel

    def fetch(
        self,
        url: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: Any = None,
        timeout_s: float = 10.0,
    ) -> Response:
        sent = {str(k): str(v) for k, v in (headers or {}).items()}
        if body is not None and not isinstance(body, str):
            body = json.dumps(body, allow_nan=False)
            if not any(k.lower() == "content-type" for k in sent):
                sent["Content-Type"] = "application/json"
        value = self._channel.call(
            "fetch",
            url=str(url),
            method=str(method).upper(),
            headers=sent,
            body=body,
            timeout_s=float(timeout_s),
        )
        return Response(value)


class PrintSink:
    """RestrictedPython's `_print_`: print() calls become log lines of level 'info'."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def __call__(self, _getattr: Any = None) -> PrintSink:
        return self

    def _call_print(self, *objects: Any, sep: str = " ", end: str = "\n", **_: Any) -> None:
        self._channel.log("info", sep.join(str(o) for o in objects))
