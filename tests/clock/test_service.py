"""The real-time clock on real NATS + PostgreSQL, driven by a simulated time source: restart mid-day
(no missed snapshot, no double ticks), two clocks at once (one message per slot), manual ticks."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from eventstore import EventStore
from services.clock import schedule
from services.clock.events import TickEmitted, TickSkipped, clock_stream
from services.clock.schedule import JobType, SkipReason, TickReason
from services.clock.service import ClockService
from services.clock.ticks import manual_tick, publish_tick
from services.core.events import registry
from services.core.jobs.types import Tick, decode_tick
from services.core.subjects import Subjects

DAY = date(2026, 7, 2)  # EDT: open 13:30Z, close 20:00Z, snapshot 20:05Z


def utc(h: int, m: int, s: int = 0, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, h, m, s, tzinfo=UTC)


class SimTime:
    """Simulated time: sleeping jumps to the wake-up instant plus a little lateness; stops at ``until``."""

    def __init__(self, start: datetime, until: datetime, lateness: timedelta = timedelta(seconds=1)) -> None:
        self.t = start
        self.until = until
        self.lateness = lateness

    def now(self) -> datetime:
        return self.t

    async def sleep_until(self, when: datetime, stop: asyncio.Event) -> None:
        self.t = max(self.t, when) + self.lateness
        if self.t >= self.until:
            stop.set()  # the process dies here
        await asyncio.sleep(0)


@pytest.fixture
async def store(pg_dsn: str) -> EventStore:
    s = await EventStore.connect(pg_dsn)
    yield s  # type: ignore[misc]
    await s.close()


@pytest.fixture
async def subjects(nc: NatsClient, subject_prefix: str) -> Subjects:
    s = Subjects(subject_prefix)
    await s.ensure_streams(nc.jetstream())
    return s


async def stream_ticks(js: JetStreamContext, subjects: Subjects) -> list[Tick]:
    info = await js.stream_info(subjects.ticks_stream)
    if info.state.messages == 0:
        return []
    return [
        decode_tick((await js.get_msg(subjects.ticks_stream, seq)).data or b"")
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]


async def clock_log(store: EventStore, job: JobType) -> list[TickEmitted | TickSkipped]:
    events = [registry.decode(e) async for e in store.read_stream(clock_stream(job.value))]
    return [e for e in events if isinstance(e, TickEmitted | TickSkipped)]


async def run_clock(store: EventStore, js: JetStreamContext, subjects: Subjects, sim: SimTime) -> ClockService:
    clock = ClockService(store, js, subjects, now=sim.now, sleep_until=sim.sleep_until)
    await asyncio.wait_for(clock.run(asyncio.Event()), 60)
    return clock


async def test_restart_mid_day_no_missed_snapshot_no_double_ticks(
    store: EventStore, nc: NatsClient, subjects: Subjects
) -> None:
    js = nc.jetstream()
    # first clock: starts before the open, dies at 11:58 New York
    await run_clock(store, js, subjects, SimTime(utc(13, 29), until=utc(15, 58)))
    first = await stream_ticks(js, subjects)
    assert first and {t.reason for t in first} == {TickReason.SCHEDULED}
    # down for 24 minutes; the second clock knows from the log what already fired
    await run_clock(store, js, subjects, SimTime(utc(16, 22, 30), until=utc(20, 30)))
    ticks = await stream_ticks(js, subjects)
    ids = [t.tick_id for t in ticks]
    assert len(ids) == len(set(ids)), "no tick twice in the stream"
    fired_after_restart = ticks[len(first):]
    assert not {t.tick_id for t in fired_after_restart} & {t.tick_id for t in first}

    for job in JobType:
        log = await clock_log(store, job)
        emitted = [e for e in log if isinstance(e, TickEmitted)]
        skipped = [e for e in log if isinstance(e, TickSkipped)]
        assert not any(e.duplicate for e in emitted), f"{job}: the restarted clock re-emitted a tick"
        slots = {schedule.tick_id(job, t) for t in schedule.slots_between(job, utc(13, 29), utc(20, 30))}
        emitted_ids = [e.tick_id for e in emitted]
        skipped_ids = [e.tick_id for e in skipped]
        assert len(emitted_ids) == len(set(emitted_ids))
        # every slot of the day handled exactly once: fired or recorded as skipped
        assert sorted(emitted_ids + skipped_ids) == sorted(slots), job
        assert Counter(t.job_type for t in ticks)[job] == len(emitted_ids)
        missed = {schedule.tick_id(job, t) for t in schedule.slots_between(job, utc(15, 57, 30), utc(16, 21, 30))}
        if job is JobType.STRATEGY_EXECUTION:
            assert set(skipped_ids) == missed and {e.reason for e in skipped} == {SkipReason.STALE}
        elif job is JobType.PORTFOLIO_SNAPSHOT:
            assert emitted_ids == [schedule.tick_id(job, utc(20, 5))] and skipped == []
        else:
            # coalesced into one tick: a catch-up for the newest missed slot, or the fresh slot at restart
            covers = {e.covered_by for e in skipped}
            assert len(covers) == 1
            cover = next(e for e in emitted if e.tick_id in covers)
            catch_up = [e for e in emitted if e.reason == TickReason.CATCH_UP]
            if job is JobType.ORDER_STATUS_CHECK:  # 16:22 (12:22 NY) is fresh at 16:22:30
                assert catch_up == [] and cover.tick_id == schedule.tick_id(job, utc(16, 22))
                assert set(skipped_ids) == missed
            else:  # 5-minute jobs: 16:20 is 2.5 minutes old, nothing fresh
                assert catch_up == [cover] and cover.tick_id == max(missed)
                assert set(skipped_ids) == missed - {cover.tick_id}

    # a third start right after: nothing left to do
    clock = ClockService(store, js, subjects, now=lambda: utc(20, 31))
    result = await clock.run_pass(utc(20, 31))
    assert result.fired == [] and result.skipped == []


async def test_snapshot_fires_once_for_a_close_missed_while_down(
    store: EventStore, nc: NatsClient, subjects: Subjects
) -> None:
    js = nc.jetstream()
    await run_clock(store, js, subjects, SimTime(utc(19, 50), until=utc(19, 59, 30)))
    # down over the close and the snapshot slot; back the next morning (3 July is a holiday: 6 July)
    clock = ClockService(store, js, subjects)
    result = await clock.run_pass(utc(13, 0, day=date(2026, 7, 6)))
    snapshots = [t for t in result.fired if t.job_type is JobType.PORTFOLIO_SNAPSHOT]
    assert [(t.tick_id, t.reason) for t in snapshots] == [
        ("portfolio_snapshot@2026-07-02T20:05:00Z", TickReason.CATCH_UP)
    ]
    again = await ClockService(store, js, subjects).run_pass(utc(13, 0, 30, day=date(2026, 7, 6)))
    assert again.fired == []


async def test_two_clocks_publish_one_message_per_slot(
    store: EventStore, nc: NatsClient, subjects: Subjects
) -> None:
    js = nc.jetstream()
    a = ClockService(store, js, subjects)
    b = ClockService(store, js, subjects)
    now = utc(14, 0, 2)
    await a.load()
    await b.load()
    ra, rb = await asyncio.gather(a.run_pass(now), b.run_pass(now))
    assert len(ra.fired) == len(rb.fired) == 5  # strategy, orders, positions, prices, alerts at 10:00 NY
    assert sorted(ra.duplicates + rb.duplicates) == sorted(t.tick_id for t in ra.fired)
    ticks = await stream_ticks(js, subjects)
    assert sorted(t.tick_id for t in ticks) == sorted(t.tick_id for t in ra.fired)
    # the clock log holds each slot once as well
    log = await clock_log(store, JobType.STRATEGY_EXECUTION)
    assert [e.tick_id for e in log] == ["strategy_execution@2026-07-02T14:00:00Z"]


async def test_duplicate_tick_ids_are_dropped_by_jetstream(nc: NatsClient, subjects: Subjects) -> None:
    js = nc.jetstream()
    tick = manual_tick(JobType.PRICE_UPDATE, datetime(2026, 7, 2, 14, 3, 17, 123456, tzinfo=UTC))
    assert tick.tick_id == "price_update@2026-07-02T14:03:17Z"
    first = await publish_tick(js, subjects, tick)
    second = await publish_tick(js, subjects, tick)
    assert not first.duplicate and second.duplicate
    assert [t.tick_id for t in await stream_ticks(js, subjects)] == [tick.tick_id]
