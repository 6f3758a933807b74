"""The clock service: emits ticks in real time from the exchange calendar.

Each pass decides with :func:`services.clock.schedule.plan_due` at ``now`` (a pure function), publishes
the ticks to fire, then records them (``TickEmitted``) and every skipped slot (``TickSkipped``) in the
event store, stream ``clock-<job_type>``. Publishing comes first: if the clock dies in between, the
restarted clock re-emits the same tick id and JetStream drops the duplicate; recording first could lose a
tick. On start, the last handled slot of each job is the newest of its clock stream and of the last tick
in JetStream, so a restart neither misses a slot (it is caught up per policy) nor doubles one.

Two clocks may run at once: they publish the same tick ids (deduplicated by JetStream) and append the
same event ids (deduplicated by the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from nats.js import JetStreamContext

from eventstore import ANY, EventStore, NewEvent
from eventstore.faults import Backoff, is_retryable
from services.clock import calendar, schedule
from services.clock.calendar_check import CalendarSource, check_calendar
from services.clock.events import ClockBaselineSet, TickEmitted, TickSkipped, clock_stream
from services.clock.schedule import DEFAULT_MAX_LATENESS, JobType, Plan, TickReason
from services.clock.ticks import last_published_tick, publish_tick
from services.core.events import new_event, registry
from services.core.jobs.types import Tick
from services.core.subjects import Subjects

log = logging.getLogger(__name__)

# How many of the newest clock events are read to find the last handled slot.
TAIL = 32


def utc_now() -> datetime:
    return datetime.now(UTC)


async def wait_until(when: datetime, stop: asyncio.Event, now: Callable[[], datetime] = utc_now) -> None:
    """Sleep until ``when`` (wall clock) or until ``stop`` is set."""
    delay = max((when - now()).total_seconds(), 0.0)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)


@dataclass
class PassResult:
    fired: list[Tick] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # tick ids JetStream already had
    skipped: list[schedule.Skip] = field(default_factory=list)


class ClockService:
    def __init__(
        self,
        store: EventStore,
        js: JetStreamContext,
        subjects: Subjects,
        *,
        jobs: tuple[JobType, ...] = tuple(JobType),
        max_lateness: timedelta = DEFAULT_MAX_LATENESS,
        now: Callable[[], datetime] = utc_now,
        sleep_until: Callable[[datetime, asyncio.Event], Awaitable[None]] | None = None,
        max_sleep: timedelta = timedelta(seconds=30),
        calendar_source: CalendarSource | None = None,
    ) -> None:
        """``now`` is the clock's only time source (tests pass a simulated one); ``sleep_until`` waits
        until an instant or until stop is set."""
        self.store = store
        self.js = js
        self.subjects = subjects
        self.jobs = jobs
        self.max_lateness = max_lateness
        self.now = now
        self._sleep_until = sleep_until or self._wait_until
        self.max_sleep = max_sleep
        self.last_handled: dict[JobType, datetime | None] = {}
        # When the broker is Alpaca: its /v2/calendar, compared once per exchange day.
        self.calendar_source = calendar_source
        self._checked_day: date | None = None

    async def _wait_until(self, when: datetime, stop: asyncio.Event) -> None:
        await wait_until(when, stop, self.now)

    async def load(self) -> dict[JobType, datetime | None]:
        """The last handled slot per job, from the clock's log and the tick stream."""
        for job in self.jobs:
            self.last_handled[job] = await self._last_handled(job)
        return dict(self.last_handled)

    async def _last_handled(self, job: JobType) -> datetime | None:
        candidates: list[datetime] = []
        stream = clock_stream(job.value)
        version = await self.store.stream_version(stream)
        if version >= 0:
            async for recorded in self.store.read_stream(stream, from_version=max(0, version - TAIL + 1)):
                event = registry.decode(recorded)
                if isinstance(event, TickEmitted | TickSkipped):
                    candidates.append(event.scheduled_at)
                elif isinstance(event, ClockBaselineSet):
                    candidates.append(event.handled_until)
        published = await last_published_tick(self.js, self.subjects, job)
        if published is not None and published.reason is not TickReason.MANUAL:
            candidates.append(published.scheduled_at)
        return max(candidates) if candidates else None

    async def run_pass(self, now: datetime) -> PassResult:
        """Fire what is due at ``now`` for every job, record fired and skipped slots."""
        result = PassResult()
        await self._check_calendar(now)
        for job in self.jobs:
            if job not in self.last_handled:
                self.last_handled[job] = await self._last_handled(job)
            if self.last_handled[job] is None:
                await self._set_baseline(job, now)
            plan = schedule.plan_due(job, self.last_handled[job], now, max_lateness=self.max_lateness)
            if plan.empty:
                continue
            await self._execute(job, plan, now, result)
        return result

    async def _check_calendar(self, now: datetime) -> None:
        day = calendar.exchange_date(now)
        if self.calendar_source is None or day == self._checked_day:
            return
        try:
            mismatch = await check_calendar(self.store, self.calendar_source, day)
        except Exception as exc:  # the broker being down must not stop the clock; retried next pass
            # One line per outage, not a traceback per pass (a bug still shows its traceback at debug level).
            if not getattr(self, "_calendar_check_failing", False):
                log.warning("calendar cross-check for %s failed (%s); retried at every clock pass until it"
                            " answers", day, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            log.debug("calendar cross-check failure", exc_info=True)
            self._calendar_check_failing = True
            return
        self._calendar_check_failing = False
        self._checked_day = day
        if mismatch is not None:
            log.error("calendar mismatch on %s: %s", day, mismatch.detail)

    async def _set_baseline(self, job: JobType, now: datetime) -> None:
        baseline = now - self.max_lateness
        event = ClockBaselineSet(job_type=job.value, handled_until=baseline, at=now)
        await self.store.append(clock_stream(job.value), [new_event(event, job.value, baseline.isoformat())], ANY)
        self.last_handled[job] = baseline

    async def _execute(self, job: JobType, plan: Plan, now: datetime, result: PassResult) -> None:
        events: list[NewEvent] = []
        for fire in plan.fire:
            tick = Tick.for_slot(job, fire.slot.scheduled_at, emitted_at=now, reason=fire.reason)
            ack = await publish_tick(self.js, self.subjects, tick)
            result.fired.append(tick)
            if ack.duplicate:
                result.duplicates.append(tick.tick_id)
            emitted = TickEmitted(
                job_type=job.value, tick_id=tick.tick_id, scheduled_at=tick.scheduled_at,
                emitted_at=now, reason=fire.reason.value, duplicate=bool(ack.duplicate),
            )
            events.append(new_event(emitted, tick.tick_id))
            log.info("tick %s (%s)%s", tick.tick_id, fire.reason.value, " [duplicate]" if ack.duplicate else "")
        for skip in plan.skip:
            skipped = TickSkipped(
                job_type=job.value, tick_id=skip.slot.tick_id, scheduled_at=skip.slot.scheduled_at,
                reason=skip.reason.value, covered_by=skip.covered_by, decided_at=now,
            )
            events.append(new_event(skipped, skip.slot.tick_id))
            result.skipped.append(skip)
        if plan.skip:
            log.warning("%s: %d missed slot(s) recorded as skipped", job.value, len(plan.skip))
        await self.store.append(clock_stream(job.value), events, ANY)
        handled = [f.slot.scheduled_at for f in plan.fire] + [s.slot.scheduled_at for s in plan.skip]
        self.last_handled[job] = max(handled)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set: a pass, then sleep until the next slot (at most ``max_sleep``)."""
        loaded = False
        backoff = Backoff(0.1, 2.0)
        while not stop.is_set():
            now = self.now()
            try:
                if not loaded:
                    await self.load()
                    loaded = True
                await self.run_pass(now)
            except Exception as exc:
                if not is_retryable(exc):
                    raise  # a bug: the clock stops, and the service host exits with it
                # PostgreSQL or NATS down: the same pass again (ticks are deduplicated by their ids).
                pause = backoff.next()
                log.warning("clock pass failed on a server error (%s); again in %.1fs", exc, pause)
                await self._sleep_until(self.now() + timedelta(seconds=pause), stop)
                continue
            backoff.reset()
            wake = min(schedule.next_wakeup(now, self.jobs), now + self.max_sleep)
            await self._sleep_until(wake, stop)
