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

Same seed, same run: after an instant's runs are recorded, the clock also waits until the system is quiet
before it moves time forward: the relay has published everything in the log, and no durable consumer of
the events or work streams has a message pending or in hand (fills booked, read models current). What the
next tick's jobs see then depends only on the ticks before it, never on how fast each process was, so a
run in one process or many, loaded or not, with or without faults, makes the same decisions.

A restarted virtual clock resumes where the ledger is: it runs from the start again, and an instant whose
ticks all have a recorded end is passed without publishing (``resume``), so a whole stack of processes
(``openbell serve ... --virtual``, with ``openbell serve clock --virtual --from DATE --days N``) survives
the clock's own crash as well as its consumers'.
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
from datetime import date, datetime, timedelta

import asyncpg
import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from eventstore import EventStore
from services.clock import calendar, schedule
from services.clock.schedule import JobType, Slot, TickReason
from services.clock.ticks import publish_tick
from services.core.jobs.events import JobExecutionCompleted, JobExecutionFailed, JobExecutionSkipped, jobrun_stream
from services.core.jobs.types import Tick
from services.core.subjects import Subjects

log = logging.getLogger(__name__)

_TERMINAL_TYPES = frozenset(
    cls.__name__ for cls in (JobExecutionCompleted, JobExecutionFailed, JobExecutionSkipped)
)


def virtual_span(first_day: date, days: int) -> tuple[datetime, datetime]:
    """The instants a virtual run over ``days`` trading sessions from ``first_day`` (or the next session)
    covers: from a minute before the first open to ten minutes after the last close (the snapshot)."""
    if days < 1:
        raise ValueError(f"--days must be at least 1, not {days}")
    sessions = list(itertools.islice(calendar.sessions_from(first_day), days))
    return sessions[0].open - timedelta(minutes=1), sessions[-1].close + timedelta(minutes=10)


