"""Cron expressions: the one check of what this project accepts as a schedule.

Install (`plugin.json`'s `schedules`) and the scheduler both use `check_cron`, so an expression
that installs is one the scheduler can compute: 5 fields, valid for croniter, and with a
previous and a next occurrence within `HORIZON_YEARS` of now. February 31st (`0 0 31 2 *`), or a
fifth Monday of a month that never has one, has none and is refused; February 29th (every 4 to 8
years) is accepted.

`check_time_zone` is the one check of a time zone name (plugin.json's `time_zone`, a config's
`--time-zone`, and the scheduler for a zone written into the database by hand): an IANA name
that zoneinfo knows, not one that depends on the host (`localtime`, `posixrules`, `Factory`).
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime
from functools import cache
from typing import Any

from croniter import croniter
from croniter.croniter import CroniterError

HORIZON_YEARS = 10
MAX_TIME_ZONE_CHARS = 64
_HOST_ZONES = frozenset({"localtime", "posixrules", "Factory"})  # not IANA names of a place


class CronError(ValueError):
    """Not a usable cron expression; the message says why, in one line."""


def check_cron(expression: Any, now: datetime | None = None) -> str:
    """`expression` if it is a usable 5-field cron expression; CronError otherwise."""
    if not isinstance(expression, str):
        raise CronError("must be a cron expression string")
    if len(expression.split()) != 5:
        raise CronError(
            f"'{expression}' must have exactly 5 fields (minute hour day month weekday)"
        )
    try:
        valid = croniter.is_valid(expression)
    except Exception:  # croniter raises more than it documents on odd input
        valid = False
    if not valid:
        raise CronError(f"'{expression}' is not valid cron")
    start = now or datetime.now(UTC)
    for direction in ("after", "before"):
        try:
            it = croniter(expression, start, max_years_between_matches=HORIZON_YEARS)
            it.get_next(datetime) if direction == "after" else it.get_prev(datetime)
        except (CroniterError, ValueError, OverflowError):
            raise CronError(
                f"'{expression}' has no slot within {HORIZON_YEARS} years {direction} now"
            ) from None
    return expression


class TimeZoneError(ValueError):
    """Not a usable time zone name; the message says why, in one line."""


@cache
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - _HOST_ZONES


def check_time_zone(name: Any) -> str:
    """`name` if it is an IANA time zone name zoneinfo can load (e.g. 'Europe/Berlin', 'UTC');
    TimeZoneError otherwise."""
    if not isinstance(name, str) or not name:
        raise TimeZoneError("must be an IANA time zone name such as 'Europe/Berlin' or 'UTC'")
    shown = name if len(name) <= MAX_TIME_ZONE_CHARS else name[:MAX_TIME_ZONE_CHARS] + "…"
    if len(name) > MAX_TIME_ZONE_CHARS or name not in _known_zones():
        raise TimeZoneError(
            f"'{shown}' is not an IANA time zone name (such as 'Europe/Berlin' or 'UTC')"
        )
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise TimeZoneError(f"'{shown}': its time zone data cannot be loaded") from None
    return name
