"""Length-prefixed JSON frames over a stream socket, and the typed messages a child may send.

Never pickle: the child is assumed fully compromised. Everything it sends is parsed with a bounded
size and nesting depth (`FrameReader`) and then validated field by field against the schema of its
type (`parse_child_frame`): anything else is a `ProtocolError` (the run ends as `crashed`) or a
`FrameTooLarge` (it ends as `output_limit`). Caps that an honest plugin can reach (a log flood, a
result too large) are separate checks (`*_over_cap`), so an honest child gets the same answer as a
hostile one.
"""

from __future__ import annotations

import gc
import json
import math
import re
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from sandbox import limits

HEADER = struct.Struct(">I")
# Frames the supervisor and the fork server send each other (plugin source included).
MAX_CONTROL_FRAME_BYTES = 64 * 1024 * 1024
MAX_FRAME_BYTES = limits.MAX_CHILD_FRAME_BYTES  # a child frame above this is an output_limit


class FrameTooLarge(Exception):
    pass


class ProtocolError(ValueError):
    """A frame that is not what the protocol says: not JSON, too deep, a field of the wrong type,
    an unknown type or operation, a frame after the result."""


class ConnectionClosed(Exception):
    pass


def _refuse_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ProtocolError(f"number {text[:40]} is out of range")
    return value


# Built once: `json.dumps(m, **options)` and `json.loads(t, **options)` build an encoder or a
# decoder per call, which a short-lived child pays for in CPU and in pages first touched. These
# are the same objects with the same options (stateless between calls), so the bytes and the
# checks are exactly those of the calls they replace.
_STRICT_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def encode(message: dict[str, Any], *, strict: bool = False) -> bytes:
    """One frame. `strict` (what a child sends): no NaN/Infinity, nothing but JSON types."""
    body = (_STRICT_ENCODER if strict else _ENCODER).encode(message)
    data = body.encode("utf-8")
    return HEADER.pack(len(data)) + data


def send(sock: socket.socket, message: dict[str, Any], *, strict: bool = False) -> None:
    sock.sendall(encode(message, strict=strict))


def decode(body: bytes, max_depth: int | None = None) -> dict[str, Any]:
    """One frame's body: strict UTF-8, strict JSON (no NaN, no Infinity, no 1e999), an object,
    nested at most `max_depth` deep when given. Every failure is a ProtocolError.

    The parser itself refuses nesting past the recursion limit (RecursionError); a child's
    frames need no whole-frame walk on top, as `parse_child_frame` types every field and walks
    only the ones that hold plugin data (result, storage values, cache values)."""
    # Millions of tiny containers (`[[],[],...]`) would run the cyclic collector again and again
    # while they are built (seconds for a few MB); the parser holds the GIL, so pausing the
    # collector for its duration affects no other thread's code.
    collecting = gc.isenabled()
    gc.disable()
    try:
        text = body.decode("utf-8")
        message = _DECODER.decode(text)
    except ProtocolError:
        raise
    except RecursionError:
        raise ProtocolError("frame nested too deeply") from None
    except (UnicodeError, ValueError) as exc:  # JSONDecodeError and int digit limits too
        raise ProtocolError(f"frame is not valid JSON: {str(exc)[:200]}") from None
    finally:
        if collecting:
            gc.enable()
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    if max_depth is not None and too_deep(message, max_depth):
        raise ProtocolError(f"frame: nested deeper than {max_depth} levels")
    return message


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


class FrameReader:
    """Incremental decoder: feed bytes as they arrive, take whole frames out. A declared length
    above `max_frame` raises FrameTooLarge before anything is buffered for it."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES, max_depth: int | None = None):
        self._buf = bytearray()
        self._max = max_frame
        self._depth = max_depth

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        frames: list[dict[str, Any]] = []
        while len(self._buf) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buf)
            if size > self._max:
                raise FrameTooLarge(f"a frame of {size} bytes exceeds the cap of {self._max}")
            if len(self._buf) < HEADER.size + size:
                break
            body = bytes(self._buf[HEADER.size : HEADER.size + size])
            del self._buf[: HEADER.size + size]
            frames.append(decode(body, self._depth))
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame."""
        return len(self._buf)


