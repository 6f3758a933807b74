"""Finding: an interrupted job run was never taken over and its tick was lost. A delivery that found the
run "in progress" was retried 1 s later and the consumer gave up after 5 deliveries, while takeover waited
120 s; with PostgreSQL down the outcome could not be recorded either, and the tick was dead-lettered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client as NatsClient

from eventstore import EventStore
from eventstore.faults import is_retryable
from services.core.embedded import EmbeddedPostgres
from services.core.events import new_event, registry
from services.core.jobs.consumer import DurableConsumers, subscribe_ticks
from services.core.jobs.events import JobExecutionCompleted, JobExecutionStarted, jobrun_stream
from services.core.jobs.lease import RunLeases
from services.core.jobs.runner import JobContext, JobRunner
from services.core.jobs.types import JobType, Tick, TickReason, encode_tick
from services.core.subjects import Subjects
from tests.waiting import until

T0 = datetime(2026, 7, 2, 14, 0, tzinfo=UTC)  # a Thursday, 10:00 New York: a position_sync slot
CLOSE_PLUS_5 = datetime(2026, 7, 2, 20, 5, tzinfo=UTC)  # that day's portfolio_snapshot slot


@pytest.fixture
async def subjects(nc: NatsClient, subject_prefix: str) -> Subjects:
    s = Subjects(subject_prefix)
    await s.ensure_streams(nc.jetstream())
    return s


@pytest.fixture
async def consumers(nats_url: str) -> AsyncIterator[DurableConsumers]:
    # A short ack wait and delivery limit: the old consumer would have dead-lettered within seconds.
    made = DurableConsumers(nats_url, ack_wait=1.0, max_deliver=2)
    yield made
    await made.stop()


async def run_events(store: EventStore, tick_id: str) -> list[object]:
    return [registry.decode(e) async for e in store.read_stream(jobrun_stream(tick_id))]


async def test_a_run_whose_worker_died_is_taken_over_once_its_lease_runs_out(
    pg_dsn: str, nc: NatsClient, subjects: Subjects, consumers: DurableConsumers
) -> None:
    store = await EventStore.connect(pg_dsn)
    try:
        tick = Tick.for_slot(JobType.POSITION_SYNC, T0, emitted_at=T0, reason=TickReason.SCHEDULED)
        # A worker started the tick, then was killed: its lease (3 s) is renewed no more.
        assert await RunLeases(store, "killed", timedelta(seconds=3)).acquire(tick.tick_id)
        started = JobExecutionStarted(
            job_type=tick.job_type.value, tick_id=tick.tick_id, scheduled_for=tick.scheduled_at, reason="scheduled",
            attempt=1, started_at=T0, worker="killed",
        )
        await store.append(jobrun_stream(tick.tick_id), [new_event(started, tick.tick_id, "1")], -1)
        killed_at = time.monotonic()
        ran: list[int] = []

        async def position_sync(ctx: JobContext) -> dict[str, int]:
            ran.append(ctx.attempt)
            return {"positions_checked": 1}

        runner = JobRunner(store, worker="alive", lease=timedelta(seconds=1))
        subscribe_ticks(consumers, subjects=subjects, service="positions", job_type=JobType.POSITION_SYNC,
                        runner=runner, job=position_sync)
        await consumers.start()
        await nc.jetstream().publish(subjects.tick(tick.job_type.value), encode_tick(tick),
                                     headers={"Nats-Msg-Id": tick.tick_id})

        async def completed() -> bool:
            events = await run_events(store, tick.tick_id)
            return bool(events) and isinstance(events[-1], JobExecutionCompleted)

        await until(completed, 30, "the tick's run completed by the worker that took it over")
        waited = time.monotonic() - killed_at
        events = await run_events(store, tick.tick_id)
        assert [type(e).__name__ for e in events] == ["JobExecutionStarted"] * 2 + ["JobExecutionCompleted"]
        assert ran == [2]  # taken over as attempt 2, once the dead worker's lease ran out (not after 120 s)
        assert 2.5 < waited < 10, waited
        # One delivery, kept while waiting: nothing dead-lettered, nothing redelivered.
        assert (await nc.jetstream().stream_info(subjects.dlq_stream)).state.messages == 0
        info = await nc.jetstream().consumer_info(subjects.ticks_stream, "positions_position_sync")
        assert info.num_ack_pending == 0 and info.num_redelivered == 0
    finally:
        await store.close()


async def test_a_postgresql_restart_during_a_run_ends_in_one_completed_execution(
    private_postgres: EmbeddedPostgres, nc: NatsClient, subjects: Subjects, consumers: DurableConsumers
) -> None:
    """PostgreSQL is killed while portfolio_snapshot runs and comes back 3 s later (on the same data): the
    run that hit it is taken over and the tick completes; it is never dead-lettered, though the outage
    outlasts the consumer's delivery limit."""
    store = await EventStore.connect(private_postgres.dsn())
    try:
        tick = Tick.for_slot(
            JobType.PORTFOLIO_SNAPSHOT, CLOSE_PLUS_5, emitted_at=CLOSE_PLUS_5, reason=TickReason.SCHEDULED
        )
        reading = asyncio.Event()
        crashed = asyncio.Event()
        attempts: list[int] = []

        async def portfolio_snapshot(ctx: JobContext) -> dict[str, int]:
            attempts.append(ctx.attempt)
            if ctx.attempt == 1:
                reading.set()
                await crashed.wait()
            async with store.pool.acquire() as con:  # the snapshot's reads
                await con.fetchval("SELECT 1")
            return {"snapshots_taken": 1}

        runner = JobRunner(store, worker="w", lease=timedelta(seconds=1))
        subscribe_ticks(consumers, subjects=subjects, service="positions", job_type=JobType.PORTFOLIO_SNAPSHOT,
                        runner=runner, job=portfolio_snapshot, backoff=(0.2, 0.5))
        await consumers.start()
        await nc.jetstream().publish(subjects.tick(tick.job_type.value), encode_tick(tick),
                                     headers={"Nats-Msg-Id": tick.tick_id})
        await asyncio.wait_for(reading.wait(), 30)
        await asyncio.to_thread(private_postgres.kill)
        crashed.set()
        await asyncio.sleep(3)  # the outage under test: PostgreSQL stays down for 3 s
        await asyncio.to_thread(private_postgres.start, reuse=False)

        async def completed() -> bool:
            events = await run_events(store, tick.tick_id)
            return bool(events) and isinstance(events[-1], JobExecutionCompleted)

        # The pool reconnects after the restart: until then reading fails with a retryable error.
        await until(completed, 60, "the tick's run completed after the restart", tolerate=is_retryable)
        events = await run_events(store, tick.tick_id)
        terminal = [e for e in events if not isinstance(e, JobExecutionStarted)]
        assert len(terminal) == 1 and isinstance(terminal[0], JobExecutionCompleted)
        assert terminal[0].counters == {"snapshots_taken": 1}
        assert attempts[0] == 1 and attempts[-1] == terminal[0].attempt >= 1
        assert (await nc.jetstream().stream_info(subjects.dlq_stream)).state.messages == 0
    finally:
        await store.close()
