"""Slots in a time zone (runtime/schedule.py, docs/plugins.md#time-zones): exact slot lists over
daylight-saving nights, and a property test against a brute-force scan of every minute's wall
clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime import schedule
from runtime.cli.run_cmd import nominal_slot
from runtime.schedule import (
    ScheduleError,
    SchedulePolicy,
    TaskState,
    count_slots,
    decide_claim,
    decide_completion,
    first_slot_at_or_after,
    is_fixed_time,
    slot_after,
    slot_at_or_before,
    slots_between,
)
from sandbox.cron import TimeZoneError, check_time_zone
from sandbox.manifest import Cadence, ManifestError, load_plugin, parse_manifest

BERLIN = "Europe/Berlin"
PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
MINUTE = timedelta(minutes=1)
ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # 30-minute daylight saving
    "Pacific/Chatham",  # +12:45 / +13:45, transitions at 02:45 local
    "Asia/Kolkata",  # +05:30, no daylight saving
    "UTC",
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def hhmm(slots: list[datetime]) -> list[str]:
    return [s.strftime("%d %H:%M") for s in slots]


# -- Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC); 2026-10-25 03:00 CEST ->
#    02:00 CET (01:00 UTC) -----------------------------------------------------------------------

SPRING = (utc(2026, 3, 28, 21), utc(2026, 3, 29, 6))
FALL = (utc(2026, 10, 24, 20), utc(2026, 10, 25, 6))


def test_a_fixed_time_in_the_skipped_hour_runs_once_at_the_transition() -> None:
    assert hhmm(slots_between("30 2 * * *", *SPRING, zone=BERLIN)) == ["29 01:00"]
    # several skipped times, and the skipped 02:00 with 03:00 after the gap, are one slot
    assert hhmm(slots_between("0,30 2 * * *", *SPRING, zone=BERLIN)) == ["29 01:00"]
    assert hhmm(slots_between("0 2,3 * * *", *SPRING, zone=BERLIN)) == ["29 01:00"]
    # the days around it run at 02:30 local (CET, then CEST)
    week = slots_between("30 2 * * *", utc(2026, 3, 27), utc(2026, 3, 31), zone=BERLIN)
    assert hhmm(week) == ["27 01:30", "28 01:30", "29 01:00", "30 00:30"]


def test_a_fixed_time_in_the_repeated_hour_runs_once_at_its_first_occurrence() -> None:
    assert hhmm(slots_between("30 2 * * *", *FALL, zone=BERLIN)) == ["25 00:30"]
    assert hhmm(slots_between("0 2,3 * * *", *FALL, zone=BERLIN)) == ["25 00:00", "25 02:00"]
    after_first = slot_after("30 2 * * *", utc(2026, 10, 25, 0, 30), BERLIN)
    assert after_first == utc(2026, 10, 26, 1, 30)  # not the second 02:30 (01:30 UTC)
    assert slot_at_or_before("30 2 * * *", utc(2026, 10, 25, 1, 45), BERLIN) == utc(
        2026, 10, 25, 0, 30
    )


def test_a_window_that_starts_exactly_at_a_transition() -> None:
    spring, fall = utc(2026, 3, 29, 1), utc(2026, 10, 25, 1)
    assert slots_between("30 2 * * *", spring, spring + MINUTE, zone=BERLIN) == [spring]
    assert first_slot_at_or_after("30 2 * * *", spring, BERLIN) == spring
    # at the fall-back instant 02:30 comes again, but it already ran at its first occurrence
    assert first_slot_at_or_after("30 2 * * *", fall, BERLIN) == utc(2026, 10, 26, 1, 30)
    assert first_slot_at_or_after("30 * * * *", fall, BERLIN) == utc(2026, 10, 25, 1, 30)
    assert is_fixed_time("30 2 * * *") and is_fixed_time("0 0 * * 1-5")
    assert not is_fixed_time("*/5 2 * * *") and not is_fixed_time("0 */2 * * *")


def test_hourly_expressions_run_once_per_real_hour() -> None:
    spring = slots_between("0 * * * *", *SPRING, zone=BERLIN)
    fall = slots_between("0 * * * *", *FALL, zone=BERLIN)
    for slots, (start, end) in ((spring, SPRING), (fall, FALL)):
        assert slots == [start + timedelta(hours=h) for h in range(9 if slots is spring else 10)]
        assert slots[-1] < end
    # a wildcard minute in a fixed hour: every real instant showing it (twice when repeated)
    assert slots_between("*/30 2 * * *", *SPRING, zone=BERLIN) == []
    assert hhmm(slots_between("*/30 2 * * *", *FALL, zone=BERLIN)) == [
        "25 00:00",
        "25 00:30",
        "25 01:00",
        "25 01:30",
    ]


def test_daily_tasks_run_once_per_local_day_across_a_year() -> None:
    for zone in ZONES:
        slots = slots_between("0 0 * * *", utc(2026, 1, 1), utc(2027, 1, 1), zone=zone)
        local_days = [s.astimezone(ZoneInfo(zone)).date() for s in slots]
        assert len(set(local_days)) == len(local_days), zone
        assert len(slots) in (365, 366), zone
        assert all(s.astimezone(ZoneInfo(zone)).hour == 0 for s in slots), zone


def test_other_zones_have_their_own_nights() -> None:
    # New York 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC); 2026-11-01 02:00 EDT -> 01:00 EST
    ny = "America/New_York"
    assert slots_between("30 2 8 3 *", utc(2026, 3, 8), utc(2026, 3, 9), zone=ny) == [
        utc(2026, 3, 8, 7)
    ]
    assert slots_between("30 1 1 11 *", utc(2026, 11, 1), utc(2026, 11, 2), zone=ny) == [
        utc(2026, 11, 1, 5, 30)
    ]
    # Lord Howe 2026-10-04 02:00 -> 02:30 (+10:30 -> +11, at 15:30 UTC the day before)
    lh = "Australia/Lord_Howe"
    assert slots_between("15 2 4 10 *", utc(2026, 10, 3), utc(2026, 10, 5), zone=lh) == [
        utc(2026, 10, 3, 15, 30)
    ]
    # Chatham 2026-09-27 02:45 -> 03:45 (+12:45 -> +13:45, at 14:00 UTC the day before)
    ch = "Pacific/Chatham"
    assert slots_between("0 3 27 9 *", utc(2026, 9, 26), utc(2026, 9, 28), zone=ch) == [
        utc(2026, 9, 26, 14)
    ]
    # Kolkata: a fixed offset of +05:30
    assert slots_between("0 9 * * *", utc(2026, 6, 1), utc(2026, 6, 2), zone="Asia/Kolkata") == [
        utc(2026, 6, 1, 3, 30)
    ]


def test_no_zone_and_utc_are_the_utc_arithmetic() -> None:
    start, end = utc(2026, 3, 28), utc(2026, 3, 30)
    for cron in ("30 2 * * *", "*/7 * * * *", "0 0 * * 1-5"):
        expected = slots_between(cron, start, end)
        assert slots_between(cron, start, end, zone="UTC") == expected
        assert slots_between(cron, start, end, zone="Etc/UTC") == expected


def test_a_bad_zone_is_a_schedule_error_naming_it() -> None:
    with pytest.raises(ScheduleError, match="Mars/Base"):
        slot_after("0 0 * * *", utc(2026, 1, 1), "Mars/Base")
    task = TaskState(1, "day", "0 0 * * *", 0.0, None, time_zone="Mars/Base")
    with pytest.raises(ScheduleError, match="'Mars/Base' is not an IANA time zone"):
        decide_claim(task, utc(2026, 1, 1), SchedulePolicy())
    # minute and hourly tasks ignore the zone (every real minute and hour)
    hourly = TaskState(1, "hour", "0 * * * *", 0.0, None, time_zone="Mars/Base")
    assert decide_claim(hourly, utc(2026, 1, 1, 0, 30), SchedulePolicy()).next_slot == utc(
        2026, 1, 1, 1
    )


def test_time_zone_names_are_checked_in_one_place() -> None:
    assert check_time_zone("Europe/Berlin") == "Europe/Berlin"
    for bad in ("Mars/Base", "", "localtime", "../etc/passwd", "/etc/localtime", 3, "x" * 500):
        with pytest.raises(TimeZoneError):
            check_time_zone(bad)
    assert parse_manifest({"name": "p", "time_zone": BERLIN}).time_zone == BERLIN
    with pytest.raises(ManifestError, match="field 'time_zone': 'Europe/Berln' is not an IANA"):
        parse_manifest({"name": "p", "time_zone": "Europe/Berln"})
    assert [c for c in Cadence if c.zoned] == [Cadence.DAY, Cadence.CRON]


def test_catch_up_after_downtime_across_the_night_runs_each_slot_once() -> None:
    """A node down over the fall-back night: on its return the pointer chains through every
    owed slot of `30 2 * * *` and `0 * * * *` (cron cadence, Berlin), oldest first, once each."""
    policy = SchedulePolicy()
    for cron, first, expected in (
        ("30 2 * * *", utc(2026, 10, 24, 0, 30), 2),  # 24th, 25th (once, at 00:30 UTC)
        ("0 * * * *", utc(2026, 10, 24, 22), 6),  # every real hour until 03:00 UTC
    ):
        task = TaskState(1, "cron", cron, 0.0, first, time_zone=BERLIN)
        now = utc(2026, 10, 25, 3, 0, 30)
        ran: list[datetime] = []
        while True:
            d = decide_claim(task, now, policy)
            if d.run_slot is None:
                break
            ran.append(d.run_slot)
            task.next_slot, task.active = d.next_slot, True
            c = decide_completion(task, d.run_slot, d.attempt, True, now, policy)
            task.next_slot, task.active = c.next_slot, False
        assert len(ran) == len(set(ran)) == expected
        assert ran == slots_between(cron, first, now, zone=BERLIN)
        assert task.next_slot == first_slot_at_or_after(cron, now, BERLIN)


def test_counting_a_zoned_expression() -> None:
    start, end = utc(2026, 10, 24, 22), utc(2026, 10, 25, 22)
    assert count_slots("0 * * * *", start, end, BERLIN) == 24  # 25 local hours, 24 real ones
    assert count_slots("30 2 * * *", start, end, BERLIN) == 1
    assert count_slots("*/5 * * * *", utc(2026, 1, 1), utc(2027, 1, 1), BERLIN) > 100_000


# -- the property: the slot generator against a scan of every minute's wall clock --------------


def matcher(cron: str) -> Callable[[datetime], bool]:
    """Whether a wall time matches `cron`, from croniter's expanded fields (the day of month and
    the day of week are never both restricted in these tests, so every field must match)."""
    minutes, hours_, days, months, weekdays = (
        None if f == ["*"] else set(f) for f in croniter(cron).expanded
    )

    def match(w: datetime) -> bool:
        return (
            (minutes is None or w.minute in minutes)
            and (hours_ is None or w.hour in hours_)
            and (days is None or w.day in days)
            and (months is None or w.month in months)
            and (weekdays is None or w.isoweekday() % 7 in weekdays)
        )

    return match


def brute_force(cron: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """Minute by minute over [start, end) (whole minutes): a slot is an instant whose wall time
    matches, at its first occurrence for a fixed-time expression; and, for a fixed-time
    expression, the instant of a transition that skipped a matching wall time."""
    z = ZoneInfo(zone)
    minute, hour = cron.split()[:2]
    fixed = not (minute.startswith("*") or hour.startswith("*"))  # as ISC cron, written again
    matches = matcher(cron)
    out: list[datetime] = []
    u = start
    while u < end:
        local = u.astimezone(z)
        wall = local.replace(tzinfo=None)
        before = (u - MINUTE).astimezone(z).utcoffset()
        now = local.utcoffset()
        assert before is not None and now is not None
        slot = False
        if matches(wall):
            first = wall.replace(tzinfo=z, fold=0).astimezone(UTC) == u
            slot = first or not fixed
        if fixed and now > before:  # clocks went forward at u: the skipped wall times
            skipped = (u + before).replace(tzinfo=None)
            while skipped < (u + now).replace(tzinfo=None):
                slot = slot or matches(skipped)
                skipped += MINUTE
        if slot:
            out.append(u)
        u += MINUTE
    return out


def transitions(zone: str, year: int) -> list[datetime]:
    """The instants where `zone`'s offset changes in `year` (found day by day, then bisected)."""
    z = ZoneInfo(zone)
    found = []
    day = utc(year, 1, 1)
    while day.year == year:
        nxt = day + timedelta(days=1)
        if day.astimezone(z).utcoffset() != nxt.astimezone(z).utcoffset():
            found.append(schedule._transition(z, day, nxt))
        day = nxt
    return found


