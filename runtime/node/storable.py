"""What a run returned or logged, made into what PostgreSQL can store, without ever raising
anything but `Unstorable`.

A child is assumed hostile: its result, error, logs and storage writes may be nested thousands
deep, hold NaN or Infinity, integers of thousands of digits, lone surrogates or NUL characters.
Text is repaired (NUL and lone surrogates become U+FFFD, which PostgreSQL's text and jsonb can
hold); values that cannot be stored faithfully (too deep, too large, not finite, not JSON) are
refused with the reason, and the run is recorded without its data (runtime/node/record.py).
The walk is iterative: no depth of input can exhaust the interpreter's stack.
"""

from __future__ import annotations

import math
from typing import Any

from sandbox.limits import MAX_RESULT_BYTES

MAX_DEPTH = 100  # nesting PostgreSQL's jsonb parser and every reader of a run handle with ease
MAX_INT_BITS = 13_000  # about 3,900 decimal digits (Python refuses to print more than 4,300)
MAX_STORED_BYTES = MAX_RESULT_BYTES  # the sandbox's cap on a result, applied to each stored value
MAX_REASON_CHARS = 2000  # of a reason the node records for a run or a task it could not handle
_REPLACEMENT = "\ufffd"


class Unstorable(ValueError):
    """A value PostgreSQL cannot store as it is; the message says why, in one line."""


def text(value: str) -> str:
    """`value` with NUL characters and lone surrogates replaced by U+FFFD."""
    if type(value) is not str:  # a subclass: its own methods are not to be trusted
        value = str.__str__(value)
    if value.isascii():
        return value.replace("\x00", _REPLACEMENT) if "\x00" in value else value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # A high+low pair becomes its character again; a lone surrogate becomes U+FFFD.
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value.replace("\x00", _REPLACEMENT) if "\x00" in value else value


def storable(value: Any, what: str = "value", max_bytes: int = MAX_STORED_BYTES) -> Any:
    """A copy of `value` that encodes as JSON PostgreSQL accepts; `Unstorable` otherwise."""
    root: list[Any] = [None]
    # (value, container, key in container, depth); children are written into their parent.
    stack: list[tuple[Any, Any, Any, int]] = [(value, root, 0, 1)]
    size = 0
    while stack:
        item, parent, key, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise Unstorable(f"{what} is nested deeper than {MAX_DEPTH} levels")
        out: Any
        if item is None or item is True or item is False:
            out = item
            size += 5
        elif isinstance(item, int) and not isinstance(item, bool):
            if item.bit_length() > MAX_INT_BITS:
                raise Unstorable(f"{what} holds an integer of more than {MAX_INT_BITS} bits")
            out = int(item)
            size += 1 + item.bit_length() // 3
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise Unstorable(
                    f"{what} holds a non-finite number ({item!r}), which JSON cannot represent"
                )
            out = float(item)
            size += 24
        elif isinstance(item, str):
            out = text(item)
            size += len(out) + 2
        elif isinstance(item, dict):
            out = {}
            for k, v in item.items():
                if isinstance(k, str):
                    name = text(k)
                elif k is None or isinstance(k, int | float | bool):
                    name = text(str(k))
                else:
                    raise Unstorable(f"{what} has a key of type {type(k).__name__}")
                out[name] = None
                size += len(name) + 4
                stack.append((v, out, name, depth + 1))
        elif isinstance(item, list | tuple):
            out = [None] * len(item)
            size += 2 + len(item)
            for index, v in enumerate(item):
                stack.append((v, out, index, depth + 1))
        else:
            raise Unstorable(f"{what} holds a {type(item).__name__}, which is not JSON")
        if size > max_bytes:
            raise Unstorable(f"{what} is larger than {max_bytes} bytes")
        parent[key] = out
    return root[0]
