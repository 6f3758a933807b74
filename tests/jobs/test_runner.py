"""JobRunner on a real PostgreSQL (and NATS for the feeds): idempotency per tick, the circuit breaker,
operator actions, takeover of abandoned attempts, and the read models (live == rebuilt)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from eventstore import NO_STREAM, EventStore, NewEvent
from eventstore.projections import ProjectionRunner
from services.core.events import event_id_for, new_event, registry
from services.core.jobs.breaker import JobHealth
from services.core.jobs.events import (
    JobExecutionFailed,
    JobExecutionStarted,
    JobStatus,
    job_stream,
    jobrun_stream,
)
from services.core.jobs.lease import RunLeases
from services.core.jobs.projection import JobsProjection, job_history, job_stats
from services.core.jobs.runner import JobContext, JobRunner, RunStatus, safe_error
from services.core.jobs.types import JobType, Tick, TickReason
from services.core.subjects import Subjects
from tests.waiting import until

T0 = datetime(2026, 7, 2, 13, 30, tzinfo=UTC)


def tick(n: int, job: JobType = JobType.PRICE_UPDATE, reason: TickReason = TickReason.SCHEDULED) -> Tick:
    at = T0 + timedelta(minutes=5 * n)
    return Tick.for_slot(job, at, emitted_at=at, reason=reason)


class Job:
    """A trivial job handler: counts calls, fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.failing = False

    async def __call__(self, ctx: JobContext) -> dict[str, int]:
        self.calls.append(ctx.tick.tick_id)
        if self.failing:
            raise RuntimeError("broker down: https://key:s3cret@api.example.com token=abc123")
        return {"symbols_updated": 3, "minute": ctx.scheduled_at.minute}


def gauges(job_type: str) -> tuple[float | None, str]:
    """The job's consecutive failures and status, as the Prometheus metrics of this process show them."""
    failures = REGISTRY.get_sample_value("openbell_job_consecutive_failures", {"job_type": job_type})
    statuses = [
        status.value
        for status in JobStatus
        if REGISTRY.get_sample_value("openbell_job_status", {"job_type": job_type, "status": status.value}) == 1
    ]
    assert len(statuses) == 1, statuses
    return failures, statuses[0]


async def types_in(store: EventStore, stream: str) -> list[str]:
    return [e.type async for e in store.read_stream(stream)]


async def test_run_records_and_redelivery_does_not_rerun(store: EventStore) -> None:
    runner, job = JobRunner(store), Job()
    first = await runner.run(tick(0), job)
    assert first.status is RunStatus.COMPLETED
    assert first.counters == {"symbols_updated": 3, "minute": 30}
    assert first.attempt == 1 and first.duration_ms is not None
    again = await runner.run(tick(0), job)
    assert again.status is RunStatus.DUPLICATE
    assert job.calls == [tick(0).tick_id]
    assert await types_in(store, jobrun_stream(tick(0).tick_id)) == ["JobExecutionStarted", "JobExecutionCompleted"]
    # a healthy job has nothing in its health stream
    assert await store.stream_version(job_stream("price_update")) == -1


async def test_two_workers_same_tick_run_once(store: EventStore) -> None:
    gate = asyncio.Event()
    calls: list[str] = []

    async def slow(ctx: JobContext) -> dict[str, int]:
        calls.append(ctx.tick.tick_id)
        await gate.wait()
        return {"n": 1}

    a, b = JobRunner(store, worker="a"), JobRunner(store, worker="b")
    ta = asyncio.create_task(a.run(tick(1), slow))
    tb = asyncio.create_task(b.run(tick(1), slow))
    await until(lambda: calls and (ta.done() or tb.done()), 10, "one worker in the job, the other turned away")
    gate.set()
    outcomes = sorted([(await ta).status, (await tb).status])
    assert calls == [tick(1).tick_id]
    assert RunStatus.COMPLETED in outcomes
    assert set(outcomes) <= {RunStatus.COMPLETED, RunStatus.IN_PROGRESS, RunStatus.DUPLICATE}


