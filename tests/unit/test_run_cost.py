"""What the cuts to a run's CPU (docs/benchmarks.md, "Cuts this round") must keep exactly as it
was: fresh globals and builtins per execution, the same frame bytes, the same checks."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from sandbox import child, guards, policy, protocol
from sandbox.meta import FetchError, checked_json


class _Sink:
    def __call__(self, _getattr: Any = None) -> _Sink:
        return self


def test_prepared_globals_give_each_execution_its_own_globals_and_builtins() -> None:
    guard = policy.ImportGuard()
    prepared = policy.PreparedGlobals(guard)
    first = policy.make_globals(guard, _Sink(), name="cost_a", prepared=prepared)
    second = policy.make_globals(guard, _Sink(), name="cost_b", prepared=prepared)
    assert first is not second
    # The first execution in a process takes the prepared dict itself (in a forked child, its
    # own copy-on-write copy); any later one gets builtins built afresh, never a copy of it.
    assert first["__builtins__"] is prepared.builtins
    assert second["__builtins__"] is not prepared.builtins
    assert second["__builtins__"] == guards.make_builtins(guard, FetchError)
    # A (hypothetical) write through a layer-1 escape to the first's builtins reaches nobody.
    first["__builtins__"]["len"] = None
    third = policy.make_globals(guard, _Sink(), name="cost_c", prepared=prepared)
    assert third["__builtins__"]["len"] is len
    for glb in (first, second, third):
        assert glb["_getattr_"] is guards.guarded_getattr
        assert guards.may_write(glb) is False
        assert guards.may_write(glb["__builtins__"]) is False


def test_prepared_globals_run_plugin_code_as_before() -> None:
    guard = policy.ImportGuard()
    prepared = policy.PreparedGlobals(guard)
    code = policy.compile_plugin("import json\n\ndef task(meta):\n    return json.dumps([1])\n")
    glb = policy.make_globals(guard, _Sink(), name="cost_run", prepared=prepared)
    exec(code, glb)
    assert glb["task"](None) == "[1]"
    refused = policy.compile_plugin("def task(meta):\n    return getattr(meta, '_secret')\n")
    glb = policy.make_globals(guard, _Sink(), name="cost_refused", prepared=prepared)
    exec(refused, glb)
    with pytest.raises(guards.SecurityError):
        glb["task"](object())


@pytest.mark.parametrize(
    "message",
    [
        {"t": "result", "status": "ok", "result": None, "writes": {}, "deletes": []},
        {"t": "log", "level": "info", "message": "caf\u00e9 \ud800 \x00"},
        {"t": "exit", "id": 3, "status": 0, "duration_ms": 1.5, "killed_for": None},
    ],
)
def test_frames_are_byte_for_byte_what_json_dumps_gave(message: dict[str, Any]) -> None:
    strict = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    assert protocol.encode(message, strict=True) == protocol.HEADER.pack(len(strict)) + strict
    loose = json.dumps(message, separators=(",", ":"), default=str).encode()
    assert protocol.encode(message) == protocol.HEADER.pack(len(loose)) + loose
    assert protocol.decode(strict) == json.loads(strict)


def test_the_prebuilt_encoders_keep_their_refusals() -> None:
    with pytest.raises(ValueError):
        protocol.encode({"t": "result", "result": float("nan")}, strict=True)
    with pytest.raises(TypeError):
        protocol.encode({"t": "result", "result": object()}, strict=True)
    assert b'"x"' not in protocol.encode({"v": object()})  # default=str: its repr
    for bad in (b'{"a": NaN}', b'{"a": 1e999}', b"[1]", b'{"a": "\xff"}'):
        with pytest.raises(protocol.ProtocolError):
            protocol.decode(bad)


def test_the_plain_ok_frame_is_the_encoded_frame_and_the_parent_accepts_it() -> None:
    assert protocol.encode(child._PLAIN_OK, strict=True) == child._PLAIN_OK_FRAME
    frame = protocol.parse_child_frame(protocol.decode(child._PLAIN_OK_FRAME[4:]))
    assert isinstance(frame, protocol.ResultFrame)
    assert (frame.status, frame.result, frame.writes, tuple(frame.deletes)) == ("ok", None, {}, ())


@pytest.mark.parametrize("value", [None, True, False])
def test_checked_json_fast_path_gives_the_same_size(value: Any) -> None:
    assert checked_json(value, "v", 100) == len(json.dumps(value))
    with pytest.raises(ValueError):
        checked_json(value, "v", 3)


def test_recv_one_reads_exactly_one_frame_split_or_whole() -> None:
    a, b = socket.socketpair()
    with a, b:
        first = protocol.encode({"t": "start", "config": {"k": "v" * 10_000}})
        second = protocol.encode({"t": "reply", "call": 1})
        a.sendall(first[:3])
        a.sendall(first[3:50])
        a.sendall(first[50:] + second)
        assert protocol.recv_one(b, 1 << 20) == {"t": "start", "config": {"k": "v" * 10_000}}
        # Nothing past the frame was read: the next is still in the socket.
        assert protocol.recv(b, protocol.FrameReader()) == [{"t": "reply", "call": 1}]
        a.sendall(protocol.HEADER.pack(1 << 21))
        with pytest.raises(protocol.FrameTooLarge):
            protocol.recv_one(b, 1 << 20)
        a.sendall(protocol.HEADER.pack(10) + b"{}")
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(protocol.ConnectionClosed):
            protocol.recv_one(b, 1 << 20)


@pytest.mark.parametrize(
    "args",
    [
        (7, 0, None, 1.234, 0.5, 1234, 30.0),
        (8, 9, None, 0.0, 0.0, 0, 1.5),
        (9, 9, "timeout", 1500.001, 12.25, 99, 1.5),  # a reason: through protocol.encode
        (10, 0, None, 1.0, 1.0, 1, float("inf")),  # not finite: through protocol.encode
    ],
)
def test_the_formatted_exit_report_is_what_protocol_encode_gives(args: tuple[Any, ...]) -> None:
    from sandbox.forkserver import _exit_frame

    keys = ("id", "status", "killed_for", "duration_ms", "cpu_ms", "max_rss_kb", "timeout_s")
    assert _exit_frame(*args) == protocol.encode(
        {"t": "exit", **dict(zip(keys, args, strict=True))}
    )


def _open_descriptors() -> set[str]:
    import os

    return set(os.listdir("/proc/self/fd"))


def test_the_warm_up_holds_no_run_data_and_leaves_nothing_open() -> None:
    # The fork server runs the child's pure steps before forking (specialised bytecode for every
    # child); what it reads there is a constant frame with nothing of any run in it.
    start = protocol.decode(child._WARM_START[protocol.HEADER.size :])
    assert start["t"] == "start"
    assert start["config"] == {} and start["storage"] == {}
    assert start["run"]["config_id"] == "warm-up"
    before = _open_descriptors()
    child.warm_up()
    assert _open_descriptors() == before