MINUTES = ("0", "30", "45", "15", "*", "*/15", "*/20", "0,30", "10-50/20")
HOURS = ("0", "1", "2", "3", "23", "*", "*/2", "1-3", "2,3", "*/3")
DAYS = ("* * *", "* * *", "* * 0", "* * 1-5", "*/2 * *", "1 * *")


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, str, datetime, datetime]:
    zone = draw(st.sampled_from(ZONES))
    year = draw(st.integers(1990, 2037))
    near = transitions(zone, year)
    minutes, hours_ = list(MINUTES), list(HOURS)
    if near and draw(st.integers(0, 3)) > 0:
        center = draw(st.sampled_from(near))
        # where the skipped or repeated wall times begin: offer them to the expression too
        z = ZoneInfo(zone)
        before, after = (
            (center - MINUTE).astimezone(z).utcoffset(),
            center.astimezone(z).utcoffset(),
        )
        assert before is not None and after is not None
        wall = center + min(before, after)
        later = (wall.minute + draw(st.integers(0, 59))) % 60
        minutes += [str(wall.minute), str(later), f"{wall.minute},{later}"] * 3
        hours_ += [str(wall.hour), f"{wall.hour},{(wall.hour + 1) % 24}"] * 3
    else:
        center = utc(year, 1, 1) + timedelta(days=draw(st.integers(0, 360)))
    cron = f"{draw(st.sampled_from(minutes))} {draw(st.sampled_from(hours_))} "
    cron += draw(st.sampled_from(DAYS))
    start = center - timedelta(minutes=draw(st.integers(0, 36 * 60)))
    length = timedelta(minutes=draw(st.integers(1, 48 * 60)))
    return cron, zone, start, start + length


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(cases())
def test_slots_match_a_minute_by_minute_scan_of_the_wall_clock(
    case: tuple[str, str, datetime, datetime],
) -> None:
    cron, zone, start, end = case
    expected = brute_force(cron, zone, start, end)
    assert slots_between(cron, start, end, zone=zone) == expected
    # the single-step functions agree with the list
    if expected:
        assert first_slot_at_or_after(cron, start, zone) == expected[0]
        assert slot_at_or_before(cron, end - MINUTE, zone) == expected[-1]
        for a, b in zip(expected, expected[1:], strict=False):
            assert slot_after(cron, a, zone) == b
    assert count_slots(cron, start, end, zone) == len(expected)


