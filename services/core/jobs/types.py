"""The contract between the clock and every tick consumer: the job types, each beside its schedule
(``SPECS``), and the tick payload.

A new job type is one member of :class:`JobType` and its :class:`JobSpec` here; the clock
(:mod:`services.clock.schedule`) computes its slots from the spec, and the service that runs it names it in
its ``definition.py``. It lives in the platform so consumers do not depend on the clock service.

| job_type            | when (trading days only)                       | missed slots              |
| ------------------- | ---------------------------------------------- | ------------------------- |
| strategy_execution  | every 15 min from the open, open <= t < close  | skipped (stale)           |
| order_status_check  | every 1 min from the open, open <= t <= close  | coalesced into one tick   |
| position_sync       | every 5 min from the open, open <= t <= close  | coalesced into one tick   |
| price_update        | every 5 min from the open, open <= t <= close  | coalesced into one tick   |
| alert_price_check   | every 5 min from the open, open <= t < close   | coalesced into one tick   |
| portfolio_snapshot  | once, at close + 5 min                         | fired once per missed close |
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import msgspec


class JobType(StrEnum):
    STRATEGY_EXECUTION = "strategy_execution"
    ORDER_STATUS_CHECK = "order_status_check"
    POSITION_SYNC = "position_sync"
    PRICE_UPDATE = "price_update"
    PORTFOLIO_SNAPSHOT = "portfolio_snapshot"
    ALERT_PRICE_CHECK = "alert_price_check"


class MissedPolicy(StrEnum):
    SKIP = "skip"  # trading decisions on stale data are worse than none: skip and record
    COALESCE = "coalesce"  # monitoring: one catch-up tick does the work of all missed ones
    FIRE_EACH = "fire_each"  # snapshot: every missed close still gets its one snapshot


@dataclass(frozen=True, slots=True)
class JobSpec:
    job_type: JobType
    every: timedelta | None  # None: once per session, at close + after_close
    include_close: bool
    after_close: timedelta | None
    missed: MissedPolicy
    description: str


SPECS: dict[JobType, JobSpec] = {
    JobType.STRATEGY_EXECUTION: JobSpec(
        JobType.STRATEGY_EXECUTION, timedelta(minutes=15), False, None, MissedPolicy.SKIP,
        "every 15 min from the open, open <= t < close",
    ),
    JobType.ORDER_STATUS_CHECK: JobSpec(
        JobType.ORDER_STATUS_CHECK, timedelta(minutes=1), True, None, MissedPolicy.COALESCE,
        "every 1 min from the open, open <= t <= close",
    ),
    JobType.POSITION_SYNC: JobSpec(
        JobType.POSITION_SYNC, timedelta(minutes=5), True, None, MissedPolicy.COALESCE,
        "every 5 min from the open, open <= t <= close",
    ),
    JobType.PRICE_UPDATE: JobSpec(
        JobType.PRICE_UPDATE, timedelta(minutes=5), True, None, MissedPolicy.COALESCE,
        "every 5 min from the open, open <= t <= close",
    ),
    JobType.PORTFOLIO_SNAPSHOT: JobSpec(
        JobType.PORTFOLIO_SNAPSHOT, None, False, timedelta(minutes=5), MissedPolicy.FIRE_EACH,
        "once, at close + 5 min",
    ),
    JobType.ALERT_PRICE_CHECK: JobSpec(
        JobType.ALERT_PRICE_CHECK, timedelta(minutes=5), False, None, MissedPolicy.COALESCE,
        "every 5 min from the open, open <= t < close",
    ),
}


class UnknownJobType(ValueError):
    """A value that names no job type."""

    def __init__(self, value: str) -> None:
        valid = ", ".join(j.value for j in JobType)
        super().__init__(f"unknown job type {value!r} (one of: {valid})")
        self.value = value


def parse_job_type(value: str) -> JobType:
    try:
        return JobType(value)
    except ValueError:
        raise UnknownJobType(value) from None


class TickReason(StrEnum):
    SCHEDULED = "scheduled"
    MANUAL = "manual"
    CATCH_UP = "catch_up"


def format_utc(instant: datetime) -> str:
    """UTC ISO-8601 with seconds precision and a Z: ``2026-03-09T13:30:00Z``."""
    if instant.tzinfo is None:
        raise ValueError("naive datetime: pass a tz-aware instant")
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tick_id(job_type: JobType | str, scheduled_at: datetime) -> str:
    """``<job_type>@<scheduled UTC time, seconds precision, Z>``: the Nats-Msg-Id of the tick."""
    return f"{JobType(job_type).value}@{format_utc(scheduled_at)}"


_TICK_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", re.ASCII)


def parse_tick_id(value: str) -> tuple[JobType, datetime]:
    job, sep, when = value.partition("@")
    # The exact shape first (fromisoformat alone would take other forms), then the C parser: this is on
    # the path of every tick, where strptime cost a tenth of a millisecond.
    if not sep or _TICK_TIME.fullmatch(when) is None:
        raise ValueError(f"malformed tick id {value!r}")
    try:
        instant = datetime.fromisoformat(when[:-1]).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"malformed tick id {value!r}") from None
    return parse_job_type(job), instant


class Tick(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A clock tick: run ``job_type`` for the slot ``scheduled_at`` (the time every decision uses).
    A field this version does not know makes the tick invalid (dead-lettered, never half-understood)."""

    job_type: JobType
    tick_id: str
    scheduled_at: datetime
    emitted_at: datetime
    reason: TickReason

    @classmethod
    def for_slot(
        cls, job_type: JobType, scheduled_at: datetime, *, emitted_at: datetime, reason: TickReason
    ) -> Tick:
        scheduled = scheduled_at.astimezone(UTC).replace(microsecond=0)
        return cls(
            job_type=job_type,
            tick_id=tick_id(job_type, scheduled),
            scheduled_at=scheduled,
            emitted_at=emitted_at.astimezone(UTC),
            reason=reason,
        )


class WorkItem(msgspec.Struct, frozen=True, kw_only=True):
    """One portfolio of a tick, fanned out on a work queue (``<prefix>.work.<queue>``) so a service's
    workers share a tick's portfolios."""

    tick_id: str
    scheduled_at: datetime
    portfolio_id: str


class InvalidTick(ValueError):
    """A tick payload that can never be handled (bad JSON, unknown job type, missing fields...)."""


_tick_decoder = msgspec.json.Decoder(Tick)
_encoder = msgspec.json.Encoder()


def encode_tick(tick: Tick) -> bytes:
    return _encoder.encode(tick)


def decode_tick(data: bytes, *, subject_job_type: str | None = None) -> Tick:
    """Decode and validate a tick; raises :class:`InvalidTick` with the reason."""
    try:
        tick = _tick_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidTick(f"invalid tick: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidTick(f"malformed tick JSON: {exc}") from None
    if tick.scheduled_at.tzinfo is None or tick.emitted_at.tzinfo is None:
        raise InvalidTick("invalid tick: naive timestamp")
    try:
        id_job, id_time = parse_tick_id(tick.tick_id)
    except ValueError as exc:
        raise InvalidTick(f"invalid tick: {exc}") from None
    if id_job is not tick.job_type or id_time != tick.scheduled_at.replace(microsecond=0):
        raise InvalidTick(f"invalid tick: tick id {tick.tick_id!r} does not match job_type/scheduled_at")
    if subject_job_type is not None and subject_job_type != tick.job_type.value:
        raise InvalidTick(f"invalid tick: job_type {tick.job_type} published on the {subject_job_type} subject")
    return tick
