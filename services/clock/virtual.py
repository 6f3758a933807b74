"""The virtual clock: the same schedule in simulated time, as fast as the consumers keep up.

Slots are taken in time order; all ticks of one instant are published together (``emitted_at`` =
``scheduled_at``: simulated time), then the clock waits until each of them has a recorded end in the job
ledger (``JobExecutionCompleted`` / ``Failed`` / ``Skipped`` on ``jobrun-<tick_id>``) before moving
time forward. It is woken by the job feed (``<prefix>.feed.job.*``, core NATS) and checks the store, so a
lost feed message only costs one poll interval.

Usage::

    vclock = VirtualClock(store, nc, subjects, jobs=tuple(JobType))
    result = await vclock.run(start, end)      # slots with start < t <= end
    result.executions[JobType.PRICE_UPDATE]    # ticks run per job

Use a subject prefix of its own for simulations: the tick subjects are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from eventstore import EventStore
from services.clock import schedule
from services.clock.schedule import JobType, Slot, TickReason
from services.clock.ticks import publish_tick
from services.core.jobs.events import JobExecutionCompleted, JobExecutionFailed, JobExecutionSkipped, jobrun_stream
from services.core.jobs.types import Tick
from services.core.subjects import Subjects

log = logging.getLogger(__name__)

_TERMINAL_TYPES = frozenset(
    cls.__name__ for cls in (JobExecutionCompleted, JobExecutionFailed, JobExecutionSkipped)
)


class VirtualClockStalled(RuntimeError):
    """No recorded end for a tick within the timeout: is a consumer for that job type running?"""


@dataclass
class VirtualRunResult:
    start: datetime
    end: datetime
    ticks: int = 0
    instants: int = 0
    executions: Counter[JobType] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)  # completed / failed / skipped
    seconds: float = 0.0


class _FeedEnd(msgspec.Struct):
    tick_id: str
    status: str


_feed_decoder = msgspec.json.Decoder(_FeedEnd)


class VirtualClock:
    def __init__(
        self,
        store: EventStore,
        nc: NatsClient,
        subjects: Subjects,
        *,
        jobs: tuple[JobType, ...] = tuple(JobType),
        tick_timeout: float = 30.0,
        poll_interval: float = 0.25,
    ) -> None:
        self.store = store
        self.nc = nc
        self.js = nc.jetstream()
        self.subjects = subjects
        self.jobs = jobs
        self.tick_timeout = tick_timeout
        self.poll_interval = poll_interval
        self._ended: dict[str, str] = {}
        self._wake = asyncio.Event()

    async def _on_feed(self, msg: Msg) -> None:
        with contextlib.suppress(msgspec.DecodeError):
            end = _feed_decoder.decode(msg.data)
            self._ended[end.tick_id] = end.status
            self._wake.set()

    async def _recorded_end(self, tick_id: str) -> str | None:
        """The ledger's end of this tick's run, read from the store (None while it is not recorded)."""
        status: str | None = None
        async for e in self.store.read_stream(jobrun_stream(tick_id)):
            if e.type in _TERMINAL_TYPES:
                status = e.type.removeprefix("JobExecution").lower()
        return status

    async def _wait_recorded(self, tick_ids: list[str]) -> dict[str, str]:
        pending = set(tick_ids)
        ends: dict[str, str] = {}
        deadline = time.monotonic() + self.tick_timeout
        while True:
            self._wake.clear()
            for tick_id in list(pending):
                if tick_id in self._ended:
                    ends[tick_id] = self._ended.pop(tick_id)
                    pending.discard(tick_id)
            if not pending:
                return ends
            remaining = deadline - time.monotonic()
            woke = False
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    woke = await asyncio.wait_for(self._wake.wait(), min(self.poll_interval, remaining))
            if not woke:
                # no feed message for a while: the store is the record (feeds are best effort)
                for tick_id in list(pending):
                    status = await self._recorded_end(tick_id)
                    if status is not None:
                        ends[tick_id] = status
                        pending.discard(tick_id)
                if pending and time.monotonic() >= deadline:
                    raise VirtualClockStalled(
                        f"no recorded job run for {sorted(pending)} after {self.tick_timeout:.0f}s: "
                        "is a consumer for that job type running?"
                    )

    async def run(
        self,
        start: datetime,
        end: datetime,
        *,
        on_instant: Callable[[datetime, list[Tick]], None] | None = None,
    ) -> VirtualRunResult:
        """Emit every slot with ``start < t <= end`` in simulated time; returns what ran."""
        result = VirtualRunResult(start=start, end=end)
        t0 = time.perf_counter()
        sub = await self.nc.subscribe(f"{self.subjects.prefix}.feed.job.*", cb=self._on_feed)
        try:
            slots = schedule.all_slots_between(start, end, self.jobs)
            for instant, group in itertools.groupby(slots, key=lambda s: s.scheduled_at):
                ticks = [self._tick(slot) for slot in group]
                for tick in ticks:
                    await publish_tick(self.js, self.subjects, tick)
                if on_instant is not None:
                    on_instant(instant, ticks)
                ends = await self._wait_recorded([t.tick_id for t in ticks])
                result.instants += 1
                result.ticks += len(ticks)
                result.executions.update(t.job_type for t in ticks)
                result.outcomes.update(ends.values())
        finally:
            await sub.unsubscribe()
        result.seconds = time.perf_counter() - t0
        return result

    @staticmethod
    def _tick(slot: Slot) -> Tick:
        return Tick.for_slot(slot.job_type, slot.scheduled_at, emitted_at=slot.scheduled_at,
                             reason=TickReason.SCHEDULED)