def recv(sock: socket.socket, reader: FrameReader) -> list[dict[str, Any]]:
    """Blocking read of at least one frame (or ConnectionClosed)."""
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionClosed()
        frames = reader.feed(data)
        if frames:
            return frames


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = sock.recv(size, socket.MSG_WAITALL)
    if len(data) == size:
        return data
    parts, got = [data], len(data)
    while got < size:
        chunk = sock.recv(size - got, socket.MSG_WAITALL)
        if not chunk:
            raise ConnectionClosed()
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def recv_one(sock: socket.socket, max_frame: int) -> dict[str, Any]:
    """Blocking read of exactly one frame, with no FrameReader and nothing read past it: the
    child's read of its start frame. A declared length above `max_frame` raises FrameTooLarge
    before anything is read for it."""
    (size,) = HEADER.unpack(_recv_exact(sock, HEADER.size))
    if size > max_frame:
        raise FrameTooLarge(f"a frame of {size} bytes exceeds the cap of {max_frame}")
    return decode(_recv_exact(sock, size))


# -- values ------------------------------------------------------------------------------------


# A NUL in JSON text written with ensure_ascii=False: \u0000 after an even number of backslashes.
_NUL = re.compile(r"(?:^|[^\\])(?:\\\\)*\\u0000")
_CONTAINERS = (dict, list)


def too_deep(value: Any, max_depth: int) -> bool:
    """Does `value` nest containers deeper than `max_depth`? Level by level, no recursion; only
    containers are looked into, with C-speed filtering of their items."""
    level = [value] if type(value) in _CONTAINERS else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            return True
        following: list[Any] = []
        for container in level:
            items = container.values() if type(container) is dict else container
            following += [v for v in items if type(v) in _CONTAINERS]
        level = following
    return False


def data_check(value: Any, max_depth: int, *, allow_nul: bool = True) -> tuple[str | None, int]:
    """(why `value` cannot be used as it is, or None; its size as the child measures it). Not
    JSON (NaN, a non-str key, another type), nested deeper than `max_depth`, a string that is not
    valid Unicode (a lone surrogate from a \\ud800 escape), a NUL where none may be stored."""
    if too_deep(value, max_depth):
        return f"nested deeper than {max_depth} levels", 0
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except RecursionError:
        return f"nested deeper than {max_depth} levels", 0
    except (TypeError, ValueError) as exc:
        return f"not JSON: {str(exc)[:200]}", 0
    if text.isascii():
        size = len(text)
    else:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "a string is not valid Unicode (lone surrogate)", 0
        size = json_size(value)
    if not allow_nul and "\\u0000" in text and _NUL.search(text):
        return "a string contains a NUL character", 0
    return None, size


def value_problem(value: Any, max_depth: int, *, allow_nul: bool = True) -> str | None:
    """Why a JSON value cannot be used as it is (None when it can): see data_check."""
    return data_check(value, max_depth, allow_nul=allow_nul)[0]


# Control characters but tab and newline: C0, DEL, C1. In text shown on an operator's terminal an
# ESC starts a sequence that clears the screen, moves the cursor over earlier lines (a forged
# "outcome ok"), sets the window title or a hyperlink, or writes the clipboard.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape_control(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\x00":  # what the recorder does with a NUL (PostgreSQL stores none)
        return "\ufffd"
    return "\\r" if char == "\r" else f"\\x{ord(char):02x}"


def clean_text(text: str) -> str:
    """Text for people (a log line, an error message): lone surrogates and NUL become U+FFFD,
    other control characters (but tab and newline) a visible escape (`\\x1b`, `\\r`), the one the runtime's
    displays use (runtime/text.py `visible`)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return _CONTROL.sub(_escape_control, text)


def utf8_over(text: str, what: str, cap: int, bigger: str = "larger") -> str | None:
    """Why `text` (named `what`) cannot be sent as UTF-8 in at most `cap` bytes: a lone
    surrogate, or its size (None when it can)."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return f"{what} is not valid Unicode (lone surrogate)"
    return f"{what} {bigger} than {cap} bytes" if size > cap else None