# What a restart of NATS or PostgreSQL raises at the clock while it is down: the clock waits it out.
_SERVER_DOWN = (
    OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
    nats.errors.Error,
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
    resumed_instants: int = 0  # instants a previous run of the clock had already seen through
    seconds: float = 0.0
    quiet_seconds: float = 0.0  # of ``seconds``, waiting for the system to be quiet after the runs


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
        quiet_poll: float = 0.002,
        settle: bool = True,
    ) -> None:
        """``settle``: after each instant, wait until the system is quiet (see the module docstring);
        False only where repeatability is not the point and the time is (a month of position checks)."""
        self.store = store
        self.nc = nc
        self.js = nc.jetstream()
        self.subjects = subjects
        self.jobs = jobs
        self.tick_timeout = tick_timeout
        self.poll_interval = poll_interval
        self.quiet_poll = quiet_poll
        self.settle = settle
        self._ended: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._noisy_warned = False

    async def _on_feed(self, msg: Msg) -> None:
        with contextlib.suppress(msgspec.DecodeError):
            end = _feed_decoder.decode(msg.data)
            self._ended[end.tick_id] = end.status
            self._wake.set()

    async def _recorded_end(self, tick_id: str) -> str | None:
        """The ledger's end of this tick's run, read from the store (None while it is not recorded, or
        while the database cannot be read: the next poll asks again)."""
        status: str | None = None
        try:
            async for e in self.store.read_stream(jobrun_stream(tick_id)):
                if e.type in _TERMINAL_TYPES:
                    status = e.type.removeprefix("JobExecution").lower()
        except _SERVER_DOWN as exc:
            log.warning("cannot read the job ledger (%s); asking again", type(exc).__name__)
            return None
        return status

    async def _publish(self, tick: Tick) -> None:
        """Publish until JetStream has it (a restart of NATS is waited out, up to the tick timeout)."""
        deadline = time.monotonic() + self.tick_timeout
        delay = 0.1
        while True:
            try:
                await publish_tick(self.js, self.subjects, tick)
                return
            except _SERVER_DOWN as exc:
                if time.monotonic() > deadline:
                    raise VirtualClockStalled(
                        f"could not publish {tick.tick_id} for {self.tick_timeout:.0f}s: {type(exc).__name__}"
                    ) from None
                log.warning("publishing %s failed (%s); retrying", tick.tick_id, type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

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
        resume: bool = False,
    ) -> VirtualRunResult:
        """Emit every slot with ``start < t <= end`` in simulated time; returns what ran. With ``resume``,
        the leading instants whose ticks all have a recorded end already are passed without publishing."""
        result = VirtualRunResult(start=start, end=end)
        t0 = time.perf_counter()
        sub = await self.nc.subscribe(f"{self.subjects.prefix}.feed.job.*", cb=self._on_feed)
        try:
            slots = schedule.all_slots_between(start, end, self.jobs)
            resuming = resume
            for instant, group in itertools.groupby(slots, key=lambda s: s.scheduled_at):
                ticks = [self._tick(slot) for slot in group]
                ends = await self._all_recorded(ticks) if resuming else None
                if ends is None:
                    resuming = False
                    for tick in ticks:
                        await self._publish(tick)
                    if on_instant is not None:
                        on_instant(instant, ticks)
                    ends = await self._wait_recorded([t.tick_id for t in ticks])
                    if self.settle:
                        quiet_from = time.perf_counter()
                        await self._wait_quiet(instant)
                        result.quiet_seconds += time.perf_counter() - quiet_from
                else:
                    result.resumed_instants += 1
                result.instants += 1
                result.ticks += len(ticks)
                result.executions.update(t.job_type for t in ticks)
                result.outcomes.update(ends.values())
        finally:
            await sub.unsubscribe()
        result.seconds = time.perf_counter() - t0
        log.info("virtual run: %d instants in %.1fs, %.1fs of it waiting for quiet", result.instants,
                 result.seconds, result.quiet_seconds)
        return result

    async def _busy(self) -> str | None:
        """What is still moving (None when the system is quiet): the relay behind the log, or a durable
        consumer of the events or work streams with messages pending or delivered and not yet acknowledged
        (a handler acknowledges after its effects are appended, so in-flight work shows here). The three
        questions are asked at once: this runs after every instant."""
        relay_behind, *consumers = await asyncio.gather(
            self._relay_behind(),
            self.js.consumers_info(self.subjects.events_stream),
            self.js.consumers_info(self.subjects.work_stream),
        )
        if relay_behind:
            # The relay stores its position when it finds nothing more to publish; wake it now (an append
            # notice without a position) rather than wait for its idle poll.
            await self.nc.publish(f"{self.subjects.prefix}.store.appended", b"virtual-clock:")
            return "the relay behind the log"
        for infos in consumers:
            for info in infos:
                if info.num_pending or info.num_ack_pending:
                    return f"{info.name}: {info.num_pending} pending, {info.num_ack_pending} in hand"
        return None

    async def _relay_behind(self) -> bool:
        """Whether committed events follow the relay's stored position in commit order (not: whether its
        position is below the highest one: transactions commit out of position order, so the last event
        committed may have a lower position than another, and the relay that published it is done). False
        when no relay ever ran for this prefix."""
        return bool(await self.store.checkpoints_behind([f"relay:{self.subjects.prefix}"]))

    async def _wait_quiet(self, instant: datetime) -> None:
        """Until :meth:`_busy` says nothing moves (see the module docstring). A consumer that nobody runs
        any more would keep its messages pending for ever: after the tick timeout the clock warns once and
        goes on, rather than stall (the run is then no longer guaranteed to repeat)."""
        deadline = time.monotonic() + self.tick_timeout
        delay = self.quiet_poll
        while True:
            try:
                busy = await self._busy()
            except _SERVER_DOWN as exc:  # a restart: ask again
                busy = f"servers unavailable ({type(exc).__name__})"
            if busy is None:
                return
            log.debug("virtual %s: waiting for %s", instant.isoformat(), busy)
            if time.monotonic() >= deadline:
                if not self._noisy_warned:
                    self._noisy_warned = True
                    log.warning("virtual %s: not quiet after %.0fs (%s); moving on", instant.isoformat(),
                                self.tick_timeout, busy)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def _all_recorded(self, ticks: list[Tick]) -> dict[str, str] | None:
        """Each tick's recorded end, or None as soon as one has none yet."""
        ends: dict[str, str] = {}
        for tick in ticks:
            status = await self._recorded_end(tick.tick_id)
            if status is None:
                return None
            ends[tick.tick_id] = status
        return ends

    @staticmethod
    def _tick(slot: Slot) -> Tick:
        return Tick.for_slot(slot.job_type, slot.scheduled_at, emitted_at=slot.scheduled_at,
                             reason=TickReason.SCHEDULED)
