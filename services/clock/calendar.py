"""The exchange calendar (XNYS, from ``exchange-calendars``): trading sessions with their open and close.

Holidays, early closes and daylight saving time all come from the real calendar; nothing here knows a
fixed UTC time. ``exchange_calendars.get_calendar("XNYS")`` only covers about one year ahead of *today*
by default, so every calendar is built with an explicit ``start``/``end`` covering whole years, and the
sessions of one year are computed once per process (they never change).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
EXCHANGE = "XNYS"
REGULAR_CLOSE_NY = time(16, 0)
# exchange-calendars has XNYS data from 1885; far beyond today its holiday rules still apply.
FIRST_YEAR = 1990
LAST_YEAR = 2200


class CalendarRangeError(ValueError):
    """A date outside the range the exchange calendar is built for."""


@dataclass(frozen=True, slots=True)
class Session:
    """One trading day of the exchange; ``open``/``close`` are tz-aware UTC."""

    day: date
    open: datetime
    close: datetime

    @property
    def open_ny(self) -> datetime:
        return self.open.astimezone(NEW_YORK)

    @property
    def close_ny(self) -> datetime:
        return self.close.astimezone(NEW_YORK)

    @property
    def early_close(self) -> bool:
        return self.close_ny.time() < REGULAR_CLOSE_NY


def _check_year(year: int) -> None:
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise CalendarRangeError(f"year {year} is outside the supported calendar range {FIRST_YEAR}-{LAST_YEAR}")


@functools.lru_cache(maxsize=64)
def _year_sessions(year: int) -> tuple[Session, ...]:
    """All XNYS sessions of one calendar year (the calendar is built for exactly that range)."""
    _check_year(year)
    import exchange_calendars as xcals  # heavy import (pandas): only when a calendar is needed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cal = xcals.get_calendar(EXCHANGE, start=f"{year}-01-01", end=f"{year}-12-31")
    schedule = cal.schedule
    sessions: list[Session] = []
    for label, open_ts, close_ts in zip(
        schedule.index, schedule["open"], schedule["close"], strict=True
    ):
        sessions.append(
            Session(
                day=label.date(),
                open=open_ts.to_pydatetime().astimezone(UTC),
                close=close_ts.to_pydatetime().astimezone(UTC),
            )
        )
    return tuple(sessions)


@functools.lru_cache(maxsize=64)
def _year_index(year: int) -> dict[date, Session]:
    return {s.day: s for s in _year_sessions(year)}


def session(day: date) -> Session | None:
    """The session on ``day`` (an exchange-local date), or None when the exchange is closed."""
    return _year_index(day.year).get(day)


def sessions_between(start: date, end: date) -> list[Session]:
    """Sessions with ``start <= day <= end`` in order."""
    if end < start:
        return []
    result: list[Session] = []
    for year in range(start.year, end.year + 1):
        result.extend(s for s in _year_sessions(year) if start <= s.day <= end)
    return result


def sessions_from(day: date) -> Iterator[Session]:
    """Sessions on or after ``day``, forever (year by year)."""
    year = day.year
    while year <= LAST_YEAR:
        for s in _year_sessions(year):
            if s.day >= day:
                yield s
        year += 1


def sessions_before(day: date) -> Iterator[Session]:
    """Sessions strictly before ``day``, newest first."""
    year = day.year
    while year >= FIRST_YEAR:
        for s in reversed(_year_sessions(year)):
            if s.day < day:
                yield s
        year -= 1


def exchange_date(instant: datetime) -> date:
    """The New York calendar date of a tz-aware instant."""
    if instant.tzinfo is None:
        raise ValueError("naive datetime: pass a tz-aware instant")
    return instant.astimezone(NEW_YORK).date()


def ny_time(day: date, hh: int, mm: int) -> datetime:
    """A New York wall-clock time on ``day`` as a tz-aware UTC instant."""
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=NEW_YORK).astimezone(UTC)