def test_the_property_test_can_fail() -> None:
    """The brute force sees what a wrong rule would do: croniter's own zoned walk runs a fixed
    time twice on the fall-back night. (And its matcher is croniter's.)"""
    wall = datetime(2026, 3, 2, 0, 0)
    for minute in range(0, 60 * 24 * 9, 7):
        w = wall + timedelta(minutes=minute)
        for cron in ("*/15 2 * * 1-5", "0 * */2 * *", "10-50/20 */3 * * 0", "45 2,3 1 * *"):
            assert matcher(cron)(w) == croniter.match(cron, w), (cron, w)
    z = ZoneInfo(BERLIN)
    it = croniter("30 2 * * *", FALL[0].astimezone(z))
    walked = [it.get_next(datetime).astimezone(UTC) for _ in range(2)]
    assert walked != brute_force("30 2 * * *", BERLIN, *FALL)
    assert brute_force("30 2 * * *", BERLIN, *FALL) == [utc(2026, 10, 25, 0, 30)]


def test_plugin_runtime_run_gives_the_slot_of_the_declared_zone() -> None:
    plugin = load_plugin(PLUGINS / "dst_night")
    assert plugin.manifest.time_zone == BERLIN
    at = utc(2026, 10, 25, 3)  # after the night: the one 02:30 was at 00:30 UTC
    assert nominal_slot(plugin, "half_past_two", at) == "2026-10-25T00:30:00Z"
    assert nominal_slot(plugin, "run_every_day", at) == "2026-10-24T22:00:00Z"
    assert nominal_slot(plugin, "run_every_hour", at) == "2026-10-25T03:00:00Z"
