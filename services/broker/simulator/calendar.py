"""The NYSE calendar (holidays, early closes, DST) from exchange-calendars, for the simulator and the fake
Alpaca server. ``exchange_calendars`` only covers about a year ahead by default, so we pass a range."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, timedelta

import exchange_calendars
import pandas as pd

from services.broker.models import CalendarDay, Clock, utc

FIRST_YEAR = 2000
LAST_YEAR = 2035


@functools.lru_cache(maxsize=1)
def _xnys() -> exchange_calendars.ExchangeCalendar:
    return exchange_calendars.get_calendar("XNYS", start=f"{FIRST_YEAR}-01-01", end=f"{LAST_YEAR}-12-31")


def trading_days(start: date, end: date) -> list[CalendarDay]:
    """Trading days with start <= date <= end, open/close as tz-aware UTC."""
    calendar = _xnys()
    start = max(start, date(FIRST_YEAR, 1, 3))
    end = min(end, date(LAST_YEAR, 12, 31))
    if start > end:
        return []
    sessions = calendar.sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))
    opens = calendar.opens[sessions]
    closes = calendar.closes[sessions]
    return [
        CalendarDay(
            date=session.date(),
            open=opens.iloc[i].to_pydatetime().astimezone(UTC),
            close=closes.iloc[i].to_pydatetime().astimezone(UTC),
        )
        for i, session in enumerate(sessions)
    ]


def market_clock(now: datetime) -> Clock:
    """Alpaca's /v2/clock at ``now``: whether the regular session is open, and the next open/close."""
    now = utc(now)
    days = trading_days((now - timedelta(days=1)).date(), (now + timedelta(days=14)).date())
    is_open = any(day.open <= now < day.close for day in days)
    next_open = next(day.open for day in days if day.open > now)
    next_close = next(day.close for day in days if day.close > now)
    return Clock(timestamp=now, is_open=is_open, next_open=next_open, next_close=next_close)