def json_size(value: Any) -> int:
    """Length of `value` as the child measures it (json.dumps, ASCII escapes)."""
    return len(json.dumps(value, allow_nan=False))


# -- the typed messages of a child -------------------------------------------------------------


@dataclass(frozen=True)
class LogFrame:
    level: str
    message: str


@dataclass(frozen=True)
class FetchArgs:
    url: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    timeout_s: float = limits.DEFAULT_FETCH_TIMEOUT_S

    def over_cap(self) -> str | None:
        """Why the parent refuses this fetch before making it (None when it may be made)."""
        if len(self.url) > limits.MAX_URL_CHARS:
            return f"URL longer than {limits.MAX_URL_CHARS} characters"
        if any(c <= " " or c == "\x7f" for c in self.url) or not self.url.isascii():
            return "URL has spaces, control or non-ASCII characters (percent-encode them)"
        if not (0 < len(self.method) <= limits.MAX_FETCH_METHOD_CHARS) or not (
            self.method.isascii() and self.method.isalpha()
        ):
            return f"method {self.method[:40]!r} is not an HTTP method"
        if len(self.headers) > limits.MAX_FETCH_HEADERS:
            return f"more than {limits.MAX_FETCH_HEADERS} headers"
        size = 0
        for name, value in self.headers.items():
            if not name or not name.isascii() or any(c in _NOT_TOKEN or c <= " " for c in name):
                return f"header name {name[:40]!r} is not valid"
            if any(c in "\r\n\x00" for c in value):
                return f"header {name[:40]!r} has a line break or NUL in its value"
            try:
                size += len(name) + len(value.encode("latin-1"))
            except UnicodeEncodeError:
                return f"header {name[:40]!r} has characters outside Latin-1"
        if size > limits.MAX_FETCH_HEADER_BYTES:
            return f"headers larger than {limits.MAX_FETCH_HEADER_BYTES} bytes"
        if self.body is not None and (
            problem := utf8_over(self.body, "body", limits.MAX_FETCH_BODY_BYTES)
        ):
            return problem
        if not math.isfinite(self.timeout_s) or self.timeout_s <= 0:
            return "timeout_s must be a positive number"
        return None


@dataclass(frozen=True)
class FetchResponse:
    """What the supervisor answers a fetch with (the child turns it into a `Response`)."""

    status: int
    headers: dict[str, str]
    body: str
    url: str

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "headers": self.headers, "body": self.body, "url": self.url}


_NOT_TOKEN = frozenset('()<>@,;:\\"/[]?={} \t')

CACHE_ACTIONS = ("get", "set", "incr", "delete")


@dataclass(frozen=True)
class CacheArgs:
    action: str
    key: str
    value: Any = None
    ttl_s: float = limits.DEFAULT_CACHE_TTL_S

    def over_cap(self) -> str | None:
        if problem := utf8_over(self.key, "cache key", limits.MAX_CACHE_KEY_BYTES, "longer"):
            return problem
        if not math.isfinite(self.ttl_s):
            return "ttl_s must be a finite number"
        if self.action == "set":
            problem, size = data_check(self.value, limits.MAX_VALUE_DEPTH)
            if problem:
                return f"cache value: {problem}"
            if size > limits.MAX_CACHE_VALUE_BYTES:
                return f"cache value larger than {limits.MAX_CACHE_VALUE_BYTES} bytes"
        if self.action == "incr" and abs(self.value) > limits.MAX_CACHE_INT:
            return "cache incr step out of the 64-bit range"
        return None


@dataclass(frozen=True)
class CallFrame:
    call: int
    op: str  # "fetch" or "cache"
    args: FetchArgs | CacheArgs


@dataclass(frozen=True)
class ErrorFrame:
    type: str
    message: str
    traceback: tuple[str, ...] = ()


RESULT_STATUSES = ("ok", "error", "memory_limit", "output_limit", "bad_plugin", "crashed")


