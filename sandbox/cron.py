"""Cron expressions: the one check of what this project accepts as a schedule.

Install (`plugin.json`'s `schedules`) and the scheduler both use `check_cron`, so an expression
that installs is one the scheduler can compute: 5 fields, valid for croniter, and with a
previous and a next occurrence within `HORIZON_YEARS` of now. February 31st (`0 0 31 2 *`), or a
fifth Monday of a month that never has one, has none and is refused; February 29th (every 4 to 8
years) is accepted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from croniter import croniter
from croniter.croniter import CroniterError

HORIZON_YEARS = 10


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
