"""Typed queries on the job ledger's read models: each job's stats and breaker state with its last runs,
and the executions (filtered, keyset-paged, newest first)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, Field

from services.core.jobs.events import ExecutionStatus, JobStatus
from services.core.jobs.types import JobType


class Execution(BaseModel):
    """One run of a job for one tick (an attempt)."""

    id: str
    job_type: JobType
    tick_id: str
    attempt: int
    status: ExecutionStatus
    reason: str
    scheduled_for: datetime
    started_at: datetime
    completed_at: datetime | None
    duration_ms: float | None
    metadata: dict[str, Any]
    error: str | None


class Job(BaseModel):
    """A job's stats and circuit breaker (``status``: ``error`` means the breaker is open)."""

    job_type: JobType
    status: JobStatus = Field(description="enabled, disabled, or error (breaker open: enable it to close)")
    breaker_open: bool
    schedule: str
    last_run_at: datetime | None
    next_run_at: datetime | None
    total_runs: int
    total_failures: int
    total_skipped: int
    consecutive_failures: int
    avg_duration_ms: float | None
    failure_rate: float
    last_error: str | None
    last_runs: list[Execution]


class ExecutionPage(BaseModel):
    items: list[Execution]
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page; null: last page")


_EXECUTION = (
    "id::text, job_type::text, tick_id, attempt, status::text, reason, scheduled_for, started_at, completed_at,"
    " duration_ms, metadata, error"
)


def _execution(row: asyncpg.Record) -> Execution:
    data = dict(row)
    if isinstance(data["metadata"], str):
        data["metadata"] = json.loads(data["metadata"])
    return Execution.model_validate(data)


async def list_jobs(con: asyncpg.Connection, *, last_runs: int = 10) -> list[Job]:
    jobs = await con.fetch(
        "SELECT job_type::text, status::text, schedule, last_run_at, next_run_at, total_runs, total_failures,"
        " total_skipped, consecutive_failures, avg_duration_ms, failure_rate, last_error FROM scheduled_jobs"
        " ORDER BY job_type"
    )
    runs = await con.fetch(
        f"""SELECT r.* FROM unnest($1::job_type[]) AS j(job_type), LATERAL (
                SELECT {_EXECUTION} FROM job_executions e WHERE e.job_type = j.job_type
                ORDER BY started_at DESC, tick_id DESC, attempt DESC LIMIT $2) r""",
        [j["job_type"] for j in jobs], last_runs,
    )
    by_job: dict[str, list[Execution]] = {}
    for row in runs:
        by_job.setdefault(row["job_type"], []).append(_execution(row))
    return [
        Job.model_validate({
            **dict(j), "breaker_open": j["status"] == JobStatus.ERROR.value, "last_runs": by_job.get(j["job_type"], [])
        })
        for j in jobs
    ]


def _cursor(execution: Execution) -> str:
    return f"{execution.started_at.isoformat()}|{execution.id}"


class BadCursor(ValueError):
    """A cursor that no page of this API produced."""


async def list_executions(
    con: asyncpg.Connection,
    *,
    job_type: JobType | None = None,
    status: ExecutionStatus | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> ExecutionPage:
    after_at: datetime | None = None
    after_id: str | None = None
    if cursor:
        at, _, after_id = cursor.partition("|")
        try:
            after_at = datetime.fromisoformat(at)
        except ValueError:
            raise BadCursor("invalid cursor: use the next_cursor of a previous page") from None
    rows = await con.fetch(
        f"""SELECT {_EXECUTION} FROM job_executions
            WHERE ($1::job_type IS NULL OR job_type = $1::job_type)
              AND ($2::execution_status IS NULL OR status = $2::execution_status)
              AND ($3::timestamptz IS NULL OR (started_at, id::text) < ($3, $4))
            ORDER BY started_at DESC, id::text DESC LIMIT $5""",
        None if job_type is None else job_type.value, None if status is None else status.value,
        after_at, after_id, limit + 1,
    )
    items = [_execution(r) for r in rows[:limit]]
    return ExecutionPage(items=items, next_cursor=_cursor(items[-1]) if len(rows) > limit else None)
