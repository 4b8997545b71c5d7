"""Pure scheduling decisions (docs/scheduling.md): cron -> slots, spread offsets, coalescing, catch-up.

No I/O, no database, no wall clock: every function that needs the time is given `now`.
All datetimes are timezone-aware UTC (naive ones are refused with a ScheduleError); slots are
UTC instants. Cron expressions are 5-field and evaluated in UTC, or — for daily and cron tasks
whose config names a time zone — on the wall clock of that IANA zone, with the daylight-saving
rules of docs/plugins.md#time-zones (see "Time zones" below).

The bookkeeping this module decides on is one row per task (see table `tasks`):
`next_slot` is the oldest slot not yet finished (None: not initialised), `next_due_at` is when a
node should look at the task again. Decisions taken here:

* **Slots are nominal times; offsets move only dispatch.** A task's offset is a deterministic
  fraction (sha256 of its key) of its cadence's spread; a slot is *due* at `slot + offset`, and a
  run's start lag is `started_at - (slot + offset)` (negative when a coalesced minute run starts
  before its own offset: the latest slot wins, it does not wait).
* **Initialisation** points a new task at the first slot >= now: no backfill of slots from
  before the task existed.
* **minute** tasks coalesce. A claim runs the latest slot <= now if it is not older than the
  pointer, counts the slots it jumps over as `coalesced`, and moves the pointer past it at once.
  With a run still in flight nothing runs: the due slots are counted as coalesced and the pointer
  jumps past now, so there is never a second run nor a pile-up. No retries, ever; a minute
  failure is final.
* **hour / day / cron** tasks never skip a slot inside the catch-up window. A claim first marks
  slots older than `now - window` as missed (listed up to MISSED_LIST_CAP, all counted), then
  runs the pointer's slot when it is due (`now >= slot + offset`), late (a newer slot is already
  due: `backfilled`, it runs at once, without waiting for the offset again) or a retry. The
  pointer stays on that slot while the run is in flight; the completion moves it. Success or a
  final failure advances the pointer by one slot with `due = max(pointer + offset, now)`, so
  owed slots chain one at a time, oldest first. A failure with attempts left keeps the pointer
  and is due again after an exponential backoff. A lost run (its node died) is a failure.
* A completion for a slot the pointer has already moved past (a stale or duplicate report) is
  ignored: the pointer never moves backwards and nothing is retried (`stale` is set).
* Common cron shapes (`* * * * *`, `*/N * * * *`, `M * * * *`, `M */N * * *`, `M H * * *`) are
  computed with integer arithmetic (same results as croniter, checked by the tests), so counting
  a year of missed minute slots is O(1); any other expression goes through croniter.

Time zones. In a zone, the wall-clock times an expression matches are mapped to UTC instants:

* a wall time that exists once is that instant;
* a *fixed-time* expression (neither its minute nor its hour field starts with `*`, as in ISC
  cron) runs a wall time of a repeated interval (clocks go back) once, at its first occurrence,
  and a wall time of a skipped interval (clocks go forward) once, at the transition instant
  (several skipped wall times, or one skipped and the first after the gap, are one slot);
* any other expression (`0 * * * *`, `*/15 2 * * *`) runs at every real instant whose wall time
  matches: twice for a repeated wall time, never for a skipped one.

So a slot is still an instant, slots strictly increase, a daily slot occurs once per local day,
and the pointer rules above (catch-up, retries, missed) are the same in every zone. The zone's
offsets are read hour by hour (`_segments`): two transitions less than an hour apart (none in the
time zone database since 1970) would be seen as one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from croniter.croniter import CroniterError

from sandbox.cron import HORIZON_YEARS, CronError, TimeZoneError, check_cron, check_time_zone
from sandbox.manifest import Cadence

CADENCES = tuple(Cadence)
RETRYING_CADENCES = tuple(c for c in Cadence if c.retries)
MISSED_LIST_CAP = 10_000
COUNT_EXACT_UP_TO = 2_000  # slots counted one by one for a non-periodic cron (see count_slots)

DEFAULT_SPREAD_S: dict[str, float] = {"minute": 50.0, "hour": 300.0, "day": 300.0, "cron": 60.0}
DEFAULT_WINDOW: dict[str, timedelta] = {
    "hour": timedelta(days=2),
    "day": timedelta(days=7),
    "cron": timedelta(days=2),
}
DEFAULT_MAX_ATTEMPTS: dict[str, int] = {"minute": 1, "hour": 5, "day": 10, "cron": 5}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)
_TICK = timedelta(microseconds=1)
_PROBE = timedelta(hours=1)  # how often a zone's offset is read (see the module's docstring)
_CHUNK = timedelta(days=1)  # the longest stretch of one offset handled at once
_LOOK_BACK = timedelta(hours=26)  # how far back the transition before a start is looked for
_HORIZON = timedelta(days=366 * HORIZON_YEARS + 1)


class ScheduleError(ValueError):
    """Bad scheduling input: an invalid cron expression, cadence, policy value or naive time."""


# --------------------------------------------------------------------------- policy


def _check_cadence(cadence: str) -> Cadence:
    try:
        return Cadence(cadence)
    except ValueError:
        raise ScheduleError(f"unknown cadence {cadence!r} (known: {', '.join(CADENCES)})") from None


@dataclass(frozen=True)
class SchedulePolicy:
    """Tunable scheduling constants. Build with `SchedulePolicy()` or `from_overrides(...)`."""

    spread_s: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SPREAD_S))
    window: dict[str, timedelta] = field(default_factory=lambda: dict(DEFAULT_WINDOW))
    max_attempts: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MAX_ATTEMPTS))
    retry_base_s: float = 10.0
    retry_max_s: float = 900.0

    def __post_init__(self) -> None:
        for cadence in CADENCES:
            spread = self.spread_s.get(cadence)
            if spread is None or not math.isfinite(spread) or spread < 0:
                raise ScheduleError(
                    f"spread for {cadence} must be a number >= 0 seconds, got {spread!r}"
                )
            attempts = self.max_attempts.get(cadence)
            if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
                raise ScheduleError(
                    f"max attempts for {cadence} must be a whole number >= 1, got {attempts!r}"
                )
        for cadence in RETRYING_CADENCES:
            window = self.window.get(cadence)
            if not isinstance(window, timedelta) or window <= timedelta(0):
                raise ScheduleError(
                    f"catch-up window for {cadence} must be a positive duration, got {window!r}"
                )
        if self.max_attempts["minute"] != 1:
            raise ScheduleError("minute tasks are never retried: max attempts for minute must be 1")
        if not (math.isfinite(self.retry_base_s) and self.retry_base_s > 0):
            raise ScheduleError(f"retry base must be > 0 seconds, got {self.retry_base_s!r}")
        if not (math.isfinite(self.retry_max_s) and self.retry_max_s >= self.retry_base_s):
            raise ScheduleError(
                f"retry maximum must be >= the retry base ({self.retry_base_s} s), got {self.retry_max_s!r}"
            )

    @classmethod
    def from_overrides(
        cls,
        *,
        spread_s: dict[str, float] | None = None,
        window: dict[str, timedelta | float] | None = None,
        max_attempts: dict[str, int] | None = None,
        retry_base_s: float | None = None,
        retry_max_s: float | None = None,
    ) -> SchedulePolicy:
        """The defaults with some values replaced. Windows may be given as timedeltas or seconds."""
        spreads = dict(DEFAULT_SPREAD_S)
        for cadence, value in (spread_s or {}).items():
            spreads[_check_cadence(cadence)] = float(value)
        windows = dict(DEFAULT_WINDOW)
        for cadence, span in (window or {}).items():
            if _check_cadence(cadence) == "minute":
                raise ScheduleError("minute tasks coalesce; they have no catch-up window")
            windows[cadence] = (
                span if isinstance(span, timedelta) else timedelta(seconds=float(span))
            )
        attempts = dict(DEFAULT_MAX_ATTEMPTS)
        for cadence, count in (max_attempts or {}).items():
            attempts[_check_cadence(cadence)] = count
        return cls(
            spread_s=spreads,
            window=windows,
            max_attempts=attempts,
            retry_base_s=10.0 if retry_base_s is None else float(retry_base_s),
            retry_max_s=900.0 if retry_max_s is None else float(retry_max_s),
        )

    def backoff_s(self, attempt: int) -> float:
        """Delay before retrying after failed attempt number `attempt` (1-based)."""
        exponent = min(max(attempt, 1) - 1, 60)
        return float(min(self.retry_base_s * 2.0**exponent, self.retry_max_s))


# --------------------------------------------------------------------------- time and offsets


def _utc(t: datetime, what: str = "time") -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ScheduleError(f"{what} must be timezone-aware (UTC), got naive {t.isoformat()}")
    return t.astimezone(UTC)


def spread_offset(task_key: str, cadence: str, policy: SchedulePolicy) -> float:
    """Deterministic dispatch offset in [0, spread) seconds, from sha256 of the task's key."""
    spread = policy.spread_s[_check_cadence(cadence)]
    if spread <= 0:
        return 0.0
    digest = hashlib.sha256(task_key.encode("utf-8")).digest()
    fraction = (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)  # in [0, 1)
    return min(fraction * spread, math.nextafter(spread, 0.0))


