"""The body of a run's child process, after the jail is entered: execute the plugin module in
fresh restricted globals, call the task, send one result frame, exit."""

from __future__ import annotations

import json
import os
import socket
import sys
import traceback
import types
from typing import Any

from sandbox import policy
from sandbox.meta import MAX_RESULT_BYTES, Channel, Meta, PrintSink

# Released when memory runs out, so that reporting the MemoryError has room to work.
_RESERVE: list[bytearray] = []


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
    return {
        "t": "result",
        "status": "error",
        "error": {
            "type": type(exc).__name__,
            "message": str(exc)[:4000],
            "traceback": _plugin_traceback(exc, filename, source)[-50:],
        },
    }


def run_child(
    sock: socket.socket,
    code: types.CodeType | None,
    spec: dict[str, Any],
    source: str,
    import_guard: policy.ImportGuard,
) -> None:
    """Never returns: exits the process with status 0 once the result is sent.

    The run's data (config, storage, meta.run, and for tests an unrestricted source) is read
    here, from the supervisor, after the jail is entered: the fork server never held it."""
    channel = Channel(sock)
    filename = spec["filename"]
    _RESERVE.append(bytearray(256 * 1024))
    try:
        start = channel.receive("start")
        frame = _execute(channel, code, spec, start, import_guard)
    except MemoryError:
        _RESERVE.clear()
        frame = {"t": "result", "status": "memory_limit", "message": "MemoryError: out of memory"}
    except RecursionError as exc:
        frame = _error_frame(exc, filename, source)
    except BaseException as exc:  # the plugin's exception, whatever it is
        _RESERVE.clear()
        frame = _error_frame(exc, filename, source)
    try:
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
    import_guard: policy.ImportGuard,
) -> dict[str, Any]:
    meta = Meta(channel, start.get("config", {}), start.get("storage", {}), start.get("run", {}))
    task = spec["task"]
    if spec.get("unrestricted"):
        # Test-only: plain Python with real builtins, to prove layers 2-4 hold on their own.
        glb: dict[str, Any] = {"__name__": "unrestricted", "__builtins__": __builtins__}
        exec(compile(start["unrestricted_source"], spec["filename"], "exec"), glb)
    else:
        assert code is not None
        glb = policy.make_globals(import_guard, PrintSink(channel), name=spec["plugin_name"])
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
        encoded = json.dumps(result)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the task returned a value that is not JSON-serialisable: {exc}") from None
    if len(encoded) > MAX_RESULT_BYTES:
        return {
            "t": "result",
            "status": "output_limit",
            "message": f"result larger than {MAX_RESULT_BYTES} bytes",
        }
    return {
        "t": "result",
        "status": "ok",
        "result": result,
        "writes": meta.storage.writes,
        "deletes": sorted(meta.storage.deletes),
    }
