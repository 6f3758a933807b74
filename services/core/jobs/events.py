"""Job ledger events.

Streams:

- ``jobrun-<tick_id>``: one job run for one tick: ``JobExecutionStarted`` (attempt n), then
  ``JobExecutionCompleted`` / ``JobExecutionFailed``; or ``JobExecutionSkipped`` when the job's breaker
  is open or the job is disabled. Expected versions make the first start of a tick win; once a terminal
  event is stored the tick never runs again.
- ``job-<job_type>``: the job's health (circuit breaker): ``JobFailureRecorded`` / ``JobFailuresReset``
  (the failure streak, with the resulting status), ``JobCircuitOpened``, ``JobEnabled``, ``JobDisabled``.
  Every event there carries the state after it, so loading the breaker reads one event; appends use the
  stream's version, so several workers agree on the streak.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import msgspec

from services.core.events import domain_event


class JobStatus(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    ERROR = "error"


class ExecutionStatus(StrEnum):
    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"


class SkipCause(StrEnum):
    CIRCUIT_OPEN = "circuit_open"
    DISABLED = "disabled"


def jobrun_stream(tick_id: str) -> str:
    return f"jobrun-{tick_id}"


def job_stream(job_type: str) -> str:
    return f"job-{job_type}"


# ------------------------------------------------------------------------------------ jobrun-<tick_id>


@domain_event
class JobExecutionStarted(msgspec.Struct, frozen=True, kw_only=True):
    job_type: str
    tick_id: str
    scheduled_for: datetime
    reason: str  # scheduled | manual | catch_up
    attempt: int
    started_at: datetime
    worker: str


@domain_event
class JobExecutionCompleted(msgspec.Struct, frozen=True, kw_only=True):
    job_type: str
    tick_id: str
    scheduled_for: datetime
    attempt: int
    started_at: datetime
    completed_at: datetime
    duration_ms: float
    counters: dict[str, int]


@domain_event
class JobExecutionFailed(msgspec.Struct, frozen=True, kw_only=True):
    job_type: str
    tick_id: str
    scheduled_for: datetime
    attempt: int
    started_at: datetime
    failed_at: datetime
    duration_ms: float
    error: str


@domain_event
class JobExecutionSkipped(msgspec.Struct, frozen=True, kw_only=True):
    job_type: str
    tick_id: str
    scheduled_for: datetime
    reason: str  # tick reason
    cause: SkipCause
    skipped_at: datetime


# -------------------------------------------------------------------------------------- job-<job_type>


@domain_event
class JobFailureRecorded(msgspec.Struct, frozen=True, kw_only=True):
    job_type: str
    tick_id: str
    attempt: int
    error: str
    consecutive_failures: int  # after this failure
    status: JobStatus  # after this failure (unchanged by it)


@domain_event
class JobFailuresReset(msgspec.Struct, frozen=True, kw_only=True):
    """A run completed after a streak of failures: the streak is back to 0."""

    job_type: str
    tick_id: str
    attempt: int
    previous_consecutive_failures: int
    status: JobStatus


@domain_event
class JobCircuitOpened(msgspec.Struct, frozen=True, kw_only=True):
    job_type: str
    tick_id: str  # the tick whose failure tripped the breaker
    consecutive_failures: int
    last_error: str
    opened_at: datetime


@domain_event
class JobEnabled(msgspec.Struct, frozen=True, kw_only=True):
    job_type: str
    at: datetime
    by: str
    reason: str = ""


@domain_event
class JobDisabled(msgspec.Struct, frozen=True, kw_only=True):
    job_type: str
    at: datetime
    by: str
    reason: str = ""
    consecutive_failures: int = 0  # unchanged by disabling (carried so the state is in one event)


RUN_EVENTS = (JobExecutionStarted, JobExecutionCompleted, JobExecutionFailed, JobExecutionSkipped)
HEALTH_EVENTS = (JobFailureRecorded, JobFailuresReset, JobCircuitOpened, JobEnabled, JobDisabled)
RunEvent = JobExecutionStarted | JobExecutionCompleted | JobExecutionFailed | JobExecutionSkipped
HealthEvent = JobFailureRecorded | JobFailuresReset | JobCircuitOpened | JobEnabled | JobDisabled
EVENT_TYPES: frozenset[str] = frozenset(cls.__name__ for cls in (*RUN_EVENTS, *HEALTH_EVENTS))