async def test_breaker_trips_at_exactly_ten_and_resets_on_enable(
    store: EventStore, nc: NatsClient, subject_prefix: str
) -> None:
    subjects = Subjects(subject_prefix)
    notices: list[dict[str, Any]] = []
    feed: list[dict[str, Any]] = []

    async def on_notice(msg: Msg) -> None:
        notices.append(msgspec.json.decode(msg.data))

    async def on_feed(msg: Msg) -> None:
        feed.append(msgspec.json.decode(msg.data))

    sub = await nc.subscribe(subjects.feed("notification", "job_circuit_opened"), cb=on_notice)
    fsub = await nc.subscribe(subjects.feed("job", "price_update"), cb=on_feed)
    # two workers share the streak: it lives in the log, not in memory
    workers = [JobRunner(store, nc=nc, subjects=subjects, worker=w) for w in ("w1", "w2")]
    job = Job()
    job.failing = True
    n = 0
    for i in range(9):
        out = await workers[i % 2].run(tick(n), job)
        n += 1
        assert out.status is RunStatus.FAILED
        assert "s3cret" not in (out.error or "") and "abc123" not in (out.error or "")
    health, _, _ = await workers[0].health(JobType.PRICE_UPDATE)
    assert health == JobHealth(JobStatus.ENABLED, 9)
    # a success resets the streak: 9 more failures still do not trip it
    job.failing = False
    assert (await workers[1].run(tick(n), job)).status is RunStatus.COMPLETED
    n += 1
    job.failing = True
    for i in range(9):
        assert (await workers[i % 2].run(tick(n), job)).status is RunStatus.FAILED
        n += 1
    assert (await workers[0].health("price_update"))[0] == JobHealth(JobStatus.ENABLED, 9)
    assert notices == []
    # the 10th consecutive failure trips it
    assert (await workers[1].run(tick(n), job)).status is RunStatus.FAILED
    n += 1
    assert (await workers[0].health("price_update"))[0] == JobHealth(JobStatus.ERROR, 10)
    assert gauges("price_update") == (10, "error")  # what the metrics show an operator
    calls_before = len(job.calls)
    skipped = await workers[0].run(tick(n), job)
    n += 1
    assert skipped.status is RunStatus.SKIPPED
    assert len(job.calls) == calls_before, "an open breaker does not run the job"
    types = await types_in(store, job_stream("price_update"))
    assert types.count("JobCircuitOpened") == 1
    await nc.flush()
    await until(lambda: notices and feed and feed[-1]["status"] == "skipped", 10, "the notice and the skipped feed")
    assert len(notices) == 1 and notices[0]["consecutive_failures"] == 10
    assert [f["status"] for f in feed][-2:] == ["failed", "skipped"]
    # other job types are unaffected
    assert (await workers[0].run(tick(0, JobType.POSITION_SYNC), job)).status is RunStatus.FAILED
    # operator enables: the breaker closes and the streak resets
    assert await workers[1].enable("price_update", by="test") is True
    assert await workers[0].enable("price_update", by="test") is False  # already healthy
    assert (await workers[0].health("price_update"))[0] == JobHealth(JobStatus.ENABLED, 0)
    job.failing = False
    assert (await workers[0].run(tick(n), job)).status is RunStatus.COMPLETED
    assert gauges("price_update") == (0, "enabled")
    await sub.unsubscribe()
    await fsub.unsubscribe()


async def test_disable_skips_then_enable_runs(store: EventStore) -> None:
    runner, job = JobRunner(store), Job()
    assert await runner.disable(JobType.STRATEGY_EXECUTION, reason="maintenance") is True
    assert await runner.disable(JobType.STRATEGY_EXECUTION) is False
    t = Tick.for_slot(JobType.STRATEGY_EXECUTION, T0, emitted_at=T0, reason=TickReason.MANUAL)
    out = await runner.run(t, job)
    assert out.status is RunStatus.SKIPPED and job.calls == []
    events = [registry.decode(e) async for e in store.read_stream(jobrun_stream(t.tick_id))]
    assert events[0].cause == "disabled" and events[0].reason == "manual"
    # the skip is final for that tick, even after enabling
    await runner.enable(JobType.STRATEGY_EXECUTION)
    assert (await runner.run(t, job)).status is RunStatus.DUPLICATE
    t2 = Tick.for_slot(
        JobType.STRATEGY_EXECUTION, T0 + timedelta(minutes=15), emitted_at=T0, reason=TickReason.SCHEDULED
    )
    assert (await runner.run(t2, job)).status is RunStatus.COMPLETED


