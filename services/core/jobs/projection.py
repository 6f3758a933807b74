"""Read models of the job ledger: ``scheduled_jobs`` (one row per job type: each job's stats) and
``job_executions`` (one row per run attempt: the job history), with the PostgreSQL enums ``job_type``,
``job_status`` (enabled|disabled|error) and ``execution_status`` (started|completed|failed).

Everything written here is derived from the events alone (their data and recorded times), so a rebuild
from the log equals the live tables row for row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

import asyncpg
import msgspec

from eventstore import RecordedEvent
from eventstore.projections import Projection
from services.core.events import registry
from services.core.jobs import breaker
from services.core.jobs.events import (
    EVENT_TYPES,
    HEALTH_EVENTS,
    ExecutionStatus,
    JobCircuitOpened,
    JobExecutionCompleted,
    JobExecutionFailed,
    JobExecutionSkipped,
    JobExecutionStarted,
    JobStatus,
)
from services.core.jobs.types import JobType

# Weight of the newest run in avg_duration_ms (exponentially weighted moving average).
AVG_DURATION_ALPHA = 0.2


def _enum_ddl(name: str, values: list[str]) -> str:
    labels = ", ".join(f"'{v}'" for v in values)
    return f"""
    DO $$ BEGIN
        CREATE TYPE {name} AS ENUM ({labels});
    EXCEPTION WHEN duplicate_object THEN NULL;
    END $$;
    """


DDL = (
    _enum_ddl("job_type", [j.value for j in JobType])
    + _enum_ddl("job_status", [s.value for s in JobStatus])
    + _enum_ddl("execution_status", [s.value for s in ExecutionStatus])
    + """
    CREATE TABLE IF NOT EXISTS scheduled_jobs (
        job_type job_type PRIMARY KEY,
        status job_status NOT NULL DEFAULT 'enabled',
        schedule text NOT NULL,
        last_run_at timestamptz,
        next_run_at timestamptz,
        total_runs bigint NOT NULL DEFAULT 0,
        total_failures bigint NOT NULL DEFAULT 0,
        total_skipped bigint NOT NULL DEFAULT 0,
        consecutive_failures integer NOT NULL DEFAULT 0,
        avg_duration_ms double precision,
        failure_rate double precision NOT NULL DEFAULT 0,
        last_error text,
        last_tick_id text,
        updated_at timestamptz
    );
    CREATE TABLE IF NOT EXISTS job_executions (
        id uuid PRIMARY KEY,
        job_type job_type NOT NULL,
        tick_id text NOT NULL,
        attempt integer NOT NULL,
        status execution_status NOT NULL,
        reason text NOT NULL,
        scheduled_for timestamptz NOT NULL,
        started_at timestamptz NOT NULL,
        completed_at timestamptz,
        duration_ms double precision,
        metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
        error text,
        worker text,
        UNIQUE (tick_id, attempt)
    );
    CREATE INDEX IF NOT EXISTS job_executions_job_started ON job_executions (job_type, started_at DESC);
    CREATE INDEX IF NOT EXISTS job_executions_started ON job_executions (started_at DESC);
    -- Ticks that were not run (job disabled or breaker open, too late, ...), for history.
    CREATE TABLE IF NOT EXISTS job_skips (
        tick_id text PRIMARY KEY,
        job_type job_type NOT NULL,
        scheduled_for timestamptz NOT NULL,
        skipped_at timestamptz NOT NULL,
        cause text NOT NULL
    );
    CREATE INDEX IF NOT EXISTS job_skips_skipped ON job_skips (skipped_at DESC);
    """
)

_SEED = """
INSERT INTO scheduled_jobs (job_type, schedule) SELECT * FROM unnest($1::job_type[], $2::text[])
ON CONFLICT (job_type) DO NOTHING
"""


def _schedule_texts() -> tuple[list[str], list[str]]:
    from services.clock.schedule import schedule_text  # pure module; imported lazily (calendar data)

    jobs = list(JobType)
    return [j.value for j in jobs], [schedule_text(j) for j in jobs]


def _next_run_after(job_type: str, instant: datetime) -> datetime:
    from services.clock.schedule import next_slot_after

    return next_slot_after(JobType(job_type), instant)


_json = msgspec.json.Encoder()


class JobsProjection(Projection):
    name: ClassVar[str] = "jobs"
    tables: ClassVar[tuple[str, ...]] = ("scheduled_jobs", "job_executions", "job_skips")
    event_types: ClassVar[frozenset[str] | None] = EVENT_TYPES

    async def setup(self, con: asyncpg.Connection) -> None:
        await con.execute(DDL)
        await con.execute(_SEED, *_schedule_texts())

    async def apply(self, con: asyncpg.Connection, events: list[RecordedEvent]) -> None:
        await con.execute(_SEED, *_schedule_texts())  # rows exist after a rebuild's TRUNCATE too
        for recorded in events:
            await self._apply_one(con, recorded, registry.decode(recorded))

    async def _apply_one(self, con: asyncpg.Connection, recorded: RecordedEvent, event: Any) -> None:
        at = recorded.recorded_at
        match event:
            case JobExecutionStarted():
                await con.execute(
                    """INSERT INTO job_executions
                           (id, job_type, tick_id, attempt, status, reason, scheduled_for, started_at, worker)
                       VALUES ($1, $2, $3, $4, 'started', $5, $6, $7, $8)
                       ON CONFLICT DO NOTHING""",
                    recorded.event_id, event.job_type, event.tick_id, event.attempt, event.reason,
                    event.scheduled_for, event.started_at, event.worker,
                )
                await con.execute(
                    """UPDATE scheduled_jobs SET
                           last_run_at = GREATEST(last_run_at, $2),
                           next_run_at = GREATEST(next_run_at, $3),
                           last_tick_id = $4, updated_at = $5
                       WHERE job_type = $1""",
                    event.job_type, event.started_at, _next_run_after(event.job_type, event.scheduled_for),
                    event.tick_id, at,
                )
            case JobExecutionCompleted() | JobExecutionFailed():
                failed = isinstance(event, JobExecutionFailed)
                ended = event.failed_at if failed else event.completed_at
                await con.execute(
                    """UPDATE job_executions SET status = $3, completed_at = $4, duration_ms = $5,
                           metadata = $6::jsonb, error = $7
                       WHERE tick_id = $1 AND attempt = $2""",
                    event.tick_id, event.attempt, "failed" if failed else "completed", ended,
                    event.duration_ms, _json.encode({} if failed else event.counters).decode(),
                    event.error if failed else None,
                )
                await con.execute(
                    """UPDATE scheduled_jobs SET
                           total_runs = total_runs + 1,
                           total_failures = total_failures + $3::int,
                           failure_rate = (total_failures + $3::int)::double precision / (total_runs + 1),
                           avg_duration_ms = CASE WHEN avg_duration_ms IS NULL THEN $2
                               ELSE avg_duration_ms * (1 - $4::double precision) + $2 * $4::double precision END,
                           last_error = COALESCE($5, last_error),
                           updated_at = $6
                       WHERE job_type = $1""",
                    event.job_type, event.duration_ms, int(failed), AVG_DURATION_ALPHA,
                    event.error if failed else None, at,
                )
            case JobExecutionSkipped():
                await con.execute(
                    """UPDATE scheduled_jobs SET total_skipped = total_skipped + 1,
                           next_run_at = GREATEST(next_run_at, $2), last_tick_id = $3, updated_at = $4
                       WHERE job_type = $1""",
                    event.job_type, _next_run_after(event.job_type, event.scheduled_for), event.tick_id, at,
                )
                await con.execute(
                    """INSERT INTO job_skips (tick_id, job_type, scheduled_for, skipped_at, cause)
                       VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tick_id) DO NOTHING""",
                    event.tick_id, event.job_type, event.scheduled_for, event.skipped_at, str(event.cause),
                )
            case _ if isinstance(event, HEALTH_EVENTS):
                health = breaker.health_after(event)
                await con.execute(
                    """UPDATE scheduled_jobs SET status = $2, consecutive_failures = $3,
                           last_error = COALESCE($4, last_error), updated_at = $5
                       WHERE job_type = $1""",
                    event.job_type, health.status.value, health.consecutive_failures,
                    event.last_error if isinstance(event, JobCircuitOpened) else None, at,
                )


# ------------------------------------------------------------------------------------ read queries

STATS_COLUMNS = (
    "job_type", "status", "schedule", "last_run_at", "next_run_at", "total_runs", "total_failures",
    "total_skipped", "consecutive_failures", "avg_duration_ms", "failure_rate", "last_error",
)


async def job_stats(con: asyncpg.Connection) -> list[dict[str, Any]]:
    """One row per job type, in the enum's order."""
    rows = await con.fetch(
        f"SELECT {', '.join(STATS_COLUMNS)} FROM scheduled_jobs ORDER BY job_type"
    )
    return [dict(r) for r in rows]


