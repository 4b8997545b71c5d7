"""Values from the database made ready for JSON: datetimes as ISO 8601 UTC with a Z, decimals as
floats. One definition for the CLI's --json output, the status API and the status page."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def iso_utc(value: datetime) -> str:
    """ISO 8601 in UTC with a Z, e.g. 2026-11-27T10:00:00Z (fraction only when there is one)."""
    utc = value.astimezone(UTC) if value.tzinfo else value
    # isoformat of a naive time: the same text as strftime("%Y-%m-%dT%H:%M:%S") (+ ".ffffff"
    # when there is a fraction), several times faster: a node writes thousands per tick.
    return utc.replace(tzinfo=None).isoformat() + "Z"


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