async def test_abandoned_attempt_is_taken_over(store: EventStore) -> None:
    t = tick(3)
    # a worker started the tick and died (no terminal event)
    dead = JobExecutionStarted(
        job_type=t.job_type.value, tick_id=t.tick_id, scheduled_for=t.scheduled_at, reason="scheduled",
        attempt=1, started_at=datetime.now(UTC), worker="dead",
    )
    # its lease, renewed no more, runs out after a second
    assert await RunLeases(store, "dead", timedelta(seconds=1)).acquire(t.tick_id)
    await store.append(jobrun_stream(t.tick_id), [new_event(dead, t.tick_id, "1")], -1)
    job = Job()
    other = JobRunner(store, worker="other")
    assert (await other.run(t, job)).status is RunStatus.IN_PROGRESS  # its lease is alive: it may complete
    assert job.calls == []
    await asyncio.sleep(1.1)  # the dead worker's one-second lease runs out (the wall clock is what leases use)
    out = await other.run(t, job)
    assert out.status is RunStatus.COMPLETED and out.attempt == 2
    assert job.calls == [t.tick_id]


async def test_crash_between_terminal_and_health_is_repaired(store: EventStore) -> None:
    t = tick(4)
    started = JobExecutionStarted(
        job_type=t.job_type.value, tick_id=t.tick_id, scheduled_for=t.scheduled_at, reason="scheduled",
        attempt=1, started_at=T0, worker="dead",
    )
    failed = JobExecutionFailed(
        job_type=t.job_type.value, tick_id=t.tick_id, scheduled_for=t.scheduled_at, attempt=1,
        started_at=T0, failed_at=T0, duration_ms=1.0, error="RuntimeError: boom",
    )
    crashed = [new_event(started, t.tick_id, "1"), new_event(failed, t.tick_id, "1")]
    await store.append(jobrun_stream(t.tick_id), crashed)
    runner, job = JobRunner(store), Job()
    assert (await runner.run(t, job)).status is RunStatus.DUPLICATE
    assert (await runner.health("price_update"))[0] == JobHealth(JobStatus.ENABLED, 1)
    # a second redelivery does not count it twice
    assert (await runner.run(t, job)).status is RunStatus.DUPLICATE
    assert (await runner.health("price_update"))[0] == JobHealth(JobStatus.ENABLED, 1)
    assert job.calls == []


async def _table(store: EventStore, sql: str) -> list[tuple[Any, ...]]:
    async with store.pool.acquire() as con:
        return [tuple(r) for r in await con.fetch(sql)]


