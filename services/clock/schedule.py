"""Job schedules (pure): which slots each job has on a trading day, tick ids, and what to do with
slots the clock missed. Everything here takes its time as an argument; nothing reads the wall clock.

All schedules are defined in exchange time (America/New_York) from the real XNYS calendar, see
:mod:`services.clock.calendar`; slots are tz-aware UTC instants. What each job's schedule is (its interval,
whether the close is included, what happens to missed slots) sits beside its type in
:mod:`services.core.jobs.types` (``SPECS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from services.clock import calendar
from services.clock.calendar import NEW_YORK, Session
from services.core.jobs.types import (
    SPECS,
    JobSpec,
    JobType,
    MissedPolicy,
    Tick,
    TickReason,
    UnknownJobType,
    format_utc,
    parse_job_type,
    parse_tick_id,
    tick_id,
)

__all__ = [
    "SPECS",
    "Fire",
    "JobSpec",
    "JobType",
    "MissedPolicy",
    "Plan",
    "Skip",
    "SkipReason",
    "Slot",
    "TickReason",
    "UnknownJobType",
    "all_slots_between",
    "day_slots",
    "format_utc",
    "is_slot",
    "next_slot_after",
    "next_wakeup",
    "parse_job_type",
    "parse_tick_id",
    "plan_due",
    "previous_slot_at_or_before",
    "schedule_text",
    "session_slots",
    "slots_between",
    "tick_id",
    "tick_problem",
]


JOB_ORDER: dict[JobType, int] = {job: i for i, job in enumerate(JobType)}


def schedule_text(job_type: JobType) -> str:
    """Human-readable schedule (the ``schedule`` column of ``scheduled_jobs``)."""
    return f"{SPECS[job_type].description} (XNYS trading days, America/New_York)"


# ------------------------------------------------------------------------------------------- tick ids


@dataclass(frozen=True, slots=True, order=True)
class Slot:
    scheduled_at: datetime
    order: int
    job_type: JobType

    @classmethod
    def of(cls, job_type: JobType, scheduled_at: datetime) -> Slot:
        return cls(scheduled_at, JOB_ORDER[job_type], job_type)

    @property
    def tick_id(self) -> str:
        return tick_id(self.job_type, self.scheduled_at)


# -------------------------------------------------------------------------------------------- slots


def session_slots(job_type: JobType, sess: Session) -> list[datetime]:
    """The slots of one job in one session, increasing, tz-aware UTC."""
    spec = SPECS[job_type]
    if spec.every is None:
        assert spec.after_close is not None
        return [sess.close + spec.after_close]
    slots: list[datetime] = []
    t = sess.open
    while t < sess.close or (spec.include_close and t == sess.close):
        slots.append(t)
        t += spec.every
    return slots


def day_slots(day: date, jobs: tuple[JobType, ...] = tuple(JobType)) -> list[Slot]:
    """Every slot of the session on ``day`` (exchange date), sorted by time then job; [] on a closed day."""
    sess = calendar.session(day)
    if sess is None:
        return []
    return sorted(Slot.of(job, t) for job in jobs for t in session_slots(job, sess))


def _slot_day_window(job_type: JobType) -> timedelta:
    # A slot belongs to the session of its own exchange date (the snapshot is at most close + 5 min).
    spec = SPECS[job_type]
    return spec.after_close or timedelta(0)


def slots_between(job_type: JobType, start: datetime, end: datetime) -> list[datetime]:
    """Slots of ``job_type`` with ``start < t <= end`` (tz-aware), increasing."""
    if end <= start:
        return []
    first = calendar.exchange_date(start - _slot_day_window(job_type))
    last = calendar.exchange_date(end)
    result: list[datetime] = []
    for sess in calendar.sessions_between(first, last):
        result.extend(t for t in session_slots(job_type, sess) if start < t <= end)
    return result


def all_slots_between(start: datetime, end: datetime, jobs: tuple[JobType, ...] = tuple(JobType)) -> list[Slot]:
    """Slots of all ``jobs`` with ``start < t <= end``, sorted by time then job."""
    return sorted(Slot.of(job, t) for job in jobs for t in slots_between(job, start, end))


def next_slot_after(job_type: JobType, instant: datetime) -> datetime:
    """The first slot of ``job_type`` strictly after ``instant``."""
    day = calendar.exchange_date(instant - _slot_day_window(job_type))
    for sess in calendar.sessions_from(day):
        for t in session_slots(job_type, sess):
            if t > instant:
                return t
    raise calendar.CalendarRangeError(f"no slot of {job_type} after {instant.isoformat()}")


def previous_slot_at_or_before(job_type: JobType, instant: datetime) -> datetime | None:
    """The last slot of ``job_type`` with ``t <= instant`` (None if there is none in the calendar range)."""
    day = calendar.exchange_date(instant)
    sess = calendar.session(day)
    candidates = [t for t in session_slots(job_type, sess) if t <= instant] if sess else []
    if candidates:
        return candidates[-1]
    for prev in calendar.sessions_before(day):
        return session_slots(job_type, prev)[-1]
    return None


def is_slot(job_type: JobType, instant: datetime) -> bool:
    """Whether ``instant`` is one of the slots of ``job_type`` (on a trading day within the calendar)."""
    try:
        sess = calendar.session(calendar.exchange_date(instant - _slot_day_window(job_type)))
    except calendar.CalendarRangeError:
        return False
    return sess is not None and instant in session_slots(job_type, sess)


# How far ahead of this process's clock a tick may be (clocks of two machines differ a little).
FUTURE_MARGIN = timedelta(seconds=30)


def tick_problem(tick: Tick, now: datetime, *, future_margin: timedelta = FUTURE_MARGIN) -> str | None:
    """Why a tick must not be obeyed at ``now`` (None: it may be). A tick is obeyed only when its time is
    not in the future (beyond ``future_margin``), and a scheduled or catch-up tick only for a slot of its
    job's schedule; a manual tick (``openbell tick JOB``) runs its job at any past time. A job whose missed
    slots are skipped (strategy_execution) is never caught up."""
    if tick.scheduled_at > now + future_margin:
        return f"tick {tick.tick_id} is for a time in the future (now {format_utc(now)})"
    if tick.emitted_at > now + future_margin:
        return f"tick {tick.tick_id} was emitted in the future (now {format_utc(now)})"
    if tick.reason is TickReason.MANUAL:
        return None
    if not is_slot(tick.job_type, tick.scheduled_at):
        return (
            f"tick {tick.tick_id}: {format_utc(tick.scheduled_at)} is not a slot of {tick.job_type}"
            f" ({SPECS[tick.job_type].description}, XNYS trading days)"
        )
    if tick.reason is TickReason.CATCH_UP and SPECS[tick.job_type].missed is MissedPolicy.SKIP:
        return f"tick {tick.tick_id}: {tick.job_type} is never caught up (its missed slots are skipped)"
    return None


def to_new_york(instant: datetime) -> datetime:
    return instant.astimezone(NEW_YORK)


# ------------------------------------------------------------------------------------- missed slots


DEFAULT_MAX_LATENESS = timedelta(seconds=60)


class SkipReason(StrEnum):
    STALE = "stale"  # a trading slot that is too old to act on
    COALESCED = "coalesced"  # covered by another (catch-up or fresh) tick of the same job


@dataclass(frozen=True, slots=True)
class Fire:
    slot: Slot
    reason: TickReason


@dataclass(frozen=True, slots=True)
class Skip:
    slot: Slot
    reason: SkipReason
    covered_by: str | None = None  # tick id of the tick that does this slot's work


@dataclass(frozen=True, slots=True)
class Plan:
    fire: tuple[Fire, ...]
    skip: tuple[Skip, ...]

    @property
    def empty(self) -> bool:
        return not self.fire and not self.skip


def plan_due(
    job_type: JobType,
    last_handled: datetime | None,
    now: datetime,
    *,
    max_lateness: timedelta = DEFAULT_MAX_LATENESS,
) -> Plan:
    """What the clock must do at ``now`` for ``job_type``, given the last slot it already handled.

    Due slots are those in ``(last_handled, now]``. A due slot at most ``max_lateness`` old is *fresh*
    and fires as ``scheduled``; older ones were *missed* (the clock was down) and follow the job's
    :class:`MissedPolicy`. With no history at all (first start ever) nothing older than
    ``max_lateness`` is considered missed.
    """
    if now.tzinfo is None:
        raise ValueError("naive datetime: pass a tz-aware instant")
    floor = last_handled if last_handled is not None else now - max_lateness
    due = slots_between(job_type, floor, now)
    fresh = [t for t in due if now - t <= max_lateness]
    stale = [t for t in due if now - t > max_lateness]
    fire = [Fire(Slot.of(job_type, t), TickReason.SCHEDULED) for t in fresh]
    skip: list[Skip] = []
    policy = SPECS[job_type].missed
    if policy is MissedPolicy.SKIP:
        skip = [Skip(Slot.of(job_type, t), SkipReason.STALE) for t in stale]
    elif policy is MissedPolicy.COALESCE and stale:
        if fresh:
            cover = Slot.of(job_type, fresh[0]).tick_id
            skip = [Skip(Slot.of(job_type, t), SkipReason.COALESCED, cover) for t in stale]
        else:
            catch_up = Slot.of(job_type, stale[-1])
            fire.insert(0, Fire(catch_up, TickReason.CATCH_UP))
            skip = [Skip(Slot.of(job_type, t), SkipReason.COALESCED, catch_up.tick_id) for t in stale[:-1]]
    elif policy is MissedPolicy.FIRE_EACH:
        fire = [Fire(Slot.of(job_type, t), TickReason.CATCH_UP) for t in stale] + fire
    return Plan(tuple(sorted(fire, key=lambda f: f.slot)), tuple(sorted(skip, key=lambda s: s.slot)))


def next_wakeup(now: datetime, jobs: tuple[JobType, ...] = tuple(JobType)) -> datetime:
    """The earliest slot of any job strictly after ``now``."""
    return min(next_slot_after(job, now) for job in jobs)