@dataclass(frozen=True)
class ResultFrame:
    status: str
    result: Any = None
    writes: dict[str, Any] = field(default_factory=dict)
    deletes: tuple[str, ...] = ()
    error: ErrorFrame | None = None
    message: str = ""
    # Sizes as JSON, measured once while validating: the result, each storage value.
    result_size: int = 0
    write_sizes: dict[str, int] = field(default_factory=dict)

    def over_cap(self) -> str | None:
        """Why an `ok` result cannot be taken as it is, for size (an output_limit)."""
        if self.status != "ok":
            return None
        if self.result_size > limits.MAX_RESULT_BYTES:
            return f"result larger than {limits.MAX_RESULT_BYTES} bytes"
        if len(self.writes) + len(self.deletes) > limits.MAX_STORAGE_KEYS_PER_RUN:
            return f"more than {limits.MAX_STORAGE_KEYS_PER_RUN} storage keys written or deleted"
        total = 0
        for key in self.writes:
            if len(key.encode("utf-8")) > limits.MAX_STORAGE_KEY_BYTES:
                return f"storage key longer than {limits.MAX_STORAGE_KEY_BYTES} bytes"
            size = self.write_sizes[key]
            if size > limits.MAX_STORAGE_VALUE_BYTES:
                return f"storage value larger than {limits.MAX_STORAGE_VALUE_BYTES} bytes"
            total += size
        if total > limits.MAX_STORAGE_WRITE_BYTES:
            return f"storage writes larger than {limits.MAX_STORAGE_WRITE_BYTES} bytes in all"
        return None


ChildFrame = LogFrame | CallFrame | ResultFrame


def _fields(raw: dict[str, Any], what: str, required: set[str], optional: set[str]) -> None:
    missing = required - raw.keys()
    if missing:
        raise ProtocolError(f"{what}: missing field(s) {sorted(missing)}")
    unknown = raw.keys() - required - optional
    if unknown:
        raise ProtocolError(f"{what}: unknown field(s) {sorted(unknown)[:5]!r}"[:300])


def _str(raw: dict[str, Any], name: str, what: str) -> str:
    value = raw[name]
    if type(value) is not str:
        raise ProtocolError(f"{what}: field {name!r} must be a string")
    return value


def _number(raw: dict[str, Any], name: str, what: str) -> float:
    value = raw[name]
    if type(value) not in (int, float):
        raise ProtocolError(f"{what}: field {name!r} must be a number")
    try:
        return float(value)
    except OverflowError:
        raise ProtocolError(f"{what}: field {name!r} is out of range") from None


def _str_dict(value: Any, what: str) -> dict[str, str]:
    if type(value) is not dict or any(type(v) is not str for v in value.values()):
        raise ProtocolError(f"{what} must be an object of strings")
    return value


def _str_list(value: Any, what: str) -> tuple[str, ...]:
    if type(value) is not list or any(type(v) is not str for v in value):
        raise ProtocolError(f"{what} must be a list of strings")
    return tuple(value)


def _fetch_args(raw: Any) -> FetchArgs:
    what = "fetch call"
    if type(raw) is not dict:
        raise ProtocolError(f"{what}: args must be an object")
    _fields(raw, what, {"url"}, {"method", "headers", "body", "timeout_s"})
    body = raw.get("body")
    if body is not None and type(body) is not str:
        raise ProtocolError(f"{what}: field 'body' must be a string or null")
    return FetchArgs(
        url=_str(raw, "url", what),
        method=_str(raw, "method", what) if "method" in raw else "GET",
        headers=_str_dict(raw.get("headers", {}), f"{what}: field 'headers'"),
        body=body,
        timeout_s=(
            _number(raw, "timeout_s", what)
            if "timeout_s" in raw
            else limits.DEFAULT_FETCH_TIMEOUT_S
        ),
    )


def _cache_args(raw: Any) -> CacheArgs:
    what = "cache call"
    if type(raw) is not dict:
        raise ProtocolError(f"{what}: args must be an object")
    _fields(raw, what, {"action", "key"}, {"value", "ttl_s"})
    action = _str(raw, "action", what)
    if action not in CACHE_ACTIONS:
        raise ProtocolError(f"{what}: unknown action {action[:40]!r}")
    value = raw.get("value")
    if action == "incr":
        value = raw.get("value", 1)
        if type(value) is not int:
            raise ProtocolError(f"{what}: incr takes an integer")
    elif action != "set" and value is not None:
        raise ProtocolError(f"{what}: {action} takes no value")
    return CacheArgs(
        action=action,
        key=_str(raw, "key", what),
        value=value,
        ttl_s=_number(raw, "ttl_s", what) if "ttl_s" in raw else limits.DEFAULT_CACHE_TTL_S,
    )