def start_lag(slot: datetime, offset_s: float, started_at: datetime) -> float:
    """Seconds between a run's start and its dispatch time (slot + offset)."""
    return (_utc(started_at, "started_at") - _utc(slot, "slot")).total_seconds() - offset_s


# --------------------------------------------------------------------------- cron arithmetic


@dataclass(frozen=True)
class _Periodic:
    """Slots at phase + k * period (since the epoch): the arithmetic fast path."""

    period: timedelta
    phase: timedelta

    def at_or_before(self, t: datetime) -> datetime:
        k = (t - _EPOCH - self.phase) // self.period
        return _EPOCH + self.phase + k * self.period

    def index_at_or_after(self, t: datetime) -> int:
        return -((_EPOCH + self.phase - t) // self.period)  # ceil((t - epoch - phase) / period)


def _int_field(text: str, low: int, high: int) -> int | None:
    if text.isdigit() and low <= int(text) <= high:
        return int(text)
    return None


def _step_field(text: str, divides: int) -> int | None:
    """N for '*' (1) or '*/N' when N divides `divides`, else None."""
    if text == "*":
        return 1
    if text.startswith("*/") and text[2:].isdigit():
        step = int(text[2:])
        if 0 < step <= divides and divides % step == 0:
            return step
    return None


@lru_cache(maxsize=4096)
def _compile(cron: str) -> _Periodic | None:
    """Validate a cron expression; return its periodic form when it has one, else None."""
    try:
        check_cron(cron)
    except CronError as exc:
        raise ScheduleError(f"cron expression {exc}") from None
    minute, hour, dom, month, dow = cron.split()
    if (dom, month, dow) != ("*", "*", "*"):
        return None
    if hour == "*":
        step = _step_field(minute, 60)
        if step is not None:
            return _Periodic(timedelta(minutes=step), timedelta(0))
        m = _int_field(minute, 0, 59)
        if m is not None:
            return _Periodic(timedelta(hours=1), timedelta(minutes=m))
        return None
    m = _int_field(minute, 0, 59)
    if m is None:
        return None
    h = _int_field(hour, 0, 23)
    if h is not None:
        return _Periodic(timedelta(days=1), timedelta(hours=h, minutes=m))
    hstep = _step_field(hour, 24)
    if hstep is not None:
        return _Periodic(timedelta(hours=hstep), timedelta(minutes=m))
    return None


def validate_cron(cron: str) -> str:
    """Return `cron` if it is a usable 5-field expression; raise ScheduleError otherwise."""
    _compile(cron)
    return cron


def _croniter_step(cron: str, start: datetime, forward: bool) -> datetime:
    try:
        it = croniter(cron, start)
        result: Any = it.get_next(datetime) if forward else it.get_prev(datetime)
    except CroniterError as exc:
        raise ScheduleError(
            f"cron expression {cron!r} has no slot near {start.isoformat()}: {exc}"
        ) from None
    return _utc(result)


def _utc_at_or_before(cron: str, t: datetime) -> datetime:
    t = _utc(t)
    periodic = _compile(cron)
    if periodic is not None:
        return periodic.at_or_before(t)
    minute_start = t.replace(second=0, microsecond=0)
    # croniter's get_prev is strictly before its start; slots are whole minutes.
    return _croniter_step(cron, minute_start + _MINUTE, forward=False)


def _utc_after(cron: str, slot: datetime) -> datetime:
    slot = _utc(slot)
    periodic = _compile(cron)
    if periodic is not None:
        return periodic.at_or_before(slot) + periodic.period
    return _croniter_step(cron, slot, forward=True)


def _utc_first_at_or_after(cron: str, t: datetime) -> datetime:
    t = _utc(t)
    s = _utc_at_or_before(cron, t)
    return s if s == t else _utc_after(cron, s)


def _utc_between(
    cron: str, start_inclusive: datetime, end_exclusive: datetime, limit: int | None = None
) -> list[datetime]:
    end = _utc(end_exclusive)
    out: list[datetime] = []
    s = _utc_first_at_or_after(cron, start_inclusive)
    periodic = _compile(cron)
    while s < end and (limit is None or len(out) < limit):
        out.append(s)
        s = s + periodic.period if periodic is not None else _utc_after(cron, s)
    return out


def _utc_count(cron: str, start_inclusive: datetime, end_exclusive: datetime) -> int:
    start, end = _utc(start_inclusive), _utc(end_exclusive)
    if end <= start:
        return 0
    periodic = _compile(cron)
    if periodic is not None:
        return periodic.index_at_or_after(end) - periodic.index_at_or_after(start)
    return _extrapolated(_utc_between(cron, start, end, limit=COUNT_EXACT_UP_TO + 1), end)


# --------------------------------------------------------------------------- time zones


@lru_cache(maxsize=1024)
def _zone(name: str | None) -> ZoneInfo | None:
    """The zone of a task (None or 'UTC': plain UTC arithmetic); ScheduleError if unknown."""
    if name is None or name == "UTC":
        return None
    try:
        return ZoneInfo(check_time_zone(name))
    except TimeZoneError as exc:
        raise ScheduleError(f"time zone {exc}") from None


def validate_time_zone(name: str | None) -> str | None:
    """Return `name` if the scheduler can use it (None: UTC); raise ScheduleError otherwise."""
    _zone(name)
    return name


def is_fixed_time(cron: str) -> bool:
    """Whether `cron` runs at fixed wall times: neither its minute nor its hour field starts with
    `*` (ISC cron's rule). In a zone, such an expression runs a repeated wall time once and a
    skipped one at the transition; any other runs at every real instant whose wall time
    matches."""
    minute, hour = cron.split()[:2]
    return not (minute.startswith("*") or hour.startswith("*"))


def _offset(zone: ZoneInfo, u: datetime) -> timedelta:
    offset = u.astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always gives one
    return offset


def _transition(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The instant in (before, after] where the offset changes, `before` and `after` having
    different offsets and one transition between them (transitions are whole seconds)."""
    first = _offset(zone, before)
    lo = math.floor(before.timestamp())
    hi = math.ceil(after.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(zone, datetime.fromtimestamp(mid, UTC)) == first:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, UTC)


def _segments(
    zone: ZoneInfo, start: datetime, end: datetime
) -> Iterator[tuple[datetime, datetime, timedelta]]:
    """[start, end) as consecutive stretches (from, to, offset) of one UTC offset, each at most
    _CHUNK long; the offset is read every _PROBE."""
    s = start
    while s < end:
        offset = _offset(zone, s)
        limit = min(s + _CHUNK, end)
        probe = s
        while probe < limit:
            nxt = min(probe + _PROBE, limit)
            if _offset(zone, nxt) != offset:
                limit = _transition(zone, probe, nxt)
                break
            probe = nxt
        yield s, limit, offset
        s = limit


def _walls_shown_before(zone: ZoneInfo, start: datetime) -> datetime:
    """The end of the wall times the clock showed before `start` (wall times are written as UTC
    datetimes): `start`'s own wall time, unless clocks went back less than the repeated interval
    before `start` (then later), or `start` is a transition (then the wall time just before)."""
    offset = _offset(zone, start)
    probe = start
    while probe > start - _LOOK_BACK:
        earlier = probe - _PROBE
        before = _offset(zone, earlier)
        if before != offset:
            t = _transition(zone, earlier, probe)
            if t == start:
                return t + before
            return max(start + offset, t + before)
        probe = earlier
    return start + offset


class _Walls:
    """The wall times an expression matches, asked for range after range; remembers the last
    match found so that a sparse expression is not searched again for every range."""

    def __init__(self, cron: str) -> None:
        self.cron = cron
        self.periodic = _compile(cron)
        self.asked: datetime | None = None
        self.found: datetime | None = None

    def first_at_or_after(self, lo: datetime) -> datetime:
        if self.asked is not None and self.found is not None and self.asked <= lo <= self.found:
            return self.found
        self.asked, self.found = lo, _utc_first_at_or_after(self.cron, lo)
        return self.found

    def between(self, lo: datetime, hi: datetime) -> Iterator[datetime]:
        if lo >= hi:
            return
        w = self.first_at_or_after(lo)
        while w < hi:
            yield w
            w = w + self.periodic.period if self.periodic is not None else _utc_after(self.cron, w)


def _zoned(cron: str, zone: ZoneInfo, start: datetime, end: datetime) -> Iterator[datetime]:
    """The slots in [start, end), oldest first (the module's docstring, "Time zones")."""
    fixed = is_fixed_time(cron)
    walls = _Walls(cron)
    shown = _walls_shown_before(zone, start)  # the wall times before this one were shown
    for s, e, offset in _segments(zone, start, end):
        # clocks went forward at s: a fixed-time expression's skipped wall times run once, at s
        at_transition = (
            fixed
            and shown < s + offset
            and next(walls.between(shown, s + offset), None) is not None
        )
        if at_transition:
            yield s
        lo = max(shown, s + offset) if fixed else s + offset  # fixed: a repeated one runs once
        for w in walls.between(lo, e + offset):
            if not (at_transition and w - offset == s):
                yield w - offset
        shown = max(shown, e + offset)


def _zoned_first(cron: str, zone: ZoneInfo, t: datetime) -> datetime:
    for slot in _zoned(cron, zone, t, t + _HORIZON):
        return slot
    raise ScheduleError(
        f"cron expression {cron!r} has no slot in {zone.key} within {HORIZON_YEARS} years "
        f"after {t.isoformat()}"
    )


def _zoned_last(cron: str, zone: ZoneInfo, t: datetime) -> datetime:
    span = timedelta(hours=2)
    while True:
        last = None
        for slot in _zoned(cron, zone, t - span, t + _TICK):
            last = slot
        if last is not None:
            return last
        if span > _HORIZON:
            raise ScheduleError(
                f"cron expression {cron!r} has no slot in {zone.key} within {HORIZON_YEARS} "
                f"years before {t.isoformat()}"
            )
        span *= 4


# --------------------------------------------------------------------------- slots


def _zone_of(cron: str, zone: str | None) -> ZoneInfo | None:
    """The zone to compute `cron`'s slots in (None: plain UTC). With a zone the expression is
    compiled first (the UTC paths check it themselves), so a bad one fails alike either way."""
    z = _zone(zone)
    if z is not None:
        _compile(cron)
    return z


def slot_at_or_before(cron: str, t: datetime, zone: str | None = None) -> datetime:
    """The latest slot <= t (in time zone `zone`, None: UTC)."""
    z = _zone_of(cron, zone)
    return _utc_at_or_before(cron, t) if z is None else _zoned_last(cron, z, _utc(t))


def slot_after(cron: str, slot: datetime, zone: str | None = None) -> datetime:
    """The first slot strictly after `slot` (which need not be a slot itself)."""
    z = _zone_of(cron, zone)
    return _utc_after(cron, slot) if z is None else _zoned_first(cron, z, _utc(slot) + _TICK)


def first_slot_at_or_after(cron: str, t: datetime, zone: str | None = None) -> datetime:
    """The earliest slot >= t."""
    z = _zone_of(cron, zone)
    return _utc_first_at_or_after(cron, t) if z is None else _zoned_first(cron, z, _utc(t))


def slots_between(
    cron: str,
    start_inclusive: datetime,
    end_exclusive: datetime,
    limit: int | None = None,
    zone: str | None = None,
) -> list[datetime]:
    """Slots in [start_inclusive, end_exclusive), oldest first, at most `limit` of them."""
    z = _zone_of(cron, zone)
    if z is None:
        return _utc_between(cron, start_inclusive, end_exclusive, limit)
    start, end = _utc(start_inclusive), _utc(end_exclusive)
    if end <= start:
        return []
    return list(islice(_zoned(cron, z, start, end), limit))


def count_slots(
    cron: str, start_inclusive: datetime, end_exclusive: datetime, zone: str | None = None
) -> int:
    """The number of slots in [start_inclusive, end_exclusive): exact and O(1) for periodic
    expressions in UTC; otherwise exact up to COUNT_EXACT_UP_TO slots, then extrapolated from
    those (so that a pointer years behind, e.g. a row written by hand, costs one bounded step,
    never a stalled tick)."""
    if _zone(zone) is None:
        return _utc_count(cron, start_inclusive, end_exclusive)
    start, end = _utc(start_inclusive), _utc(end_exclusive)
    if end <= start:
        return 0
    slots = slots_between(cron, start, end, COUNT_EXACT_UP_TO + 1, zone)
    return _extrapolated(slots, end)


def _extrapolated(slots: list[datetime], end: datetime) -> int:
    if len(slots) <= COUNT_EXACT_UP_TO:
        return len(slots)
    per_slot = (slots[-1] - slots[0]) / (len(slots) - 1)
    return len(slots) + int((end - slots[-1]) / per_slot)


# --------------------------------------------------------------------------- decisions


@dataclass
class TaskState:
    """What the decisions need of one `tasks` row. `active`: a run of it is in flight."""

    id: int
    cadence: str
    cron: str
    offset_s: float
    next_slot: datetime | None
    attempt: int = 1
    active: bool = False
    time_zone: str | None = None  # the config's effective zone (None: UTC)

    @property
    def zone(self) -> str | None:
        """The zone its slots are computed in: daily and cron tasks only (Cadence.zoned)."""
        return self.time_zone if _check_cadence(self.cadence).zoned else None


@dataclass
class Initialised:
    next_slot: datetime
    next_due_at: datetime


def _due(slot: datetime, offset_s: float) -> datetime:
    return slot + timedelta(seconds=offset_s)


def initialise(task: TaskState, now: datetime) -> Initialised:
    """Point a new task at the first slot >= now (no backfill before it existed)."""
    _check_cadence(task.cadence)
    slot = first_slot_at_or_after(task.cron, now, task.zone)
    return Initialised(next_slot=slot, next_due_at=_due(slot, task.offset_s))


@dataclass
class ClaimDecision:
    run_slot: datetime | None  # the slot to run now, or None
    attempt: int
    backfilled: bool  # a newer slot is already due: this run fills a slot late
    missed_slots: list[datetime]  # beyond the catch-up window: record as missed, never run (capped)
    coalesced: int  # minute: slots folded into this run (or into nothing, when active)
    next_slot: datetime  # the pointer to store
    next_due_at: datetime  # when to look at the task next
    missed_count: int = 0  # all missed slots, also those beyond the list's cap


def decide_claim(task: TaskState, now: datetime, policy: SchedulePolicy) -> ClaimDecision:
    """What to do with a task that came due, `now` being the moment its run would start."""
    _check_cadence(task.cadence)
    now = _utc(now, "now")
    pointer = _utc(task.next_slot, "next_slot") if task.next_slot is not None else None
    if pointer is None:
        pointer = initialise(task, now).next_slot
    if task.cadence == "minute":
        return _claim_minute(task, pointer, now)
    return _claim_catch_up(task, pointer, now, policy)


def _nothing(task: TaskState, pointer: datetime, due: datetime, **extra: Any) -> ClaimDecision:
    values: dict[str, Any] = {
        "run_slot": None,
        "attempt": task.attempt,
        "backfilled": False,
        "missed_slots": [],
        "coalesced": 0,
        "next_slot": pointer,
        "next_due_at": due,
    }
    values.update(extra)
    return ClaimDecision(**values)


def _claim_minute(task: TaskState, pointer: datetime, now: datetime) -> ClaimDecision:
    latest = slot_at_or_before(task.cron, now, task.zone)
    if latest < pointer:  # nothing due yet
        return _nothing(task, pointer, _due(pointer, task.offset_s), attempt=1)
    after = slot_after(task.cron, latest, task.zone)
    if task.active:  # never two runs at once, never a pile-up: fold every due slot into nothing
        return _nothing(
            task,
            after,
            _due(after, task.offset_s),
            attempt=1,
            coalesced=count_slots(task.cron, pointer, after, task.zone),
        )
    return ClaimDecision(
        run_slot=latest,
        attempt=1,
        backfilled=False,
        missed_slots=[],
        coalesced=count_slots(task.cron, pointer, latest, task.zone),
        next_slot=after,
        next_due_at=_due(after, task.offset_s),
    )


def _claim_catch_up(
    task: TaskState, pointer: datetime, now: datetime, policy: SchedulePolicy
) -> ClaimDecision:
    if task.active:  # the in-flight run holds the pointer; its completion moves it
        return _nothing(task, pointer, max(_due(pointer, task.offset_s), now))
    attempt = max(task.attempt, 1)
    window_start = now - policy.window[task.cadence]
    missed: list[datetime] = []
    missed_count = 0
    if pointer < window_start:
        first_inside = first_slot_at_or_after(task.cron, window_start, task.zone)
        missed = slots_between(
            task.cron, pointer, first_inside, limit=MISSED_LIST_CAP, zone=task.zone
        )
        missed_count = count_slots(task.cron, pointer, first_inside, task.zone)
        pointer = first_inside
        attempt = 1  # a slot being retried that fell out of the window is missed, not retried
    backfilled = slot_after(task.cron, pointer, task.zone) <= now
    if now >= _due(pointer, task.offset_s) or backfilled or attempt > 1:
        return ClaimDecision(
            run_slot=pointer,
            attempt=attempt,
            backfilled=backfilled,
            missed_slots=missed,
            coalesced=0,
            next_slot=pointer,
            next_due_at=now,  # meaningless while in flight: the completion sets it
            missed_count=missed_count,
        )
    return _nothing(
        task,
        pointer,
        _due(pointer, task.offset_s),
        attempt=attempt,
        missed_slots=missed,
        missed_count=missed_count,
    )


@dataclass
class CompletionDecision:
    next_slot: datetime
    next_due_at: datetime
    attempt: int  # the attempt number the pointer's slot runs with next
    final_failure: bool  # the run failed and its slot will not be run again
    retry: bool  # the same slot runs again at next_due_at
    stale: bool = False  # the pointer was already past run_slot: nothing changed


def decide_completion(
    task: TaskState,
    run_slot: datetime,
    attempt: int,
    succeeded: bool,
    now: datetime,
    policy: SchedulePolicy,
) -> CompletionDecision:
    """Where the pointer goes when a run of `run_slot` ends (a lost run is a failure)."""
    _check_cadence(task.cadence)
    now = _utc(now, "now")
    run_slot = _utc(run_slot, "run_slot")
    pointer = _utc(task.next_slot, "next_slot") if task.next_slot is not None else None
    after = slot_after(task.cron, run_slot, task.zone)

    if task.cadence == "minute":  # the claim already moved the pointer; no retries
        new_pointer = after if pointer is None else max(pointer, after)
        return CompletionDecision(
            next_slot=new_pointer,
            next_due_at=max(_due(new_pointer, task.offset_s), now),
            attempt=1,
            final_failure=not succeeded,
            retry=False,
        )

    if pointer is not None and pointer > run_slot:  # stale or duplicate report
        return CompletionDecision(
            next_slot=pointer,
            next_due_at=max(_due(pointer, task.offset_s), now),
            attempt=task.attempt,
            final_failure=False,
            retry=False,
            stale=True,
        )
    if not succeeded and attempt < policy.max_attempts[task.cadence]:
        return CompletionDecision(
            next_slot=run_slot,
            next_due_at=now + timedelta(seconds=policy.backoff_s(attempt)),
            attempt=attempt + 1,
            final_failure=False,
            retry=True,
        )
    return CompletionDecision(
        next_slot=after,
        next_due_at=max(_due(after, task.offset_s), now),
        attempt=1,
        final_failure=not succeeded,
        retry=False,
    )
