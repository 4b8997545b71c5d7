"""Length-prefixed JSON frames over a stream socket. Never pickle: a child is not trusted."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 4 * 1024 * 1024  # a child frame above this is an output_limit


class FrameTooLarge(Exception):
    pass


class ConnectionClosed(Exception):
    pass


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":"), default=str).encode("utf-8")
    return HEADER.pack(len(body)) + body


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(encode(message))


class FrameReader:
    """Incremental decoder: feed bytes as they arrive, take whole frames out."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        frames: list[dict[str, Any]] = []
        while len(self._buf) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buf)
            if size > self._max:
                raise FrameTooLarge(f"frame of {size} bytes exceeds {self._max}")
            if len(self._buf) < HEADER.size + size:
                break
            body = bytes(self._buf[HEADER.size : HEADER.size + size])
            del self._buf[: HEADER.size + size]
            message = json.loads(body)
            if not isinstance(message, dict):
                raise ValueError("frame is not a JSON object")
            frames.append(message)
        return frames


def recv(sock: socket.socket, reader: FrameReader) -> list[dict[str, Any]]:
    """Blocking read of at least one frame (or ConnectionClosed)."""
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionClosed()
        frames = reader.feed(data)
        if frames:
            return frames