def _key_problem(key: str) -> str | None:
    if "\x00" in key:
        return "a key contains a NUL character"
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            return "a key is not valid Unicode (lone surrogate)"
    return None


def _result(raw: dict[str, Any]) -> ResultFrame:
    what = "result frame"
    status = raw.get("status")
    if type(status) is not str or status not in RESULT_STATUSES:
        raise ProtocolError(f"{what}: unknown status {str(status)[:40]!r}")
    if status == "ok":
        _fields(raw, what, {"t", "status", "result", "writes", "deletes"}, set())
        writes = raw["writes"]
        if type(writes) is not dict:
            raise ProtocolError(f"{what}: field 'writes' must be an object")
        sizes: dict[str, int] = {}
        for key, value in writes.items():
            problem, sizes[key] = data_check(value, limits.MAX_VALUE_DEPTH, allow_nul=False)
            problem = problem or _key_problem(key)
            if problem:
                raise ProtocolError(f"{what}: storage write: {problem}")
        deletes = _str_list(raw["deletes"], f"{what}: field 'deletes'")
        for key in deletes:
            problem = _key_problem(key)
            if problem:
                raise ProtocolError(f"{what}: storage delete: {problem}")
        problem, size = data_check(raw["result"], limits.MAX_VALUE_DEPTH)
        if problem:
            raise ProtocolError(f"{what}: result: {problem}")
        return ResultFrame(
            status,
            result=raw["result"],
            writes=writes,
            deletes=deletes,
            result_size=size,
            write_sizes=sizes,
        )
    if status == "error":
        _fields(raw, what, {"t", "status", "error"}, set())
        error = raw["error"]
        if type(error) is not dict:
            raise ProtocolError(f"{what}: field 'error' must be an object")
        _fields(error, f"{what} error", {"type", "message"}, {"traceback"})
        traceback = _str_list(error.get("traceback", []), f"{what}: error traceback")
        return ResultFrame(
            status,
            error=ErrorFrame(
                type=clean_text(_str(error, "type", what)[: limits.MAX_ERROR_TYPE]),
                message=clean_text(_str(error, "message", what)[: limits.MAX_ERROR_MESSAGE]),
                traceback=tuple(
                    clean_text(line[: limits.MAX_TRACEBACK_LINE])
                    for line in traceback[-limits.MAX_TRACEBACK_LINES :]
                ),
            ),
        )
    _fields(raw, what, {"t", "status", "message"}, set())
    return ResultFrame(status, message=clean_text(_str(raw, "message", what)[:1000]))


def parse_child_frame(raw: dict[str, Any]) -> ChildFrame:
    """The typed message of one decoded frame from a child, or a ProtocolError."""
    t = raw.get("t")
    if t == "log":
        _fields(raw, "log frame", {"t", "level", "message"}, set())
        level = _str(raw, "level", "log frame")
        if level not in limits.LOG_LEVELS:
            raise ProtocolError(f"log frame: unknown level {level[:40]!r}")
        message = _str(raw, "message", "log frame")[: limits.MAX_LOG_LINE]
        return LogFrame(level, clean_text(message))
    if t == "call":
        _fields(raw, "call frame", {"t", "call", "op", "args"}, set())
        call = raw["call"]
        if type(call) is not int or not 0 <= call < 2**63:
            raise ProtocolError("call frame: field 'call' must be a non-negative integer")
        op = raw["op"]
        if op == "fetch":
            return CallFrame(call, op, _fetch_args(raw["args"]))
        if op == "cache":
            return CallFrame(call, op, _cache_args(raw["args"]))
        raise ProtocolError(f"call frame: unknown operation {str(op)[:40]!r}")
    if t == "result":
        return _result(raw)
    raise ProtocolError(f"unknown frame type {str(t)[:40]!r}")