HISTORY_COLUMNS = (
    "id", "job_type", "tick_id", "attempt", "status", "reason", "scheduled_for", "started_at",
    "completed_at", "duration_ms", "metadata", "error",
)


async def job_history(
    con: asyncpg.Connection, *, job_type: str | None = None, limit: int = 20, failed_only: bool = False
) -> list[dict[str, Any]]:
    """The newest executions first, with the ticks that were skipped (status ``skipped``, the cause as
    ``error``: a tick that did nothing shows why)."""
    rows = await con.fetch(
        f"""SELECT * FROM (
                SELECT {', '.join(HISTORY_COLUMNS)}, status::text AS status_text FROM job_executions
                WHERE ($1::job_type IS NULL OR job_type = $1::job_type) AND (NOT $2 OR status = 'failed')
                UNION ALL
                SELECT NULL::uuid, job_type, tick_id, 0, NULL::execution_status, 'skipped', scheduled_for,
                       skipped_at, skipped_at, NULL::double precision, '{{}}'::jsonb, cause, 'skipped'
                FROM job_skips WHERE ($1::job_type IS NULL OR job_type = $1::job_type) AND NOT $2
            ) AS runs
            ORDER BY started_at DESC, tick_id DESC, attempt DESC
            LIMIT $3""",
        job_type, failed_only, limit,
    )
    result = []
    for r in rows:
        row = dict(r)
        row["status"] = row.pop("status_text")
        row["metadata"] = msgspec.json.decode(row["metadata"]) if isinstance(row["metadata"], str) else row["metadata"]
        result.append(row)
    return result
