"""Calendar and schedule (pure, no servers): holidays, early closes, DST, a whole year, missed slots."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.clock import calendar
from services.clock.schedule import (
    JobType,
    SkipReason,
    TickReason,
    UnknownJobType,
    all_slots_between,
    day_slots,
    next_slot_after,
    next_wakeup,
    parse_job_type,
    parse_tick_id,
    plan_due,
    previous_slot_at_or_before,
    tick_id,
)

NY = calendar.NEW_YORK


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def ny_times(job: JobType, day: date) -> list[time]:
    return [s.scheduled_at.astimezone(NY).time() for s in day_slots(day) if s.job_type is job]


def test_closed_days_have_no_slots() -> None:
    assert calendar.session(date(2026, 7, 3)) is None  # Independence Day observed
    assert calendar.session(date(2026, 12, 25)) is None
    assert calendar.session(date(2026, 7, 4)) is None  # Saturday
    assert day_slots(date(2026, 7, 3)) == []
    assert day_slots(date(2026, 12, 25)) == []
    # ...and the day before / after are normal full days
    assert ny_times(JobType.PORTFOLIO_SNAPSHOT, date(2026, 7, 2)) == [time(16, 5)]
    assert ny_times(JobType.PORTFOLIO_SNAPSHOT, date(2026, 12, 28)) == [time(16, 5)]


def test_full_day_slots() -> None:
    day = date(2026, 7, 2)
    strategy = ny_times(JobType.STRATEGY_EXECUTION, day)
    assert strategy[0] == time(9, 30) and strategy[-1] == time(15, 45) and len(strategy) == 26
    orders = ny_times(JobType.ORDER_STATUS_CHECK, day)
    assert orders[0] == time(9, 30) and orders[-1] == time(16, 0) and len(orders) == 391
    for job in (JobType.POSITION_SYNC, JobType.PRICE_UPDATE):
        times = ny_times(job, day)
        assert times[0] == time(9, 30) and times[-1] == time(16, 0) and len(times) == 79
    alerts = ny_times(JobType.ALERT_PRICE_CHECK, day)
    assert alerts[-1] == time(15, 55) and len(alerts) == 78
    # July is EDT: 09:30 New York = 13:30 UTC
    assert day_slots(day)[0].scheduled_at == utc(2026, 7, 2, 13, 30)


@pytest.mark.parametrize("day", [date(2026, 11, 27), date(2026, 12, 24)])
def test_early_close(day: date) -> None:
    sess = calendar.session(day)
    assert sess is not None and sess.early_close
    assert sess.close_ny.time() == time(13, 0)
    assert ny_times(JobType.PORTFOLIO_SNAPSHOT, day) == [time(13, 5)]
    assert ny_times(JobType.STRATEGY_EXECUTION, day)[-1] == time(12, 45)
    assert ny_times(JobType.ORDER_STATUS_CHECK, day)[-1] == time(13, 0)
    assert ny_times(JobType.ALERT_PRICE_CHECK, day)[-1] == time(12, 55)
    assert ny_times(JobType.PRICE_UPDATE, day)[-1] == time(13, 0)
    # EST in late November/December: 13:05 New York = 18:05 UTC
    snapshot = next(s for s in day_slots(day) if s.job_type is JobType.PORTFOLIO_SNAPSHOT)
    assert snapshot.scheduled_at == datetime.combine(day, time(18, 5), UTC)


@pytest.mark.parametrize(
    ("day", "open_utc", "close_utc"),
    [
        (date(2026, 3, 6), time(14, 30), time(21, 0)),  # last Friday of EST
        (date(2026, 3, 9), time(13, 30), time(20, 0)),  # first Monday of EDT
        (date(2026, 10, 30), time(13, 30), time(20, 0)),  # last Friday of EDT
        (date(2026, 11, 2), time(14, 30), time(21, 0)),  # first Monday of EST
    ],
)
def test_dst_switches(day: date, open_utc: time, close_utc: time) -> None:
    slots = day_slots(day)
    assert slots[0].scheduled_at.astimezone(NY).time() == time(9, 30)
    assert slots[0].scheduled_at.time() == open_utc
    snapshot = next(s for s in slots if s.job_type is JobType.PORTFOLIO_SNAPSHOT)
    assert snapshot.scheduled_at.astimezone(NY).time() == time(16, 5)
    assert snapshot.scheduled_at.time() == (datetime.combine(day, close_utc) + timedelta(minutes=5)).time()


def test_whole_year_counts() -> None:
    sessions = calendar.sessions_between(date(2026, 1, 1), date(2026, 12, 31))
    assert len(sessions) == 251
    assert [s.day for s in sessions if s.early_close] == [date(2026, 11, 27), date(2026, 12, 24)]
    start = datetime(2026, 1, 1, tzinfo=NY).astimezone(UTC)
    end = datetime(2027, 1, 1, tzinfo=NY).astimezone(UTC)
    counts = Counter(s.job_type for s in all_slots_between(start, end))
    full, early = 249, 2
    assert counts == {
        JobType.STRATEGY_EXECUTION: full * 26 + early * 14,
        JobType.ORDER_STATUS_CHECK: full * 391 + early * 211,
        JobType.POSITION_SYNC: full * 79 + early * 43,
        JobType.PRICE_UPDATE: full * 79 + early * 43,
        JobType.ALERT_PRICE_CHECK: full * 78 + early * 42,
        JobType.PORTFOLIO_SNAPSHOT: 251,
    }
    # per-day listing agrees with the range listing
    assert sum(len(day_slots(s.day)) for s in sessions) == sum(counts.values())


def test_calendar_beyond_one_year_ahead() -> None:
    # exchange-calendars' default range ends about a year after today; we build explicit ranges.
    assert calendar.session(date(2031, 12, 25)) is None
    sess = calendar.session(date(2031, 12, 24))
    assert sess is not None and sess.early_close


@settings(max_examples=150, deadline=None)
@given(st.dates(min_value=date(2024, 1, 1), max_value=date(2030, 12, 31)))
def test_slots_inside_session_increasing_unique(day: date) -> None:
    slots = day_slots(day)
    sess = calendar.session(day)
    if sess is None:
        assert slots == []
        return
    ids = [s.tick_id for s in slots]
    assert len(ids) == len(set(ids))
    for job in JobType:
        times = [s.scheduled_at for s in slots if s.job_type is job]
        assert times == sorted(set(times)), "strictly increasing"
        assert times, f"{job} has at least one slot on a trading day"
        for t in times:
            assert t.tzinfo is not None
            if job is JobType.PORTFOLIO_SNAPSHOT:
                assert t == sess.close + timedelta(minutes=5)
            elif job in (JobType.STRATEGY_EXECUTION, JobType.ALERT_PRICE_CHECK):
                assert sess.open <= t < sess.close
            else:
                assert sess.open <= t <= sess.close
            assert parse_tick_id(tick_id(job, t)) == (job, t)
        assert times[0] == (sess.open if job is not JobType.PORTFOLIO_SNAPSHOT else times[0])


@settings(max_examples=100, deadline=None)
@given(
    st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)),
    st.sampled_from(list(JobType)),
)
def test_next_and_previous_slot(instant: datetime, job: JobType) -> None:
    nxt = next_slot_after(job, instant)
    assert nxt > instant
    # nothing of this job lies strictly between instant and nxt
    assert [s.scheduled_at for s in all_slots_between(instant, nxt, (job,))] == [nxt]
    prev = previous_slot_at_or_before(job, instant)
    assert prev is not None and prev <= instant
    assert next_slot_after(job, prev) == nxt
    assert next_wakeup(instant) <= nxt


def test_tick_id_format() -> None:
    t = datetime(2026, 3, 9, 9, 30, tzinfo=NY)
    assert tick_id(JobType.STRATEGY_EXECUTION, t) == "strategy_execution@2026-03-09T13:30:00Z"
    with pytest.raises(UnknownJobType, match="unknown job type 'nope'"):
        parse_job_type("nope")
    with pytest.raises(ValueError):
        parse_tick_id("strategy_execution-2026")


# --------------------------------------------------------------------------------- missed slots policy

DAY = date(2026, 7, 2)  # EDT: 09:30 NY = 13:30 UTC, close 20:00 UTC


def test_plan_fresh_slot_fires_once() -> None:
    now = utc(2026, 7, 2, 14, 0, 3)
    plan = plan_due(JobType.STRATEGY_EXECUTION, utc(2026, 7, 2, 13, 45), now)
    assert [(f.slot.tick_id, f.reason) for f in plan.fire] == [
        ("strategy_execution@2026-07-02T14:00:00Z", TickReason.SCHEDULED)
    ]
    assert plan.skip == ()
    # already handled: nothing to do
    assert plan_due(JobType.STRATEGY_EXECUTION, utc(2026, 7, 2, 14, 0), now).empty


def test_plan_strategy_skips_stale_slots() -> None:
    # down from 10:00 NY to 11:07 NY: 10:15..11:00 are stale, nothing fresh
    now = utc(2026, 7, 2, 15, 7)
    plan = plan_due(JobType.STRATEGY_EXECUTION, utc(2026, 7, 2, 14, 0), now)
    assert plan.fire == ()
    assert [s.slot.scheduled_at for s in plan.skip] == [
        utc(2026, 7, 2, 14, 15), utc(2026, 7, 2, 14, 30), utc(2026, 7, 2, 14, 45), utc(2026, 7, 2, 15, 0)
    ]
    assert {s.reason for s in plan.skip} == {SkipReason.STALE}


def test_plan_monitoring_coalesces_into_one_catch_up() -> None:
    now = utc(2026, 7, 2, 15, 7, 30)
    plan = plan_due(JobType.ORDER_STATUS_CHECK, utc(2026, 7, 2, 15, 0), now)
    # 15:01..15:06 missed (15:07 is fresh, 30 s late): the fresh tick covers them
    assert [(f.slot.scheduled_at, f.reason) for f in plan.fire] == [(utc(2026, 7, 2, 15, 7), TickReason.SCHEDULED)]
    assert len(plan.skip) == 6
    assert {s.covered_by for s in plan.skip} == {"order_status_check@2026-07-02T15:07:00Z"}
    # without a fresh slot: one catch-up tick for the latest missed slot
    plan = plan_due(JobType.PRICE_UPDATE, utc(2026, 7, 2, 15, 0), utc(2026, 7, 2, 15, 18))
    assert [(f.slot.scheduled_at, f.reason) for f in plan.fire] == [(utc(2026, 7, 2, 15, 15), TickReason.CATCH_UP)]
    assert [s.slot.scheduled_at for s in plan.skip] == [utc(2026, 7, 2, 15, 5), utc(2026, 7, 2, 15, 10)]
    assert {s.reason for s in plan.skip} == {SkipReason.COALESCED}


def test_plan_snapshot_fires_once_per_missed_close() -> None:
    # down from Wednesday 1 July before the close until Monday 6 July noon (3 July holiday)
    plan = plan_due(JobType.PORTFOLIO_SNAPSHOT, utc(2026, 6, 30, 20, 5), utc(2026, 7, 6, 16, 0))
    assert [(f.slot.scheduled_at, f.reason) for f in plan.fire] == [
        (utc(2026, 7, 1, 20, 5), TickReason.CATCH_UP),
        (utc(2026, 7, 2, 20, 5), TickReason.CATCH_UP),
    ]
    assert plan.skip == ()


def test_plan_first_start_ignores_history() -> None:
    plan = plan_due(JobType.PORTFOLIO_SNAPSHOT, None, utc(2026, 7, 2, 20, 30))
    assert plan.empty
    plan = plan_due(JobType.PORTFOLIO_SNAPSHOT, None, utc(2026, 7, 2, 20, 5, 20))
    assert [f.reason for f in plan.fire] == [TickReason.SCHEDULED]


def test_plan_rejects_naive_time() -> None:
    with pytest.raises(ValueError, match="naive"):
        plan_due(JobType.PRICE_UPDATE, None, datetime(2026, 7, 2, 12, 0))
