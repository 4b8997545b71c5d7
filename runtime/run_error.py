"""How a run's error is told in one line, wherever it is shown: `serve`'s log line, the `runs`
table, `logs`, `status`/`doctor` and the status page all say `Type: first line of the message`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Control characters (a child may send any bytes) never reach a terminal or a log line.
_CONTROL = {c: "?" for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)]}

SUMMARY_CHARS = 200


def error_summary(error: Any, limit: int = SUMMARY_CHARS) -> str:
    """`TypeError: first line` of an error (a mapping with `type`/`message`, an object with
    those attributes, or None -> ""), on one line, at most `limit` characters."""
    if error is None:
        return ""
    if isinstance(error, Mapping):
        kind, message = error.get("type"), error.get("message")
    else:
        kind, message = getattr(error, "type", None), getattr(error, "message", None)
    kind = " ".join(str(kind or "").split()).translate(_CONTROL)
    lines = [line.strip() for line in str(message or "").splitlines() if line.strip()]
    first = " ".join(lines[0].split()).translate(_CONTROL) if lines else ""
    text = f"{kind}: {first}" if kind and first else (kind or first)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text