async def test_projection_live_equals_rebuilt(store: EventStore) -> None:
    projections = ProjectionRunner(store, [JobsProjection()])
    await projections.run_once()
    runner, job = JobRunner(store, threshold=3), Job()
    for i in range(4):
        await runner.run(tick(i), job)
        await projections.run_once()  # live: applied in small batches as it goes
    job.failing = True
    for i in range(4, 8):
        await runner.run(tick(i), job)
    await runner.run(tick(0, JobType.STRATEGY_EXECUTION, TickReason.MANUAL), job)
    await runner.enable(JobType.PRICE_UPDATE)
    job.failing = False
    await runner.run(tick(8), job)
    await runner.disable(JobType.ALERT_PRICE_CHECK)
    await runner.run(tick(1, JobType.ALERT_PRICE_CHECK), job)
    await projections.run_once()

    async with store.pool.acquire() as con:
        stats = {row["job_type"]: row for row in await job_stats(con)}
        history = await job_history(con, job_type="price_update", limit=100)
        failed = await job_history(con, failed_only=True, limit=100)
    assert len(stats) == 6
    pu = stats["price_update"]
    assert pu["status"] == "enabled"
    # threshold 3: ticks 4, 5, 6 fail and open the breaker, tick 7 is skipped, tick 8 runs after enable
    assert pu["total_runs"] == 8 and pu["total_failures"] == 3 and pu["total_skipped"] == 1
    assert pu["consecutive_failures"] == 0
    assert pu["failure_rate"] == pytest.approx(3 / 8)
    assert pu["last_error"].startswith("RuntimeError: broker down")
    assert pu["next_run_at"] == tick(9).scheduled_at
    assert pu["avg_duration_ms"] is not None and pu["avg_duration_ms"] >= 0
    assert "every 5 min" in pu["schedule"]
    se = stats["strategy_execution"]
    assert se["status"] == "enabled" and se["total_failures"] == 1 and se["consecutive_failures"] == 1
    assert stats["alert_price_check"]["status"] == "disabled"
    assert stats["alert_price_check"]["total_skipped"] == 1
    assert len(history) == 8 + 1  # the runs and the skipped tick 7 (status skipped, its cause)
    assert [h["error"] for h in history if h["status"] == "skipped"] == ["circuit_open"]
    assert history[0]["tick_id"] == tick(8).tick_id and history[0]["status"] == "completed"
    assert history[0]["metadata"] == {"symbols_updated": 3, "minute": 10}
    assert {h["status"] for h in failed} == {"failed"} and len(failed) == 4

    scheduled = "SELECT * FROM scheduled_jobs ORDER BY job_type"
    executions = "SELECT * FROM job_executions ORDER BY id"
    live = (await _table(store, scheduled), await _table(store, executions))
    await projections.rebuild("jobs")
    rebuilt = (await _table(store, scheduled), await _table(store, executions))
    assert rebuilt == live
    assert len(live[1]) == 8 + 1  # price_update runs + the manual strategy run


def test_safe_error_redacts_secrets() -> None:
    text = safe_error(ValueError("postgresql://bell:hunter2@db:5432/x failed; api_key=AKXYZ, secret: shh"))
    assert "hunter2" not in text and "AKXYZ" not in text and "shh" not in text
    assert text.startswith("ValueError: postgresql://***@db:5432/x")
    assert len(safe_error(RuntimeError("x" * 10_000))) <= 2000


async def test_prefetch_reaches_the_job_and_a_repeated_tick_cancels_it(store: EventStore) -> None:
    runner = JobRunner(store)
    seen: list[Any] = []
    started: list[str] = []
    release = asyncio.Event()

    async def prefetch(t: Tick) -> str:
        started.append(t.tick_id)
        await release.wait()
        return f"read for {t.tick_id}"

    async def job(ctx: JobContext) -> dict[str, int]:
        assert ctx.prefetched is not None
        release.set()  # the read may still be going on while the ledger records the start
        seen.append(await ctx.prefetched)
        return {"n": 1}

    first = await runner.run(tick(0), job, prefetch=prefetch)
    assert first.status is RunStatus.COMPLETED and seen == [f"read for {tick(0).tick_id}"]

    release.clear()
    again = await runner.run(tick(0), job, prefetch=prefetch)  # a redelivery: nothing is run
    assert again.status is RunStatus.DUPLICATE
    assert started == [tick(0).tick_id, tick(0).tick_id] and len(seen) == 1
    await asyncio.sleep(0)  # the cancelled read ends without an "exception never retrieved"


async def test_a_failing_prefetch_is_a_failed_run(store: EventStore) -> None:
    runner = JobRunner(store)

    async def prefetch(t: Tick) -> None:
        raise LookupError("read model unavailable")

    async def job(ctx: JobContext) -> dict[str, int]:
        assert ctx.prefetched is not None
        await ctx.prefetched
        return {"n": 1}

    outcome = await runner.run(tick(1), job, prefetch=prefetch)
    assert outcome.status is RunStatus.FAILED and "read model unavailable" in (outcome.error or "")


