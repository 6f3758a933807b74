"""The NYSE calendar (holidays, early closes, DST) from exchange-calendars, for the simulator and the fake
Alpaca server. ``exchange_calendars`` only covers about a year ahead by default, so we pass a range.

The sessions are converted once into plain tuples searched by bisection: the simulator asks for a session
close on every order it settles, and a pandas lookup per call cost more than the rest of the settle."""

from __future__ import annotations

import bisect
import functools
from datetime import UTC, date, datetime, timedelta

import exchange_calendars

from services.broker.models import CalendarDay, Clock, utc
from services.clock.calendar import EXCHANGE

FIRST_YEAR = 2000
LAST_YEAR = 2035


@functools.lru_cache(maxsize=1)
def _sessions() -> tuple[tuple[date, ...], tuple[CalendarDay, ...]]:
    """Every session of the covered years: (their dates, their days), both in date order."""
    calendar = exchange_calendars.get_calendar(EXCHANGE, start=f"{FIRST_YEAR}-01-01", end=f"{LAST_YEAR}-12-31")
    opens = list(calendar.opens.dt.to_pydatetime())
    closes = list(calendar.closes.dt.to_pydatetime())
    days = tuple(
        CalendarDay(date=session.date(), open=opens[i].astimezone(UTC), close=closes[i].astimezone(UTC))
        for i, session in enumerate(calendar.sessions)
    )
    return tuple(day.date for day in days), days


def trading_days(start: date, end: date) -> list[CalendarDay]:
    """Trading days with start <= date <= end, open/close as tz-aware UTC."""
    dates, days = _sessions()
    return list(days[bisect.bisect_left(dates, start) : bisect.bisect_right(dates, end)])


def session_close_after(moment: datetime) -> datetime:
    """The close of the first session that closes after ``moment``."""
    moment = utc(moment)
    dates, days = _sessions()
    for day in days[max(bisect.bisect_left(dates, moment.date()) - 1, 0) :]:
        if day.close > moment:
            return day.close
    raise ValueError(f"no trading session after {moment.isoformat()} (calendar ends {LAST_YEAR})")


def market_clock(now: datetime) -> Clock:
    """Alpaca's /v2/clock at ``now``: whether the regular session is open, and the next open/close."""
    now = utc(now)
    days = trading_days((now - timedelta(days=1)).date(), (now + timedelta(days=14)).date())
    is_open = any(day.open <= now < day.close for day in days)
    next_open = next(day.open for day in days if day.open > now)
    next_close = next(day.close for day in days if day.close > now)
    return Clock(timestamp=now, is_open=is_open, next_open=next_open, next_close=next_close)
