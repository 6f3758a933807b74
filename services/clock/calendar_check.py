"""Cross-check of our exchange calendar with the broker's (Alpaca ``/v2/calendar``).

``compare_session`` is pure: it takes the broker's calendar days as an input, so it is testable without
the broker. ``check_calendar`` is the thin shell: fetch the day from the broker, compare, and append a
``CalendarMismatch`` (deterministic id per day and difference, so re-running the check appends nothing
new).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Protocol

from eventstore import ANY, EventStore
from services.clock import calendar
from services.clock.events import CalendarMismatch, calendar_stream
from services.core.events import new_event


class BrokerCalendarDay(Protocol):
    """What the broker layer returns (``services.broker.models.CalendarDay``): tz-aware open/close."""

    @property
    def date(self) -> date: ...

    @property
    def open(self) -> datetime: ...

    @property
    def close(self) -> datetime: ...


class CalendarSource(Protocol):
    name: str  # the broker's name (OPENBELL_BROKER), recorded in a mismatch

    async def get_calendar(self, start: date, end: date) -> Sequence[BrokerCalendarDay]: ...


def compare_session(day: date, broker_days: Sequence[BrokerCalendarDay], *, broker: str) -> (
    CalendarMismatch | None
):
    """None when the broker agrees with exchange-calendars about ``day`` (open or closed, open and close
    times); otherwise the mismatch to record."""
    ours = calendar.session(day)
    theirs = [d for d in broker_days if d.date == day]
    if len(theirs) > 1:
        raise ValueError(f"the broker calendar lists {day} {len(theirs)} times")
    other = theirs[0] if theirs else None
    for value in (other.open, other.close) if other else ():
        if value.tzinfo is None:
            raise ValueError("broker calendar times must be tz-aware")
    if ours is None and other is None:
        return None
    if ours is not None and other is not None and ours.open == other.open and ours.close == other.close:
        return None
    if ours is None:
        detail = "exchange-calendars: closed; broker: open"
    elif other is None:
        detail = "exchange-calendars: open; broker: closed"
    else:
        parts = []
        if ours.open != other.open:
            parts.append(f"open {_ny(ours.open)} vs broker {_ny(other.open)}")
        if ours.close != other.close:
            parts.append(f"close {_ny(ours.close)} vs broker {_ny(other.close)}")
        detail = "; ".join(parts)
    return CalendarMismatch(
        day=day,
        ours_open=ours.open if ours else None,
        ours_close=ours.close if ours else None,
        broker_open=other.open if other else None,
        broker_close=other.close if other else None,
        broker=broker,
        detail=detail,
    )


def _ny(instant: datetime) -> str:
    return instant.astimezone(calendar.NEW_YORK).strftime("%H:%M %Z")


async def record_mismatch(store: EventStore, mismatch: CalendarMismatch) -> bool:
    """Append the mismatch (idempotent per day and difference); True if it was new."""
    event = new_event(mismatch, mismatch.day.isoformat(), mismatch.broker, mismatch.detail)
    result = await store.append(calendar_stream(mismatch.day), [event], ANY)
    return result.written


async def check_calendar(
    store: EventStore, source: CalendarSource, day: date
) -> CalendarMismatch | None:
    """Compare ``day`` (the exchange date of the tick's scheduled time) with the broker's calendar."""
    days = await source.get_calendar(day, day)
    mismatch = compare_session(day, days, broker=source.name)
    if mismatch is not None:
        await record_mismatch(store, mismatch)
    return mismatch