async def test_a_job_with_idempotent_effects_runs_while_its_start_is_recorded(store: EventStore) -> None:
    """Two workers get the same tick at once: both may run the job (its effects are idempotent by their
    own ids), but the log records one start and one outcome."""
    calls: list[str] = []

    async def job(ctx: JobContext) -> dict[str, int]:
        calls.append(ctx.tick.tick_id)
        await asyncio.sleep(0.01)
        return {"n": 1}

    a, b = JobRunner(store, worker="a"), JobRunner(store, worker="b")
    outcomes = await asyncio.gather(
        a.run(tick(0), job, idempotent_effects=True), b.run(tick(0), job, idempotent_effects=True)
    )
    statuses = sorted(o.status.value for o in outcomes)
    assert statuses.count("completed") == 1, statuses
    assert set(statuses) <= {"completed", "superseded", "in_progress", "duplicate"}
    assert await types_in(store, jobrun_stream(tick(0).tick_id)) == ["JobExecutionStarted", "JobExecutionCompleted"]
    assert 1 <= len(calls) <= 2

    failing = Job()
    failing.failing = True
    failed = await a.run(tick(1), failing, idempotent_effects=True)
    assert failed.status is RunStatus.FAILED
    assert await types_in(store, jobrun_stream(tick(1).tick_id)) == ["JobExecutionStarted", "JobExecutionFailed"]
    again = await a.run(tick(0), job, idempotent_effects=True)  # a redelivery: not run
    assert again.status is RunStatus.DUPLICATE and len(calls) <= 2


def effect(stream: str, n: int = 0) -> tuple[str, list[NewEvent], int]:
    """One effect for ``JobContext.complete``: a single event, its id derived from its stream."""
    return (stream, [NewEvent(type="EffectWritten", data={"n": n}, event_id=event_id_for("effect", stream))], NO_STREAM)


async def commits_of(dsn: str, streams: list[str]) -> dict[str, int]:
    """The transaction that wrote each stream's events (one id per stream: they are written once)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT DISTINCT stream_id, tx_id::text::bigint AS tx FROM events WHERE stream_id = ANY($1)", streams
        )
    finally:
        await conn.close()
    assert len(rows) == len({r["stream_id"] for r in rows}), "a stream was written by several commits"
    return {r["stream_id"]: r["tx"] for r in rows}


async def test_complete_records_start_effects_and_completion_in_one_commit(store: EventStore, pg_dsn: str) -> None:
    """A job with idempotent effects that ends through ``complete`` within the grace: its start, its last
    effects and its completion are one commit, and the counters it gave are the run's."""
    runner = JobRunner(store, worker="a", start_grace=5.0)
    answers: list[bool] = []

    async def job(ctx: JobContext) -> dict[str, int]:
        assert ctx.complete is not None
        # nothing of the run is in the log yet: its start waits for the completion
        assert await types_in(store, jobrun_stream(ctx.tick.tick_id)) == []
        answers.append(await ctx.complete([effect("effect-a"), effect("effect-b")], {"n": 2}))
        return {"n": 2}

    outcome = await runner.run(tick(0), job, idempotent_effects=True)
    assert outcome.status is RunStatus.COMPLETED and outcome.counters == {"n": 2} and answers == [True]
    run = jobrun_stream(tick(0).tick_id)
    assert await types_in(store, run) == ["JobExecutionStarted", "JobExecutionCompleted"]
    commits = await commits_of(pg_dsn, [run, "effect-a", "effect-b"])
    assert len(set(commits.values())) == 1, commits
    assert (await runner.run(tick(0), job, idempotent_effects=True)).status is RunStatus.DUPLICATE
    assert answers == [True]


