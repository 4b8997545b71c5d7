"""Unit tests of runtime.schedule: pure decisions driven by a fake clock (no database)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone

import pytest
from croniter import croniter
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from runtime.schedule import (
    MISSED_LIST_CAP,
    ClaimDecision,
    ScheduleError,
    SchedulePolicy,
    TaskState,
    count_slots,
    decide_claim,
    decide_completion,
    first_slot_at_or_after,
    initialise,
    slot_after,
    slot_at_or_before,
    slots_between,
    spread_offset,
    start_lag,
    validate_cron,
)

POLICY = SchedulePolicy()
MINUTE, HOUR, DAY = "* * * * *", "0 * * * *", "0 0 * * *"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now

    def set(self, t: datetime) -> datetime:
        self.now = max(self.now, t)
        return self.now


def apply_claim(task: TaskState, c: ClaimDecision) -> None:
    task.next_slot = c.next_slot
    task.attempt = c.attempt
    task.active = c.run_slot is not None


def apply_completion(task: TaskState, run_slot: datetime, attempt: int, ok: bool, now: datetime):
    d = decide_completion(task, run_slot, attempt, ok, now, POLICY)
    task.next_slot, task.attempt, task.active = d.next_slot, d.attempt, False
    return d


# --------------------------------------------------------------------------- cron arithmetic


def test_slots_minute_hour_day_and_quarter() -> None:
    t = at("2024-05-06 12:34:56")
    assert slot_at_or_before(MINUTE, t) == at("2024-05-06 12:34")
    assert slot_at_or_before(HOUR, t) == at("2024-05-06 12:00")
    assert slot_at_or_before(DAY, t) == at("2024-05-06 00:00")
    assert slot_at_or_before("*/15 * * * *", t) == at("2024-05-06 12:30")
    assert slot_after("*/15 * * * *", at("2024-05-06 12:30")) == at("2024-05-06 12:45")
    assert slot_after(HOUR, at("2024-05-06 12:00")) == at("2024-05-06 13:00")
    assert slot_after(DAY, t) == at("2024-05-07 00:00")
    # a time exactly on a slot is its own slot
    assert slot_at_or_before(HOUR, at("2024-05-06 12:00")) == at("2024-05-06 12:00")
    assert first_slot_at_or_after(HOUR, at("2024-05-06 12:00")) == at("2024-05-06 12:00")
    assert first_slot_at_or_after(HOUR, at("2024-05-06 12:00:01")) == at("2024-05-06 13:00")


def test_slots_between_and_count() -> None:
    got = slots_between("*/15 * * * *", at("2024-05-06 12:00"), at("2024-05-06 13:00"))
    assert got == [
        at("2024-05-06 12:00"),
        at("2024-05-06 12:15"),
        at("2024-05-06 12:30"),
        at("2024-05-06 12:45"),
    ]
    assert slots_between(HOUR, at("2024-05-06 12:00"), at("2024-05-07 12:00"), limit=3) == [
        at("2024-05-06 12:00"),
        at("2024-05-06 13:00"),
        at("2024-05-06 14:00"),
    ]
    assert count_slots(HOUR, at("2024-05-06 12:00"), at("2024-05-07 12:00")) == 24
    assert count_slots(HOUR, at("2024-05-06 12:00:01"), at("2024-05-07 12:00:01")) == 24
    assert count_slots(MINUTE, at("2024-01-01 00:00"), at("2025-01-01 00:00")) == 366 * 24 * 60
    assert count_slots(HOUR, at("2024-05-07 12:00"), at("2024-05-06 12:00")) == 0
    # a non-periodic expression goes through croniter
    weekdays = "30 9 * * 1-5"
    assert count_slots(weekdays, at("2024-05-06 00:00"), at("2024-05-13 00:00")) == 5
    assert slot_after(weekdays, at("2024-05-10 09:30")) == at("2024-05-13 09:30")
    assert slot_at_or_before(weekdays, at("2024-05-12 23:00")) == at("2024-05-10 09:30")
    assert slot_at_or_before(weekdays, at("2024-05-10 09:30")) == at("2024-05-10 09:30")


PERIODIC = [
    "* * * * *",
    "*/15 * * * *",
    "*/7 * * * *",
    "5 * * * *",
    "0 0 * * *",
    "45 13 * * *",
    "10 */6 * * *",
]


@settings(max_examples=200, deadline=None)
@given(
    expr=st.sampled_from(PERIODIC + ["30 9 * * 1-5", "0 12 1 * *", "*/10 8-17 * * *"]),
    seconds=st.integers(min_value=0, max_value=60 * 365 * 24 * 3600),
    micro=st.integers(min_value=0, max_value=999_999),
)
def test_arithmetic_matches_croniter(expr: str, seconds: int, micro: int) -> None:
    t = at("1990-01-01 00:00") + timedelta(seconds=seconds, microseconds=micro)
    minute = t.replace(second=0, microsecond=0)
    expected_prev = (
        minute if croniter.match(expr, minute) else croniter(expr, minute).get_prev(datetime)
    )
    assert slot_at_or_before(expr, t) == expected_prev
    assert slot_after(expr, t) == croniter(expr, t).get_next(datetime)


def test_utc_only_no_dst() -> None:
    # Europe and the US change clocks on these nights; UTC slots stay exactly an hour apart.
    for day in ("2024-03-31", "2024-10-27", "2024-03-10", "2024-11-03"):
        got = slots_between(HOUR, at(f"{day} 00:00"), at(f"{day} 06:00"))
        assert len(got) == 6
        assert all(b - a == timedelta(hours=1) for a, b in zip(got, got[1:], strict=False))
    # an aware non-UTC time means the same instant
    paris_summer = timezone(timedelta(hours=2))
    assert slot_at_or_before(DAY, datetime(2024, 7, 1, 1, 30, tzinfo=paris_summer)) == at(
        "2024-06-30 00:00"
    )
    with pytest.raises(ScheduleError, match="timezone-aware"):
        slot_at_or_before(HOUR, datetime(2024, 7, 1, 1, 30))


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * * *", "exactly 5 fields"),
        ("61 * * * *", "not valid"),
        ("* * * * * *", "exactly 5 fields"),
    ],
)
def test_bad_cron_is_one_line_error(expr: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message) as info:
        validate_cron(expr)
    assert "\n" not in str(info.value)


def test_impossible_cron_is_a_schedule_error() -> None:
    with pytest.raises(ScheduleError, match="no slot"):
        slot_after("0 0 30 2 *", at("2024-01-01 00:00"))


# --------------------------------------------------------------------------- spread, lag, policy


def test_spread_offsets_deterministic_and_in_range() -> None:
    for cadence, spread in POLICY.spread_s.items():
        offsets = [spread_offset(f"config-{i}/task", cadence, POLICY) for i in range(2000)]
        assert offsets == [spread_offset(f"config-{i}/task", cadence, POLICY) for i in range(2000)]
        assert all(0 <= o < spread for o in offsets)
        assert len(set(offsets)) > 1990  # a hash, not a constant
        assert min(offsets) < spread * 0.05 and max(offsets) > spread * 0.95  # it spreads
    assert (
        spread_offset("x", "minute", SchedulePolicy.from_overrides(spread_s={"minute": 0})) == 0.0
    )
    assert spread_offset("x", "hour", POLICY) == spread_offset("x", "day", POLICY)  # same spread


def test_start_lag() -> None:
    assert start_lag(at("2024-01-01 12:00"), 30.0, at("2024-01-01 12:00:31.5")) == pytest.approx(
        1.5
    )
    assert start_lag(at("2024-01-01 12:00"), 30.0, at("2024-01-01 12:00:10")) == pytest.approx(
        -20.0
    )


def test_policy_overrides_and_errors() -> None:
    p = SchedulePolicy.from_overrides(
        spread_s={"hour": 120},
        window={"hour": 3600.0, "day": timedelta(days=1)},
        max_attempts={"day": 3},
    )
    assert p.spread_s["hour"] == 120.0 and p.spread_s["minute"] == 50.0
    assert p.window["hour"] == timedelta(hours=1) and p.window["day"] == timedelta(days=1)
    assert p.window["cron"] == timedelta(days=2)
    assert p.max_attempts == {"minute": 1, "hour": 5, "day": 3, "cron": 5}
    assert [POLICY.backoff_s(a) for a in range(1, 9)] == [10, 20, 40, 80, 160, 320, 640, 900]
    assert POLICY.backoff_s(10_000) == 900
    for kwargs, message in [
        ({"spread_s": {"hour": -1}}, "spread for hour"),
        ({"window": {"hour": 0}}, "window for hour"),
        ({"window": {"minute": 60}}, "no catch-up window"),
        ({"max_attempts": {"hour": 0}}, "max attempts for hour"),
        ({"max_attempts": {"minute": 3}}, "never retried"),
        ({"max_attempts": {"weekly": 3}}, "unknown cadence"),
        ({"retry_base_s": 0}, "retry base"),
        ({"retry_base_s": 100, "retry_max_s": 50}, "retry maximum"),
    ]:
        with pytest.raises(ScheduleError, match=message):
            SchedulePolicy.from_overrides(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- initialise


def test_initialise_first_slot_at_or_after_now_no_backfill() -> None:
    task = TaskState(1, "hour", HOUR, 120.0, None)
    init = initialise(task, at("2024-05-06 12:00:01"))
    assert init.next_slot == at("2024-05-06 13:00")
    assert init.next_due_at == at("2024-05-06 13:02")
    assert initialise(task, at("2024-05-06 13:00")).next_slot == at("2024-05-06 13:00")
    # a claim on an uninitialised task initialises it and runs nothing before its time
    c = decide_claim(task, at("2024-05-06 12:59"), POLICY)
    assert (
        c.run_slot is None
        and c.next_slot == at("2024-05-06 13:00")
        and c.next_due_at == at("2024-05-06 13:02")
    )


# --------------------------------------------------------------------------- minute


def test_minute_coalesces_after_gap() -> None:
    task = TaskState(1, "minute", MINUTE, 20.0, at("2024-05-06 12:00"))
    c = decide_claim(task, at("2024-05-06 12:07:25"), POLICY)
    assert c.run_slot == at("2024-05-06 12:07")  # the latest slot wins
    assert c.coalesced == 7  # 12:00 .. 12:06 folded into it
    assert (c.attempt, c.backfilled, c.missed_slots, c.missed_count) == (1, False, [], 0)
    assert c.next_slot == at("2024-05-06 12:08")
    assert c.next_due_at == at("2024-05-06 12:08:20")


def test_minute_on_time_runs_its_slot_without_coalescing() -> None:
    task = TaskState(1, "minute", MINUTE, 20.0, at("2024-05-06 12:00"))
    c = decide_claim(task, at("2024-05-06 12:00:20"), POLICY)
    assert (c.run_slot, c.coalesced, c.next_slot) == (
        at("2024-05-06 12:00"),
        0,
        at("2024-05-06 12:01"),
    )


def test_minute_nothing_due_keeps_pointer() -> None:
    task = TaskState(1, "minute", MINUTE, 20.0, at("2024-05-06 12:01"))
    c = decide_claim(task, at("2024-05-06 12:00:50"), POLICY)
    assert c.run_slot is None and c.coalesced == 0
    assert (c.next_slot, c.next_due_at) == (at("2024-05-06 12:01"), at("2024-05-06 12:01:20"))


def test_minute_no_run_while_active() -> None:
    task = TaskState(1, "minute", MINUTE, 20.0, at("2024-05-06 12:01"), active=True)
    c = decide_claim(task, at("2024-05-06 12:03:30"), POLICY)
    assert c.run_slot is None
    assert c.coalesced == 3  # 12:01, 12:02, 12:03 folded into nothing
    assert c.next_slot == at("2024-05-06 12:04")  # first slot after now: no pile-up
    assert c.next_due_at == at("2024-05-06 12:04:20")
    # active but nothing due yet: nothing counted, pointer kept
    quiet = decide_claim(
        TaskState(1, "minute", MINUTE, 20.0, at("2024-05-06 12:04"), active=True),
        at("2024-05-06 12:03:59"),
        POLICY,
    )
    assert (quiet.run_slot, quiet.coalesced, quiet.next_slot) == (None, 0, at("2024-05-06 12:04"))


def test_minute_completion_never_retries() -> None:
    task = TaskState(1, "minute", MINUTE, 20.0, at("2024-05-06 12:01"), active=True)
    d = decide_completion(task, at("2024-05-06 12:00"), 1, False, at("2024-05-06 12:00:50"), POLICY)
    assert (d.retry, d.final_failure, d.attempt) == (False, True, 1)
    assert (d.next_slot, d.next_due_at) == (at("2024-05-06 12:01"), at("2024-05-06 12:01:20"))
    # a run that ends late: the pointer stays, due now (the next claim coalesces)
    d = decide_completion(task, at("2024-05-06 12:00"), 1, True, at("2024-05-06 12:05:10"), POLICY)
    assert (d.next_slot, d.next_due_at, d.final_failure) == (
        at("2024-05-06 12:01"),
        at("2024-05-06 12:05:10"),
        False,
    )


def test_minute_simulation_one_run_at_a_time() -> None:
    clock = FakeClock(at("2024-05-06 12:00"))
    task = TaskState(1, "minute", MINUTE, 7.0, None)
    init = initialise(task, clock.now)
    task.next_slot, due = init.next_slot, init.next_due_at
    runs, coalesced = [], 0
    durations = iter([5, 150, 5, 5, 400, 5] + [5] * 100)
    while clock.now < at("2024-05-06 12:30"):
        now = clock.set(due)
        c = decide_claim(task, now, POLICY)
        apply_claim(task, c)
        coalesced += c.coalesced
        due = c.next_due_at
        if c.run_slot is not None:
            runs.append(c.run_slot)
            end = clock.advance(seconds=next(durations))
            d = apply_completion(task, c.run_slot, c.attempt, True, end)
            due = d.next_due_at
    assert runs == sorted(set(runs))  # each slot at most once, in order
    slots = count_slots(MINUTE, at("2024-05-06 12:00"), task.next_slot)
    assert len(runs) + coalesced == slots  # every slot either ran or was counted
    # the 150 s run (12:01:07 -> 12:03:37) folds 12:02 into the 12:03 run; the 400 s run
    # (12:06:07 -> 12:12:47) folds 12:07 .. 12:11 into the 12:12 run
    assert coalesced == 1 + 5
    assert at("2024-05-06 12:02") not in runs and at("2024-05-06 12:03") in runs


# --------------------------------------------------------------------------- hour / day / cron


def drive(task: TaskState, clock: FakeClock, due: datetime, until: datetime, outcomes=None):
    """Run a task on the fake clock until `until`; return the claims made (slot, decision)."""
    outcomes = outcomes or {}
    claims: list[ClaimDecision] = []
    while True:
        now = clock.set(due)
        if now >= until:
            return claims
        c = decide_claim(task, now, POLICY)
        apply_claim(task, c)
        due = c.next_due_at
        if c.run_slot is None:
            assert due > now
            continue
        claims.append(c)
        end = clock.advance(seconds=30)
        ok = outcomes.get((c.run_slot, c.attempt), True)
        due = apply_completion(task, c.run_slot, c.attempt, ok, end).next_due_at


def test_hourly_backfill_after_five_hours_down() -> None:
    offset = 90.0
    task = TaskState(1, "hour", HOUR, offset, at("2024-05-06 10:00"))  # 09:00 done, then down
    clock = FakeClock(at("2024-05-06 15:10"))  # the node comes back 5 h later
    claims = drive(task, clock, clock.now, at("2024-05-06 17:00"))
    slots = [c.run_slot for c in claims]
    assert slots == [at(f"2024-05-06 {h}:00") for h in range(10, 17)]  # oldest first, each once
    assert [c.backfilled for c in claims] == [True] * 5 + [False, False]  # 15:00 is the newest
    assert all(c.missed_count == 0 and c.attempt == 1 for c in claims)
    # one at a time: each starts right after the previous one ended (30 s runs)
    assert claims[1].next_due_at - claims[0].next_due_at == timedelta(seconds=30)
    # after catching up, 16:00 runs at its offset
    assert claims[-1].next_due_at == at("2024-05-06 16:01:30")


def test_hourly_slot_waits_for_its_offset() -> None:
    task = TaskState(1, "hour", HOUR, 200.0, at("2024-05-06 10:00"))
    c = decide_claim(task, at("2024-05-06 10:03:19"), POLICY)
    assert c.run_slot is None and c.next_due_at == at("2024-05-06 10:03:20")
    c = decide_claim(task, at("2024-05-06 10:03:20"), POLICY)
    assert c.run_slot == at("2024-05-06 10:00") and not c.backfilled
    assert c.next_slot == at("2024-05-06 10:00")  # the pointer stays while in flight
    # in flight: nothing else runs
    task.active = True
    assert decide_claim(task, at("2024-05-06 12:00"), POLICY).run_slot is None


def test_hourly_missed_beyond_window_exact_counts() -> None:
    task = TaskState(1, "hour", HOUR, 0.0, at("2024-05-06 00:00"))
    now = at("2024-05-09 00:30")  # window: 2 days -> slots before 2024-05-07 00:30 are missed
    c = decide_claim(task, now, POLICY)
    assert c.missed_count == 25 and len(c.missed_slots) == 25
    assert c.missed_slots[0] == at("2024-05-06 00:00") and c.missed_slots[-1] == at(
        "2024-05-07 00:00"
    )
    assert c.run_slot == at("2024-05-07 01:00") and c.backfilled
    assert c.next_slot == at("2024-05-07 01:00")
    # then every slot inside the window runs: 01:00 on day 7 .. 00:00 on day 9
    clock = FakeClock(now)
    apply_claim(task, c)
    apply_completion(task, c.run_slot, 1, True, clock.advance(seconds=30))
    claims = drive(task, clock, clock.now, at("2024-05-09 00:59"))
    assert [x.run_slot for x in claims] == slots_between(
        HOUR, at("2024-05-07 02:00"), at("2024-05-09 00:01")
    )
    assert all(x.missed_count == 0 for x in claims)


def test_backfilled_once_the_next_slot_is_due() -> None:
    task = TaskState(1, "hour", HOUR, 0.0, at("2024-05-06 10:00"))
    assert not decide_claim(task, at("2024-05-06 10:59:59"), POLICY).backfilled
    assert decide_claim(task, at("2024-05-06 11:00"), POLICY).backfilled


def test_backfill_does_not_wait_for_the_offset_again() -> None:
    # an every-minute cron with an offset longer than its period (a large configured spread)
    task = TaskState(1, "cron", MINUTE, 100.0, at("2024-05-06 12:00"))
    c = decide_claim(task, at("2024-05-06 12:01:10"), POLICY)  # 12:00 + 100 s is still ahead
    assert (c.run_slot, c.backfilled) == (at("2024-05-06 12:00"), True)


def test_retried_slot_falling_out_of_window_is_missed_and_attempts_reset() -> None:
    task = TaskState(1, "hour", HOUR, 0.0, at("2024-05-06 10:00"), attempt=3)
    c = decide_claim(task, at("2024-05-08 10:30"), POLICY)
    assert c.missed_slots == [at("2024-05-06 10:00")]
    assert (c.run_slot, c.attempt, c.backfilled) == (at("2024-05-06 11:00"), 1, True)
    # inside the window the retry goes on with its attempt number
    c = decide_claim(task, at("2024-05-06 10:20"), POLICY)
    assert (c.run_slot, c.attempt, c.missed_count) == (at("2024-05-06 10:00"), 3, 0)


def test_missed_list_is_capped_but_counted() -> None:
    policy = SchedulePolicy.from_overrides(window={"cron": 3600})
    task = TaskState(1, "cron", MINUTE, 0.0, at("2023-01-01 00:00"))
    c = decide_claim(task, at("2024-01-01 00:00"), policy)
    assert len(c.missed_slots) == MISSED_LIST_CAP
    assert c.missed_count == 365 * 24 * 60 - 60  # everything older than the last hour
    assert c.run_slot == at("2023-12-31 23:00")


def test_retries_with_backoff_then_final_failure() -> None:
    slot = at("2024-05-06 10:00")
    task = TaskState(1, "hour", HOUR, 0.0, slot)
    now = at("2024-05-06 10:00")
    delays = []
    for attempt in range(1, 6):
        c = decide_claim(task, now, POLICY)
        assert (c.run_slot, c.attempt) == (slot, attempt)
        apply_claim(task, c)
        now += timedelta(seconds=5)
        d = apply_completion(task, slot, attempt, False, now)
        if attempt < 5:
            assert (
                d.retry and not d.final_failure and d.next_slot == slot and d.attempt == attempt + 1
            )
            delays.append((d.next_due_at - now).total_seconds())
            now = d.next_due_at
        else:
            assert d.final_failure and not d.retry
            assert (d.next_slot, d.attempt) == (at("2024-05-06 11:00"), 1)
            assert d.next_due_at == at("2024-05-06 11:00")
    assert delays == [10, 20, 40, 80]


def test_retry_then_success_advances_and_resets_attempt() -> None:
    task = TaskState(1, "day", DAY, 60.0, at("2024-05-06 00:00"), attempt=3)
    d = decide_completion(task, at("2024-05-06 00:00"), 3, True, at("2024-05-06 00:05"), POLICY)
    assert (d.next_slot, d.attempt, d.retry, d.final_failure) == (
        at("2024-05-07 00:00"),
        1,
        False,
        False,
    )
    assert d.next_due_at == at("2024-05-07 00:01")


def test_stale_completion_is_ignored() -> None:
    task = TaskState(1, "hour", HOUR, 0.0, at("2024-05-06 12:00"))
    d = decide_completion(task, at("2024-05-06 10:00"), 1, False, at("2024-05-06 12:30"), POLICY)
    assert d.stale and not d.retry and not d.final_failure
    assert d.next_slot == at("2024-05-06 12:00")


def test_daily_task() -> None:
    task = TaskState(1, "day", DAY, 250.0, None)
    init = initialise(task, at("2024-03-31 01:30"))
    assert (init.next_slot, init.next_due_at) == (at("2024-04-01 00:00"), at("2024-04-01 00:04:10"))
    task.next_slot = init.next_slot
    # back just before 04-10: 7-day window, so 04-01 and 04-02 are missed, 04-03 .. 04-09 are
    # backfilled one after the other, and 04-10 (not late) waits for its offset
    clock = FakeClock(at("2024-04-09 23:58"))
    claims = drive(task, clock, clock.now, at("2024-04-11 00:00"))
    assert claims[0].missed_slots == [at("2024-04-01 00:00"), at("2024-04-02 00:00")]
    assert claims[0].missed_count == 2
    assert [c.run_slot for c in claims] == slots_between(DAY, at("2024-04-03"), at("2024-04-11"))
    assert [c.backfilled for c in claims] == [True] * 7 + [False]
    assert claims[-1].next_due_at == at("2024-04-10 00:04:10")  # claimed at slot + offset
    # down again until 04-20: the pointer (04-11) .. 04-13 are beyond the window
    clock = FakeClock(at("2024-04-20 00:02"))
    claims = drive(task, clock, clock.now, at("2024-04-20 01:00"))
    assert claims[0].missed_slots == slots_between(DAY, at("2024-04-11"), at("2024-04-14"))
    assert [c.run_slot for c in claims] == slots_between(DAY, at("2024-04-14"), at("2024-04-21"))


def test_cron_every_fifteen_minutes() -> None:
    expr = "*/15 * * * *"
    task = TaskState(1, "cron", expr, 40.0, at("2024-05-06 12:00"))
    clock = FakeClock(at("2024-05-06 13:05"))  # down for an hour: 12:00 .. 13:00 owed
    claims = drive(task, clock, clock.now, at("2024-05-06 13:31"))
    assert [c.run_slot for c in claims] == slots_between(
        expr, at("2024-05-06 12:00"), at("2024-05-06 13:31")
    )
    assert [c.backfilled for c in claims] == [True] * 4 + [False] * 3
    assert task.next_slot == at("2024-05-06 13:45")
    # a cron failure is retried like an hourly one (5 attempts)
    failing = {(at("2024-05-06 13:45"), a): False for a in range(1, 6)}
    claims = drive(task, clock, clock.now, at("2024-05-06 14:01"), failing)
    assert [(c.run_slot, c.attempt) for c in claims] == [
        (at("2024-05-06 13:45"), a) for a in range(1, 6)
    ] + [(at("2024-05-06 14:00"), 1)]


# --------------------------------------------------------------------------- property: never skip


outcome_st = st.tuples(st.sampled_from(["ok", "fail", "fail", "lost"]), st.integers(1, 5000))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    segments=st.lists(
        st.tuples(
            st.floats(0.1, 30.0), st.sampled_from([0.0, 0.5, 3.0, 20.0, 47.0, 49.0, 80.0, 200.0])
        ),
        min_size=1,
        max_size=6,
    ),
    outcomes=st.lists(outcome_st, max_size=200),
    offset=st.floats(0.0, 299.0),
    window_h=st.sampled_from([2, 48]),
)
def test_property_hourly_never_skips_inside_window(segments, outcomes, offset, window_h) -> None:
    window = timedelta(hours=window_h)
    policy = SchedulePolicy.from_overrides(window={"hour": window})
    start = at("2024-03-30 22:17:13")
    task = TaskState(1, "hour", HOUR, offset, None)
    init = initialise(task, start)
    task.next_slot, due = init.next_slot, init.next_due_at
    first_slot = init.next_slot

    # the node's up periods, then a calm stretch where every run succeeds quickly
    intervals, t = [], start
    for up_h, down_h in segments:
        intervals.append((t, t + timedelta(hours=up_h)))
        t += timedelta(hours=up_h + down_h)
    calm_start = t
    intervals.append((t, t + timedelta(days=3)))
    outcome_it = iter(outcomes)

    terminal: dict[datetime, list[str]] = defaultdict(list)
    attempts: dict[datetime, int] = defaultdict(int)
    run_order: list[datetime] = []
    pending = None  # (slot, attempt) of a run lost when the node went down

    def complete(slot: datetime, attempt: int, ok: bool, now: datetime) -> datetime:
        d = decide_completion(task, slot, attempt, ok, now, policy)
        assert not d.stale
        if ok:
            terminal[slot].append("ok")
        elif d.final_failure:
            assert attempt == policy.max_attempts["hour"]
            terminal[slot].append("final")
        else:
            assert d.retry and d.next_slot == slot and d.attempt == attempt + 1
            assert d.next_due_at == now + timedelta(seconds=policy.backoff_s(attempt))
        task.next_slot, task.attempt, task.active = d.next_slot, d.attempt, False
        return d.next_due_at

    for up_from, up_to in intervals:
        now = up_from
        if pending is not None:  # the run died with its node: a failure, reported on restart
            due = complete(*pending, False, now)
            pending = None
        while True:
            now = max(now, due)
            if now >= up_to:
                break
            c = decide_claim(task, now, policy)
            assert c.missed_count == len(c.missed_slots)
            for s in c.missed_slots:
                assert s < now - window  # only slots beyond the window are missed
                terminal[s].append("missed")
            task.next_slot, task.attempt = c.next_slot, c.attempt
            due = c.next_due_at
            if c.run_slot is None:
                assert due > now
                continue
            slot = c.run_slot
            assert slot >= now - window  # nothing runs beyond the window
            assert now >= slot + timedelta(seconds=offset) or c.attempt > 1
            assert c.backfilled == (slot_after(HOUR, slot) <= now)
            assert not run_order or slot >= run_order[-1]  # oldest first
            run_order.append(slot)
            attempts[slot] += 1
            task.active = True
            kind, seconds = next(outcome_it, ("ok", 30)) if now < calm_start else ("ok", 30)
            end = now + timedelta(seconds=seconds)
            if kind == "lost" or end >= up_to:
                if end >= up_to:
                    pending = (slot, c.attempt)
                    break
                end += timedelta(seconds=90)  # the lease expires, the run is released as failed
            due = complete(slot, c.attempt, kind == "ok", end)
            now = end

    # every slot from the first one to the pointer has exactly one outcome: ok, final or missed
    kinds = {k for v in terminal.values() for k in v}
    for kind in sorted(kinds):
        event(f"outcome {kind}")
    if any(attempts[s] > 1 for s in attempts):
        event("retried")
    finished = slots_between(HOUR, first_slot, task.next_slot)
    for s in finished:
        assert len(terminal[s]) == 1, (s, terminal[s])
        assert attempts[s] <= policy.max_attempts["hour"]
        if terminal[s] == ["missed"]:
            continue
        assert attempts[s] >= 1
    assert set(terminal) <= set(finished)
    # and the task caught up during the calm stretch
    assert task.next_slot > intervals[-1][1] - timedelta(hours=2)
    # slots that ran were never also missed; counted totals add up
    assert sum(len(v) for v in terminal.values()) == len(finished)


@settings(max_examples=100, deadline=None)
@given(
    gaps=st.lists(st.integers(0, 600), min_size=1, max_size=40),
    durations=st.lists(st.integers(1, 400), min_size=1, max_size=40),
    offset=st.floats(0.0, 49.9),
)
def test_property_minute_every_slot_ran_or_coalesced(gaps, durations, offset) -> None:
    start = at("2024-05-06 12:00:00")
    task = TaskState(1, "minute", MINUTE, offset, None)
    init = initialise(task, start)
    task.next_slot, due = init.next_slot, init.next_due_at
    now = start
    ran: list[datetime] = []
    coalesced = 0
    in_flight_until: datetime | None = None
    for gap, duration in zip(gaps, durations, strict=False):
        now = max(now + timedelta(seconds=gap), due)
        if in_flight_until is not None and now >= in_flight_until:
            d = decide_completion(task, ran[-1], 1, True, in_flight_until, POLICY)
            task.next_slot, task.active, due = d.next_slot, False, d.next_due_at
            in_flight_until = None
            now = max(now, due)
        c = decide_claim(task, now, POLICY)
        coalesced += c.coalesced
        task.next_slot, due = c.next_slot, c.next_due_at
        assert c.next_slot > slot_at_or_before(MINUTE, now) or c.run_slot is None
        if c.run_slot is not None:
            assert not task.active  # never two at once
            assert not ran or c.run_slot > ran[-1]
            assert c.run_slot == slot_at_or_before(MINUTE, now)  # the latest slot wins
            ran.append(c.run_slot)
            task.active = True
            in_flight_until = now + timedelta(seconds=duration)
    assert len(ran) + coalesced == count_slots(MINUTE, init.next_slot, task.next_slot)
