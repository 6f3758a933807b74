"""The circuit breaker, pure: the job's health from its ``job-<job_type>`` events and the events a run
outcome or an operator action appends. No I/O, no clock reads (times are arguments)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.core.jobs.events import (
    HealthEvent,
    JobCircuitOpened,
    JobDisabled,
    JobEnabled,
    JobFailureRecorded,
    JobFailuresReset,
    JobStatus,
    SkipCause,
)

DEFAULT_THRESHOLD = 10


@dataclass(frozen=True, slots=True)
class JobHealth:
    status: JobStatus = JobStatus.ENABLED
    consecutive_failures: int = 0


INITIAL = JobHealth()


def health_after(event: HealthEvent) -> JobHealth:
    """The health right after ``event``: every health event carries the whole state."""
    match event:
        case JobEnabled():
            return JobHealth(JobStatus.ENABLED, 0)
        case JobDisabled():
            return JobHealth(JobStatus.DISABLED, event.consecutive_failures)
        case JobCircuitOpened():
            return JobHealth(JobStatus.ERROR, event.consecutive_failures)
        case JobFailureRecorded():
            return JobHealth(event.status, event.consecutive_failures)
        case JobFailuresReset():
            return JobHealth(event.status, 0)
    raise TypeError(f"not a job health event: {type(event).__name__}")


def skip_cause(health: JobHealth) -> SkipCause | None:
    """Why a tick must be skipped without running, or None to run it."""
    if health.status is JobStatus.ERROR:
        return SkipCause.CIRCUIT_OPEN
    if health.status is JobStatus.DISABLED:
        return SkipCause.DISABLED
    return None


def on_failure(
    health: JobHealth,
    *,
    job_type: str,
    tick_id: str,
    attempt: int,
    error: str,
    at: datetime,
    threshold: int = DEFAULT_THRESHOLD,
) -> list[HealthEvent]:
    streak = health.consecutive_failures + 1
    events: list[HealthEvent] = [
        JobFailureRecorded(
            job_type=job_type, tick_id=tick_id, attempt=attempt, error=error,
            consecutive_failures=streak, status=health.status,
        )
    ]
    if health.status is JobStatus.ENABLED and streak >= threshold:
        events.append(
            JobCircuitOpened(
                job_type=job_type, tick_id=tick_id, consecutive_failures=streak, last_error=error, opened_at=at
            )
        )
    return events


def on_success(health: JobHealth, *, job_type: str, tick_id: str, attempt: int) -> list[HealthEvent]:
    if health.consecutive_failures == 0:
        return []
    return [
        JobFailuresReset(
            job_type=job_type, tick_id=tick_id, attempt=attempt,
            previous_consecutive_failures=health.consecutive_failures, status=health.status,
        )
    ]


def on_enable(health: JobHealth, *, job_type: str, at: datetime, by: str, reason: str = "") -> list[HealthEvent]:
    """Enabling closes an open breaker and resets the streak; a no-op on a healthy enabled job."""
    if health == INITIAL:
        return []
    return [JobEnabled(job_type=job_type, at=at, by=by, reason=reason)]


def on_disable(health: JobHealth, *, job_type: str, at: datetime, by: str, reason: str = "") -> list[HealthEvent]:
    if health.status is JobStatus.DISABLED:
        return []
    return [
        JobDisabled(
            job_type=job_type, at=at, by=by, reason=reason, consecutive_failures=health.consecutive_failures
        )
    ]