async def test_complete_after_the_grace_appends_to_the_recorded_start(store: EventStore, pg_dsn: str) -> None:
    """A run longer than the grace is recorded as started on its own; ``complete`` then appends the effects
    and the completion after that start, in one commit of their own."""
    runner = JobRunner(store, worker="a", start_grace=0.05)
    run = jobrun_stream(tick(1).tick_id)

    async def job(ctx: JobContext) -> dict[str, int]:
        assert ctx.complete is not None

        async def started() -> bool:  # the start is appended once the grace ends
            return await types_in(store, run) == ["JobExecutionStarted"]

        await until(started, 2, "the start appended after the grace", interval=0.01)
        assert await ctx.complete([effect("effect-late")], {"n": 1})
        return {"n": 1}

    outcome = await runner.run(tick(1), job, idempotent_effects=True)
    assert outcome.status is RunStatus.COMPLETED and outcome.counters == {"n": 1}
    events = [e async for e in store.read_stream(run)]
    assert [e.type for e in events] == ["JobExecutionStarted", "JobExecutionCompleted"]
    conn = await asyncpg.connect(pg_dsn)
    try:
        tx = {
            r["stream_id"] + "/" + r["event_type"]: r["tx"]
            for r in await conn.fetch("SELECT stream_id, event_type, tx_id::text::bigint AS tx FROM events")
        }
    finally:
        await conn.close()
    assert tx[f"{run}/JobExecutionCompleted"] == tx["effect-late/EffectWritten"]
    assert tx[f"{run}/JobExecutionStarted"] != tx["effect-late/EffectWritten"]


async def test_complete_declines_when_an_effect_exists_and_the_run_records_as_usual(store: EventStore) -> None:
    """An effect whose stream exists already (another run wrote it differently): nothing of the atomic
    append is written, ``complete`` answers False, and the run is recorded as the job ends."""
    await store.append("effect-taken", [NewEvent(type="EffectWritten", data={"n": 9}, event_id=uuid.uuid4())])
    runner = JobRunner(store, worker="a", start_grace=5.0)
    answers: list[bool] = []

    async def job(ctx: JobContext) -> dict[str, int]:
        assert ctx.complete is not None
        answers.append(await ctx.complete([effect("effect-free"), effect("effect-taken")], {"n": 2}))
        return {"n": 0}

    outcome = await runner.run(tick(2), job, idempotent_effects=True)
    assert answers == [False]
    assert outcome.status is RunStatus.COMPLETED and outcome.counters == {"n": 0}
    assert await store.stream_version("effect-free") == -1  # atomic: the free stream was not written either
    events = [registry.decode(e) async for e in store.read_stream(jobrun_stream(tick(2).tick_id))]
    assert [type(e).__name__ for e in events] == ["JobExecutionStarted", "JobExecutionCompleted"]
    assert events[1].counters == {"n": 0}


async def test_two_workers_completing_the_same_tick_write_it_once(store: EventStore) -> None:
    """Two workers run the same tick at once, each ending through ``complete`` with the same effects: the
    log holds one start, one completion and the effects once; one run completes, the other is dropped."""
    both_running = asyncio.Barrier(2)

    async def job(ctx: JobContext) -> dict[str, int]:
        assert ctx.complete is not None
        await both_running.wait()
        await ctx.complete([effect("effect-shared")], {"n": 1})
        return {"n": 1}

    # Leases keep a second worker off a run in progress; two runs at once still happen when a worker froze
    # past its lease and wakes up while another took over. One lease holder for both lets them overlap here.
    a, b = JobRunner(store, worker="a", start_grace=5.0), JobRunner(store, worker="a", start_grace=5.0)
    outcomes = await asyncio.gather(
        a.run(tick(3), job, idempotent_effects=True), b.run(tick(3), job, idempotent_effects=True)
    )
    statuses = sorted(o.status.value for o in outcomes)
    assert statuses == ["completed", "superseded"], statuses
    assert await types_in(store, jobrun_stream(tick(3).tick_id)) == ["JobExecutionStarted", "JobExecutionCompleted"]
    assert await types_in(store, "effect-shared") == ["EffectWritten"]


async def test_a_cancelled_run_in_its_grace_records_nothing(store: EventStore) -> None:
    """A shutdown during the grace: the start was never appended, so the tick's next delivery runs it."""
    runner = JobRunner(store, worker="a", start_grace=5.0)
    entered = asyncio.Event()

    async def hanging(ctx: JobContext) -> dict[str, int]:
        entered.set()
        await asyncio.sleep(60)
        return {}

    task = asyncio.create_task(runner.run(tick(4), hanging, idempotent_effects=True))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)  # nothing is recorded after the cancel either
    assert await types_in(store, jobrun_stream(tick(4).tick_id)) == []
    job = Job()
    assert (await runner.run(tick(4), job, idempotent_effects=True)).status is RunStatus.COMPLETED
