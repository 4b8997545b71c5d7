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

MAX_LOG_LINES = 1000
MAX_LOG_BYTES = 256 * 1024
MAX_LOG_LINE = 8 * 1024
MAX_RESULT_BYTES = 1024 * 1024
MAX_STORAGE_VALUE_BYTES = 256 * 1024


class OutputLimitExceeded(Exception):
    pass


class FetchError(Exception):
    """meta.fetch refused or failed (host not allowed, timeout, too large)."""


class Channel:
    """The child's end of the pipe to the fork server."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = protocol.FrameReader()
        self._call_seq = 0
        self.log_lines = 0
        self.log_bytes = 0

    def send(self, message: dict[str, Any]) -> None:
        protocol.send(self.sock, message)

    def log(self, level: str, message: str) -> None:
        message = message[:MAX_LOG_LINE]
        self.log_lines += 1
        self.log_bytes += len(message)
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
        self.send({"t": "log", "level": level, "message": message})

    def receive(self, kind: str) -> dict[str, Any]:
        """Block until a frame of type `kind` arrives (the run's start frame)."""
        while True:
            for frame in protocol.recv(self.sock, self.reader):
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
                            else RuntimeError(str(frame["error"]))
                        )
                    return frame.get("value")


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


def _check_json(value: Any, what: str) -> None:
    try:
        encoded = json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serialisable: {exc}") from None
    if len(encoded) > MAX_STORAGE_VALUE_BYTES:
        raise ValueError(f"{what} is larger than {MAX_STORAGE_VALUE_BYTES} bytes")
    if "\\u0000" in encoded:
        raise ValueError(f"{what} contains a NUL character, which cannot be stored")


class Storage:
    def __init__(self, snapshot: dict[str, Any]) -> None:
        self._data = dict(snapshot)
        self.writes: dict[str, Any] = {}
        self.deletes: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(str(key), default)

    def set(self, key: str, value: Any) -> None:
        key = str(key)
        if "\x00" in key:
            raise ValueError("storage keys cannot contain NUL characters")
        _check_json(value, f"storage value for '{key}'")
        self._data[key] = value
        self.writes[key] = value
        self.deletes.discard(key)

    def delete(self, key: str) -> None:
        key = str(key)
        self._data.pop(key, None)
        self.writes.pop(key, None)
        self.deletes.add(key)


class Cache:
    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def get(self, key: str, default: Any = None) -> Any:
        value = self._channel.call("cache", action="get", key=str(key))
        return default if value is None else value

    def set(self, key: str, value: Any, ttl_s: float = 60.0) -> None:
        _check_json(value, f"cache value for '{key}'")
        self._channel.call("cache", action="set", key=str(key), value=value, ttl_s=float(ttl_s))

    def incr(self, key: str, by: int = 1, ttl_s: float = 60.0) -> int:
        return int(
            self._channel.call(
                "cache", action="incr", key=str(key), value=int(by), ttl_s=float(ttl_s)
            )
        )

    def delete(self, key: str) -> None:
        self._channel.call("cache", action="delete", key=str(key))


class Logger:
    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def _emit(self, level: str, args: tuple[Any, ...]) -> None:
        self._channel.log(level, " ".join(str(a) for a in args))

    def debug(self, *args: Any) -> None:
        self._emit("debug", args)

    def info(self, *args: Any) -> None:
        self._emit("info", args)

    def warning(self, *args: Any) -> None:
        self._emit("warning", args)

    warn = warning

    def error(self, *args: Any) -> None:
        self._emit("error", args)


class Response:
    """What meta.fetch returns."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.status = int(data.get("status", 0))
        self.headers: dict[str, str] = dict(data.get("headers") or {})
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
        if body is not None and not isinstance(body, str):
            body = json.dumps(body)
        value = self._channel.call(
            "fetch",
            url=str(url),
            method=str(method).upper(),
            headers=dict(headers or {}),
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
