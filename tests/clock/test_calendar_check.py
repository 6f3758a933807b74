"""Calendar cross-check: pure comparison with broker calendar days, and the recorded mismatch event."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

from eventstore import EventStore
from services.broker.models import CalendarDay
from services.clock import calendar
from services.clock.calendar_check import check_calendar, compare_session
from services.clock.events import calendar_stream
from services.core.events import registry


def day_of(d: date, open_hm: tuple[int, int], close_hm: tuple[int, int]) -> CalendarDay:
    return CalendarDay(
        date=d,
        open=calendar.ny_time(d, *open_hm),
        close=calendar.ny_time(d, *close_hm),
    )


def test_agreeing_calendars() -> None:
    assert compare_session(date(2026, 3, 9), [day_of(date(2026, 3, 9), (9, 30), (16, 0))], broker="alpaca") is None
    assert compare_session(date(2026, 11, 27), [day_of(date(2026, 11, 27), (9, 30), (13, 0))], broker="alpaca") is None
    assert compare_session(date(2026, 12, 25), [], broker="alpaca") is None  # both closed


def test_mismatches() -> None:
    early = compare_session(date(2026, 12, 24), [day_of(date(2026, 12, 24), (9, 30), (16, 0))], broker="alpaca")
    assert early is not None and early.detail == "close 13:00 EST vs broker 16:00 EST"
    assert early.ours_close == datetime(2026, 12, 24, 18, 0, tzinfo=UTC)
    holiday = compare_session(date(2026, 7, 3), [day_of(date(2026, 7, 3), (9, 30), (16, 0))], broker="alpaca")
    assert holiday is not None and holiday.detail == "exchange-calendars: closed; broker: open"
    missing = compare_session(date(2026, 7, 2), [], broker="alpaca")
    assert missing is not None and missing.detail == "exchange-calendars: open; broker: closed"


class FakeBrokerCalendar:
    """The broker's calendar as data (the real broker is services/broker; this is an input, not a mock)."""

    name = "alpaca"

    def __init__(self, days: Sequence[CalendarDay]) -> None:
        self.days = days

    async def get_calendar(self, start: date, end: date) -> list[CalendarDay]:
        return [d for d in self.days if start <= d.date <= end]


async def test_mismatch_is_recorded_once(pg_dsn: str) -> None:
    store = await EventStore.connect(pg_dsn)
    try:
        d = date(2026, 11, 27)
        source = FakeBrokerCalendar([day_of(d, (9, 30), (16, 0))])
        first = await check_calendar(store, source, d)
        again = await check_calendar(store, source, d)
        assert first is not None and again == first
        assert first.broker == source.name  # the broker the calendar came from, as it is configured
        events = [registry.decode(e) async for e in store.read_stream(calendar_stream(d))]
        assert events == [first]
        ok = await check_calendar(store, FakeBrokerCalendar([day_of(date(2026, 11, 30), (9, 30), (16, 0))]),
                                  date(2026, 11, 30))
        assert ok is None
        assert await store.stream_version(calendar_stream(date(2026, 11, 30))) == -1
    finally:
        await store.close()
