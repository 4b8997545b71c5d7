"""The body of a run's child process, after the jail is entered: execute the plugin module in
fresh restricted globals, call the task, send one result frame, exit."""

from __future__ import annotations

import os
import socket
import sys
import traceback
import types
from typing import Any

from sandbox import policy, protocol
from sandbox.limits import MAX_ERROR_MESSAGE, MAX_RESULT_BYTES, MAX_TRACEBACK_LINES
from sandbox.meta import Channel, Meta, PrintSink, ValueTooLarge, checked_json

# The result frame of a run that returned None and wrote nothing to storage (most runs), encoded
# once at import, in the fork server: such a child sends these bytes without encoding anything.
_PLAIN_OK: dict[str, Any] = {
    "t": "result",
    "status": "ok",
    "result": None,
    "writes": {},
    "deletes": [],
}
_PLAIN_OK_FRAME = protocol.encode(_PLAIN_OK, strict=True)

# Released when memory runs out, so that reporting the MemoryError has room to work. Allocated
# once in the fork server (`reserve_memory`), before it forks: every child inherits it as address
# space it can give back under RLIMIT_AS, without zeroing 256 KiB again per run.
RESERVE_BYTES = 256 * 1024
_RESERVE: list[bytearray] = []


def reserve_memory() -> None:
    if not _RESERVE:
        _RESERVE.append(bytearray(RESERVE_BYTES))


def _plugin_traceback(exc: BaseException, filename: str, source: str) -> list[str]:
    """Traceback lines of the plugin's own code only: our frames are not the author's business."""
    lines = source.splitlines()
    out = []
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename != filename:
            continue
        text = (
            lines[frame.lineno - 1].strip() if frame.lineno and frame.lineno <= len(lines) else ""
        )
        out.append(f'File "{filename}", line {frame.lineno}, in {frame.name}: {text}')
    return out


def _error_frame(exc: BaseException, filename: str, source: str) -> dict[str, Any]:
    try:
        message = str(exc)[:MAX_ERROR_MESSAGE]
    except BaseException:  # the plugin's own __str__ may raise
        message = "(the exception could not be turned into text)"
    return {
        "t": "result",
        "status": "error",
        "error": {
            "type": str(type(exc).__name__)[:200],
            "message": str(message),
            "traceback": _plugin_traceback(exc, filename, source)[-MAX_TRACEBACK_LINES:],
        },
    }


def run_child(
    sock: socket.socket,
    code: types.CodeType | None,
    spec: dict[str, Any],
    source: str,
    prepared: policy.PreparedGlobals,
) -> None:
    """Never returns: exits the process with status 0 once the result is sent.

    The run's data (config, storage, meta.run, and for tests an unrestricted source) is read
    here, from the supervisor, after the jail is entered: the fork server never held it."""
    channel = Channel(sock)
    filename = spec["filename"]
    reserve_memory()  # a no-op in a child of the fork server, which allocated it before forking
    try:
        start = channel.receive("start")
        frame = _execute(channel, code, spec, start, prepared)
    except MemoryError:
        _RESERVE.clear()
        frame = {"t": "result", "status": "memory_limit", "message": "MemoryError: out of memory"}
    except RecursionError as exc:
        frame = _error_frame(exc, filename, source)
    except BaseException as exc:  # the plugin's exception, whatever it is
        _RESERVE.clear()
        frame = _error_frame(exc, filename, source)
    try:
        if frame is _PLAIN_OK:
            sock.sendall(_PLAIN_OK_FRAME)
        else:
            channel.send(frame)
    except MemoryError:
        _RESERVE.clear()
        channel.send({"t": "result", "status": "memory_limit", "message": "out of memory"})
    sys.stdout.flush()
    os._exit(0)


def _execute(
    channel: Channel,
    code: types.CodeType | None,
    spec: dict[str, Any],
    start: dict[str, Any],
    prepared: policy.PreparedGlobals,
) -> dict[str, Any]:
    meta = Meta(channel, start.get("config", {}), start.get("storage", {}), start.get("run", {}))
    task = spec["task"]
    if spec.get("unrestricted"):
        # Test-only: plain Python with real builtins, to prove layers 2-4 hold on their own.
        glb: dict[str, Any] = {"__name__": "unrestricted", "__builtins__": __builtins__}
        exec(compile(start["unrestricted_source"], spec["filename"], "exec"), glb)
    else:
        assert code is not None
        glb = policy.make_globals(
            prepared.import_guard, PrintSink(channel), name=spec["plugin_name"], prepared=prepared
        )
        exec(code, glb)
    func = glb.get(task)
    if not callable(func):
        return {
            "t": "result",
            "status": "bad_plugin",
            "message": f"no function '{task}' in the plugin",
        }
    result = func(meta)
    try:
        checked_json(result, "the task's result", MAX_RESULT_BYTES)
    except ValueTooLarge as exc:
        return {"t": "result", "status": "output_limit", "message": str(exc)}
    writes, deletes = meta.storage.effect()
    if result is None and not writes and not deletes:
        return _PLAIN_OK
    return {"t": "result", "status": "ok", "result": result, "writes": writes, "deletes": deletes}


# A start frame of the shape the supervisor sends, holding nothing of any run.
_WARM_START = protocol.encode(
    {
        "t": "start",
        "config": {},
        "storage": {},
        "run": {
            "config_id": "warm-up",
            "task": "warm_up",
            "slot": "2000-01-01T00:00:00+00:00",
            "attempt": 1,
            "backfilled": False,
            "run_id": 0,
            "deadline": "2000-01-01T00:00:30+00:00",
        },
    },
    strict=True,
)
WARM_UP_ROUNDS = 64


def warm_up() -> None:
    """Run a child's pure steps (wrap a socket, read a start frame from it, build the meta object
    and the print sink, check a None result, take the storage effect) in the fork server, before
    it forks, on a constant start frame that holds no run's data. CPython specialises a
    function's bytecode in place after its first calls; code that only ever ran in children
    would start cold in each one, writing warm-up counters into code objects and entries into
    the type cache, on pages the fork has made copy-on-write: about 28 page faults per run.
    Nothing of it stays but the specialised bytecode: the objects are dropped, the sockets
    closed."""
    for _ in range(WARM_UP_ROUNDS):
        ours, theirs = socket.socketpair()
        with ours:
            ours.sendall(_WARM_START)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, theirs.detach()) as sock:
                channel = Channel(sock)
                start = channel.receive("start")
                meta = Meta(
                    channel, start.get("config", {}), start.get("storage", {}), start.get("run", {})
                )
                PrintSink(channel)
                checked_json(None, "the task's result", MAX_RESULT_BYTES)
                meta.storage.effect()
