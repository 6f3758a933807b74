"""Clock events: what the clock fired or skipped (stream ``clock-<job_type>``, so a restart knows), and
calendar cross-check results (stream ``calendar-<YYYY-MM-DD>``)."""

from __future__ import annotations

from datetime import date, datetime

import msgspec

from services.core.events import domain_event


def clock_stream(job_type: str) -> str:
    return f"clock-{job_type}"


def calendar_stream(day: date) -> str:
    return f"calendar-{day.isoformat()}"


@domain_event
class TickEmitted(msgspec.Struct, frozen=True, kw_only=True):
    job_type: str
    tick_id: str
    scheduled_at: datetime
    emitted_at: datetime
    reason: str  # scheduled | catch_up (manual ticks are not clock state)
    duplicate: bool = False  # JetStream already had this tick id (another clock, or a re-emit)


@domain_event
class TickSkipped(msgspec.Struct, frozen=True, kw_only=True):
    job_type: str
    tick_id: str
    scheduled_at: datetime
    reason: str  # stale | coalesced
    covered_by: str | None  # the tick that does this slot's work (coalesced), if any
    decided_at: datetime


@domain_event
class ClockBaselineSet(msgspec.Struct, frozen=True, kw_only=True):
    """First start of the clock for a job (no history): slots up to ``handled_until`` are not missed ones,
    they predate the clock. Later restarts catch up from here even if no slot of the job fired yet."""

    job_type: str
    handled_until: datetime
    at: datetime


@domain_event
class CalendarMismatch(msgspec.Struct, frozen=True, kw_only=True):
    day: date
    ours_open: datetime | None  # None: closed according to exchange-calendars
    ours_close: datetime | None
    broker_open: datetime | None  # None: closed according to the broker
    broker_close: datetime | None
    broker: str
    detail: str
