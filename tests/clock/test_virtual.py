"""A virtual week on real NATS + PostgreSQL: trivial job handlers behind the real consumer wiring and the
job ledger; the virtual clock emits every slot in simulated time and waits for each recorded run."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import UTC, date, datetime

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient

from eventstore import EventStore, NewEvent
from eventstore.projections import ProjectionRunner
from services.clock import calendar, schedule
from services.clock.schedule import JobType
from services.clock.virtual import VirtualClock, VirtualClockStalled
from services.core.jobs.consumer import DurableConsumers, subscribe_ticks
from services.core.jobs.projection import JobsProjection, job_stats
from services.core.jobs.runner import JobContext, JobRunner
from services.core.subjects import Subjects

NY = calendar.NEW_YORK
# The week of Thanksgiving 2026: Monday-Wednesday full days, Thursday closed, Friday closes at 13:00.
START = datetime(2026, 11, 23, 0, 0, tzinfo=NY).astimezone(UTC)
END = datetime(2026, 11, 28, 0, 0, tzinfo=NY).astimezone(UTC)


async def test_virtual_week(pg_dsn: str, nats_url: str, nc: NatsClient, subject_prefix: str) -> None:
    subjects = Subjects(subject_prefix)
    await subjects.ensure_streams(nc.jetstream())
    store = await EventStore.connect(pg_dsn)
    runner = JobRunner(store, nc=nc, subjects=subjects)
    seen: Counter[JobType] = Counter()
    decided_at: list[datetime] = []

    async def job(ctx: JobContext) -> dict[str, int]:
        seen[ctx.job_type] += 1
        decided_at.append(ctx.scheduled_at)
        return {"items": 1}

    broker = DurableConsumers(nats_url)
    for job_type in JobType:
        subscribe_ticks(broker, subjects=subjects, service="sim", job_type=job_type, runner=runner, job=job)
    await broker.start()
    try:
        vclock = VirtualClock(store, nc, subjects)
        t0 = time.perf_counter()
        result = await vclock.run(START, END)
        elapsed = time.perf_counter() - t0
    finally:
        await broker.stop()

    full, early = 3, 1
    expected = {
        JobType.STRATEGY_EXECUTION: full * 26 + early * 14,
        JobType.ORDER_STATUS_CHECK: full * 391 + early * 211,
        JobType.POSITION_SYNC: full * 79 + early * 43,
        JobType.PRICE_UPDATE: full * 79 + early * 43,
        JobType.ALERT_PRICE_CHECK: full * 78 + early * 42,
        JobType.PORTFOLIO_SNAPSHOT: 4,
    }
    assert dict(result.executions) == expected
    assert dict(seen) == expected, "every tick ran exactly once"
    assert result.outcomes == Counter({"completed": sum(expected.values())})
    assert decided_at == sorted(decided_at), "simulated time only moves forward"
    assert elapsed < 60, f"a virtual week took {elapsed:.1f}s"
    print(f"virtual week: {result.ticks} ticks in {elapsed:.1f}s")

    projections = ProjectionRunner(store, [JobsProjection()])
    await projections.run_once()
    async with store.pool.acquire() as con:
        stats = {r["job_type"]: r for r in await job_stats(con)}
    for job_type, count in expected.items():
        assert stats[job_type.value]["total_runs"] == count
        assert stats[job_type.value]["total_failures"] == 0
    snapshot_next = stats["portfolio_snapshot"]["next_run_at"]
    assert snapshot_next == schedule.next_slot_after(JobType.PORTFOLIO_SNAPSHOT, END)
    assert snapshot_next.astimezone(NY).date() == date(2026, 11, 30)
    await store.close()


async def test_virtual_clock_reports_a_missing_consumer(
    pg_dsn: str, nc: NatsClient, subject_prefix: str
) -> None:
    subjects = Subjects(subject_prefix)
    await subjects.ensure_streams(nc.jetstream())
    store = await EventStore.connect(pg_dsn)
    vclock = VirtualClock(store, nc, subjects, jobs=(JobType.PORTFOLIO_SNAPSHOT,), tick_timeout=0.5, poll_interval=0.1)
    with pytest.raises(VirtualClockStalled, match="portfolio_snapshot@2026-11-23T21:05:00Z"):
        await vclock.run(START, END)
    await store.close()


async def test_a_relay_done_with_the_log_is_quiet_whatever_order_positions_committed_in(
    pg_dsn: str, nc: NatsClient, subject_prefix: str
) -> None:
    """Two appends that commit in the other order than their positions: the last event in commit order
    has the lower position. A relay that published both stores that event's position, below the highest
    one. The clock took that for a relay behind the log, waited for an append that never came, and a demo
    stalled (seen at 14:30 New York of a one-day demo)."""
    subjects = Subjects(subject_prefix)
    await subjects.ensure_streams(nc.jetstream())
    store = await EventStore.connect(pg_dsn)
    first, second = await asyncpg.connect(pg_dsn), await asyncpg.connect(pg_dsn)
    try:
        insert = (
            "INSERT INTO events (stream_id, stream_version, event_id, event_type, data)"
            " VALUES ($1, 0, gen_random_uuid(), 'Noted', '{}') RETURNING global_position, tx_id::text::bigint"
        )
        first_tx, second_tx = first.transaction(), second.transaction()
        await second_tx.start()
        await second.fetchval("SELECT pg_current_xact_id()")  # the older transaction id...
        await first_tx.start()
        late_position, late_tx = await first.fetchrow(insert, "a")  # ...the lower position, a newer tx id
        high_position, _ = await second.fetchrow(insert, "b")
        await second_tx.commit()
        await first_tx.commit()
        assert late_position < high_position
        # The relay published both: its position is the last event in commit order, the lower one.
        await first.execute(
            "INSERT INTO eventstore_checkpoints (name, position, tx) VALUES ($1, $2, $3)",
            f"relay:{subject_prefix}", late_position, late_tx,
        )
        vclock = VirtualClock(store, nc, subjects)
        assert await vclock._busy() is None
        # One more event after it: now the relay is behind.
        await store.append("c", [NewEvent(type="Noted", data={}, event_id=uuid.uuid5(uuid.NAMESPACE_URL, "c"))])
        assert await vclock._busy() == "the relay behind the log"
    finally:
        await first.close()
        await second.close()
        await store.close()
