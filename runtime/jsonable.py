"""Values made ready for JSON: datetimes as ISO 8601 UTC with a Z, decimals as floats. One
definition for every `--json` output, the status API and the status page.

Whatever the value (plugin results included), `dumps` returns valid JSON and never raises:
NaN and the infinities become null, an integer too long for `str` becomes a string, anything
else unknown becomes its `str`, and nesting deeper than MAX_DEPTH is cut with a marker string.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

MAX_DEPTH = 200
TOO_DEEP = "<nested too deep to show>"
# CPython refuses to convert ints of more than 4300 digits to str (sys.int_info); stay below.
_MAX_INT_BITS = 14_000


def iso_utc(value: datetime) -> str:
    """ISO 8601 in UTC with a Z, e.g. 2026-11-27T10:00:00Z (fraction only when there is one)."""
    utc = value.astimezone(UTC) if value.tzinfo else value
    # isoformat of a naive time: the same text as strftime("%Y-%m-%dT%H:%M:%S") (+ ".ffffff"
    # when there is a fraction), several times faster: a node writes thousands per tick.
    return utc.replace(tzinfo=None).isoformat() + "Z"


def jsonable(value: Any, _depth: int = 0) -> Any:
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return (
            value
            if value.bit_length() <= _MAX_INT_BITS
            else f"<integer of {value.bit_length()} bits>"
        )
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, Decimal):
        number = float(value)
        return number if math.isfinite(number) else None
    if _depth >= MAX_DEPTH and isinstance(value, Mapping | list | tuple):
        return TOO_DEEP
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, _depth + 1) for v in value]
    return str(value)


def dumps(value: Any, *, indent: int | None = None) -> str:
    """`value` as JSON text that any strict parser accepts (see the module's docstring)."""
    return json.dumps(jsonable(value), indent=indent, allow_nan=False)
