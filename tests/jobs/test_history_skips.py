"""A tick that did nothing shows in history: skipped, with the cause."""

from __future__ import annotations

from datetime import timedelta

from eventstore import EventStore
from eventstore.projections import ProjectionRunner
from services.core.jobs.projection import JobsProjection, job_history
from services.core.jobs.runner import JobRunner, RunStatus
from services.core.jobs.types import JobType, Tick, TickReason
from tests.jobs.test_runner import T0, Job


async def test_a_skipped_tick_shows_in_history_with_its_cause(store: EventStore) -> None:
    runner, job = JobRunner(store), Job()
    ran = Tick.for_slot(JobType.PRICE_UPDATE, T0, emitted_at=T0, reason=TickReason.SCHEDULED)
    assert (await runner.run(ran, job)).status is RunStatus.COMPLETED
    await runner.disable(JobType.PRICE_UPDATE, reason="maintenance")
    later = T0 + timedelta(minutes=5)
    skipped = Tick.for_slot(JobType.PRICE_UPDATE, later, emitted_at=later, reason=TickReason.MANUAL)
    assert (await runner.run(skipped, job)).status is RunStatus.SKIPPED
    await ProjectionRunner(store, [JobsProjection()]).run_once()
    async with store.pool.acquire() as con:
        rows = await job_history(con)
        failed_only = await job_history(con, failed_only=True)
    assert [(r["tick_id"], r["status"], r["error"]) for r in rows] == [
        (skipped.tick_id, "skipped", "disabled"),
        (ran.tick_id, "completed", None),
    ]
    assert failed_only == []
