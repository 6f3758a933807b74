"""JobRunner: runs one job for one tick and records it in the event log (the job ledger).

Usage by a tick consumer (see :func:`services.core.jobs.consumer.subscribe_ticks` for the wiring)::

    runner = JobRunner(store, nc=nc, subjects=Subjects(prefix))

    async def price_update(ctx: JobContext) -> dict[str, int]:
        ...  # decide with ctx.scheduled_at, never the wall clock
        return {"symbols_updated": 12}

    outcome = await runner.run(tick, price_update)

Idempotency: the first ``JobExecutionStarted`` of a tick is appended with ``NO_STREAM`` on
``jobrun-<tick_id>``, so two workers cannot both start it; once a terminal event (completed, failed,
skipped) is stored, a redelivered tick is acknowledged without running again.

Takeover: a worker holds the tick's lease (:mod:`.lease`, renewed every ``lease / 3``) while it runs the
tick. A started run with no terminal event whose lease ran out (its worker was killed, or froze) is taken
over at once by the next delivery, as attempt n+1; while the lease is alive the run is IN_PROGRESS (the
consumer waits for it, and never dead-letters the tick meanwhile).

Servers down: a job that fails on an error of its servers (``eventstore.faults.is_retryable``: PostgreSQL
or NATS unavailable) is not a failed run: the error propagates, the lease is let go, and the next delivery
runs the tick again as a takeover. A run's outcome that cannot be recorded because PostgreSQL is down is
recorded as soon as it is back (the worker keeps the tick meanwhile). So every tick ends in exactly one
completed (or failed, or skipped) execution.

Circuit breaker: decided from ``job-<job_type>`` (the job's health, see :mod:`.breaker`) at every tick,
never from memory, so all workers agree. A job function's exception is a *failed run* (recorded, the tick
is acknowledged); only infrastructure errors (store unavailable) propagate, for the consumer to retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from nats.aio.client import Client as NatsClient

from eventstore import (
    NO_STREAM,
    AppendResult,
    DuplicateEventId,
    EventStore,
    NewEvent,
    RecordedEvent,
    WrongExpectedVersion,
)
from eventstore.faults import Backoff, is_retryable
from services.core import feeds, metrics
from services.core.events import new_event, registry
from services.core.feeds import CircuitOpenedFeed, JobFeed
from services.core.jobs import breaker
from services.core.jobs.breaker import DEFAULT_THRESHOLD, JobHealth
from services.core.jobs.events import (
    HEALTH_EVENTS,
    HealthEvent,
    JobCircuitOpened,
    JobExecutionCompleted,
    JobExecutionFailed,
    JobExecutionSkipped,
    JobExecutionStarted,
    JobStatus,
    job_stream,
    jobrun_stream,
)
from services.core.jobs.lease import RunLeases
from services.core.jobs.types import JobType, Tick, parse_job_type
from services.core.redaction import redact_text
from services.core.subjects import Subjects

log = logging.getLogger(__name__)

Counters = Mapping[str, int]


Append = tuple[str, Sequence[NewEvent], int]  # (stream_id, events, expected_version), as EventStore.append_many


@dataclass(frozen=True, slots=True)
class JobContext:
    tick: Tick
    attempt: int
    # What the job's ``prefetch`` (see JobRunner.run) read while the run was being recorded as started.
    prefetched: asyncio.Future[Any] | None = None
    # ``await complete(appends, counters)``: append the job's last effects and the run's completion with
    # these counters in one atomic append (one commit). True: both are stored, and the job returns the
    # same counters. False: nothing was written (the run's start is not recorded yet, the run is not ours,
    # or an effect's expectation failed): the job goes on as without it. See JobRunner._completer.
    complete: Callable[[Sequence[Append], Counters], Awaitable[bool]] | None = None

    @property
    def job_type(self) -> JobType:
        return self.tick.job_type

    @property
    def scheduled_at(self) -> datetime:
        """The time every decision of the job uses (never the wall clock)."""
        return self.tick.scheduled_at


JobFunc = Callable[[JobContext], Awaitable[Counters | None]]
Prefetch = Callable[[Tick], Awaitable[Any]]


def _consume_outcome(future: asyncio.Future[Any]) -> None:
    """A prefetch nobody awaited (the run was not ours) must not log "exception never retrieved"."""
    if not future.cancelled():
        future.exception()


class RunStatus(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    DUPLICATE = "duplicate"  # the tick already has a terminal event: nothing was run
    IN_PROGRESS = "in_progress"  # another worker is running it right now: retry later
    SUPERSEDED = "superseded"  # our attempt was taken over by another worker meanwhile


@dataclass(frozen=True, slots=True)
class RunOutcome:
    status: RunStatus
    tick_id: str
    attempt: int = 0
    counters: Mapping[str, int] = field(default_factory=dict)
    error: str | None = None
    duration_ms: float | None = None


def utc_now() -> datetime:
    return datetime.now(UTC)


MAX_ERROR_CHARS = 2000


def safe_error(exc: BaseException) -> str:
    """The error text recorded in events: exception type and message, with credentials redacted."""
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - an exception whose text cannot be made still has a type
        message = ""
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    # Redaction first, on the whole text, then the cut: a cut through a credential would leave a prefix
    # of it that the patterns no longer recognize.
    text = redact_text(text)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def default_worker_name() -> str:
    """Unique per process start: a restarted container keeps its host name and often its pid (1), and
    must not pass for the worker that died (whose runs are then taken over)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def until_recorded(what: str, write: Callable[[], Awaitable[Any]]) -> Any:
    """``await write()`` until it gets through: an error of the servers (PostgreSQL down) is waited out
    and the write made again (the caller's writes are idempotent by their event ids)."""
    backoff = Backoff(0.1, 2.0)
    while True:
        try:
            return await write()
        except Exception as exc:
            if not is_retryable(exc):
                raise
            pause = backoff.next()
            log.warning("%s not recorded yet (%s); trying again in %.1fs", what, safe_error(exc), pause)
            await asyncio.sleep(pause)


_TERMINAL = (JobExecutionCompleted, JobExecutionFailed, JobExecutionSkipped)


def _observe_health(job_type: str, health: JobHealth) -> None:
    metrics.job_health(job_type, health.status.value, health.consecutive_failures, (s.value for s in JobStatus))


@dataclass(slots=True)
class _Completion:
    """What a run's ``JobContext.complete`` recorded: nothing yet, the run's completion (with the counters
    it gave), or that another worker's run of the same attempt had stored the same events first."""

    terminal: JobExecutionCompleted | None = None
    counters: dict[str, int] = field(default_factory=dict)
    superseded: bool = False

    @property
    def done(self) -> bool:
        return self.terminal is not None or self.superseded


class StartRecord:
    """The append of a run's ``JobExecutionStarted``: begun at once, or (a job with idempotent effects)
    held back for up to ``grace`` seconds, so that a run that completes sooner records its start with its
    completion and last effects in one commit (see ``JobRunner._completer``). A longer run is recorded as
    started once the grace ends, and every run's start is recorded before its outcome."""

    def __init__(self, store: EventStore, stream: str, event: NewEvent, expected: int, grace: float = 0.0) -> None:
        self.store = store
        self.stream = stream
        self.event = event
        self.expected = expected
        self._future: asyncio.Future[AppendResult] | None = None
        self._timer: asyncio.TimerHandle | None = None
        if grace > 0:
            self._timer = asyncio.get_running_loop().call_later(grace, self.begin)
        else:
            self.begin()

    def begin(self) -> asyncio.Future[AppendResult]:
        """Start the append now (if not begun, or begun and failed on a server error: again); its future
        (WrongExpectedVersion: another worker's start)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        future = self._future
        if (
            future is not None
            and future.done()
            and not future.cancelled()
            and (error := future.exception()) is not None
            and is_retryable(error)
        ):
            self._future = None
        if self._future is None:
            self._future = asyncio.ensure_future(self.store.append(self.stream, [self.event], self.expected))
            self._future.add_done_callback(_consume_outcome)  # awaited by the run, unless it is cancelled
        return self._future

    def take(self) -> bool:
        """True when the append has not begun: the caller appends the start itself, and calls ``begin``
        if that append wrote nothing."""
        if self._future is not None:
            return False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return True

    def recorded(self) -> AppendResult | None:
        """The start's append result when it is stored (by this record) already; None otherwise."""
        future = self._future
        if future is None or not future.done() or future.cancelled() or future.exception() is not None:
            return None
        return future.result()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class JobRunner:
    def __init__(
        self,
        store: EventStore,
        *,
        nc: NatsClient | None = None,
        subjects: Subjects | None = None,
        worker: str | None = None,
        threshold: int = DEFAULT_THRESHOLD,
        lease: timedelta = timedelta(seconds=10),
        clock: Callable[[], datetime] = utc_now,
        start_grace: float = 1.0,
    ) -> None:
        """``lease``: how long a run whose worker stopped renewing its lease blocks its tick (see .lease).
        ``clock`` only timestamps measurements (started_at, durations); decisions use the tick.
        ``start_grace``: how long a job with idempotent effects may run before its start is recorded on
        its own (a run that completes sooner records start, completion and last effects in one commit)."""
        if threshold < 1:
            raise ValueError("threshold must be >= 1")
        self.store = store
        self.nc = nc
        self.subjects = subjects
        self.worker = worker or default_worker_name()
        self.threshold = threshold
        self.leases = RunLeases(store, self.worker, lease)
        self.clock = clock
        self.start_grace = start_grace

    # ------------------------------------------------------------------------------------- loading

    async def _load_run(self, tick_id: str) -> tuple[list[Any], list[RecordedEvent]]:
        recorded = [e async for e in self.store.read_stream(jobrun_stream(tick_id))]
        return [registry.decode(e) for e in recorded], recorded

    async def health(self, job_type: JobType | str) -> tuple[JobHealth, int, RecordedEvent | None]:
        """The job's breaker state from its last health event, the stream version, and that event."""
        stream = job_stream(parse_job_type(str(job_type)).value)
        last = await self.store.read_last(stream)
        if last is None:
            return breaker.INITIAL, -1, None
        event = registry.decode(last)
        if not isinstance(event, HEALTH_EVENTS):
            raise TypeError(f"unexpected event {last.type} in {stream}")
        return breaker.health_after(event), last.version, last

    # ---------------------------------------------------------------------------------------- run

    async def run(
        self, tick: Tick, job: JobFunc, *, prefetch: Prefetch | None = None, idempotent_effects: bool = False
    ) -> RunOutcome:
        """Run ``job`` for ``tick`` at most once to completion; record everything in the log.

        ``prefetch(tick)``, when given, starts at once, alongside the ledger's reads and its start event,
        and reaches the job as ``JobContext.prefetched``: what the job reads and computes first (it is on
        the path from every tick to its effects). It must have no effect (reads, pure decisions): it runs
        before the run is known to be ours, and is cancelled when the tick turns out to be a repeat,
        skipped or another worker's. The run's duration counts from its recorded start.

        ``idempotent_effects``: the job's effects carry ids of their own that make a second run of the
        tick write nothing (strategy_execution: one evaluation per portfolio and tick). Such a job starts
        as soon as the ledger has checked the tick (not a repeat, not in progress elsewhere, breaker
        closed). Its start is recorded with its completion and last effects when the job ends through
        ``JobContext.complete`` within ``start_grace``, and on its own otherwise (after the grace, or when
        the job returns); if another worker's start wins, this run's outcome is dropped (its effects, if
        any, were the same)."""
        prefetched = asyncio.ensure_future(prefetch(tick)) if prefetch is not None else None
        try:
            outcome = await self._run(tick, job, prefetched, idempotent_effects)
            metrics.JOB_RUNS.labels(tick.job_type.value, outcome.status.value).inc()
            if outcome.duration_ms is not None:
                metrics.JOB_RUN_SECONDS.labels(tick.job_type.value).observe(outcome.duration_ms / 1000.0)
            return outcome
        finally:
            if prefetched is not None:
                prefetched.cancel()  # no-op once done
                prefetched.add_done_callback(_consume_outcome)

    async def _run(
        self, tick: Tick, job: JobFunc, prefetched: asyncio.Future[Any] | None, idempotent_effects: bool
    ) -> RunOutcome:
        beat: asyncio.Task[None] | None = None
        try:
            for _ in range(10):
                # The reads and the lease at once (three connections): they are on the path from every tick
                # to its job.
                (events, recorded), (health, _, _), leased = await asyncio.gather(
                    self._load_run(tick.tick_id), self.health(tick.job_type), self.leases.acquire(tick.tick_id)
                )
                if leased and beat is None:
                    beat = asyncio.create_task(self.leases.keep(tick.tick_id), name=f"lease {tick.tick_id}")
                outcome = await self._step(tick, job, prefetched, idempotent_effects, events, recorded, health, leased)
                if outcome is not None:
                    return outcome
            raise RuntimeError(f"{tick.tick_id}: could not settle the run after repeated concurrent changes")
        finally:
            if beat is not None:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat
                # Whatever the outcome: the run ended, or is left for the next delivery to take over at once.
                await self.leases.release(tick.tick_id)

    async def _step(
        self,
        tick: Tick,
        job: JobFunc,
        prefetched: asyncio.Future[Any] | None,
        idempotent_effects: bool,
        events: list[Any],
        recorded: list[RecordedEvent],
        health: JobHealth,
        leased: bool,
    ) -> RunOutcome | None:
        """One look at the run: its outcome, or None to look again (another worker moved it on)."""
        stream = jobrun_stream(tick.tick_id)
        _observe_health(tick.job_type.value, health)
        version = recorded[-1].version if recorded else NO_STREAM
        if events and isinstance(events[-1], _TERMINAL):
            await self._repair_health(events[-1], recorded[-1])
            return RunOutcome(RunStatus.DUPLICATE, tick.tick_id, getattr(events[-1], "attempt", 0))
        attempt = 1 + sum(isinstance(e, JobExecutionStarted) for e in events)
        if not leased:
            # Another worker's lease is alive: its run (started, or about to) may still complete.
            return RunOutcome(RunStatus.IN_PROGRESS, tick.tick_id, attempt - 1)
        if events and isinstance(events[-1], JobExecutionStarted):
            log.warning("taking over %s: attempt %d's worker is gone (%s)", tick.tick_id, attempt - 1,
                        events[-1].worker)
        cause = breaker.skip_cause(health)
        try:
            if cause is not None:
                skipped = JobExecutionSkipped(
                    job_type=tick.job_type.value, tick_id=tick.tick_id, scheduled_for=tick.scheduled_at,
                    reason=tick.reason.value, cause=cause, skipped_at=self.clock(),
                )
                await self.store.append(stream, [new_event(skipped, tick.tick_id, str(attempt))], version)
                await self._feed(JobFeed(
                    at=feeds.utc(skipped.skipped_at), job_type=tick.job_type.value, tick_id=tick.tick_id,
                    status="skipped", attempt=attempt, cause=cause.value,
                ))
                return RunOutcome(RunStatus.SKIPPED, tick.tick_id, attempt)
            started = JobExecutionStarted(
                job_type=tick.job_type.value, tick_id=tick.tick_id, scheduled_for=tick.scheduled_at,
                reason=tick.reason.value, attempt=attempt, started_at=self.clock(), worker=self.worker,
            )
            start_event = new_event(started, tick.tick_id, str(attempt))
            if idempotent_effects:
                # The job starts now; its start is recorded with its completion, or after the grace.
                start = StartRecord(self.store, stream, start_event, version, self.start_grace)
                return await self._execute(tick, job, started, start, prefetched)
            start = StartRecord(self.store, stream, start_event, version)
            result = await start.begin()
        except WrongExpectedVersion:
            return None  # another worker moved this tick on: look again
        if not result.written:
            return None  # our own start, stored before a crash: look again (now it is "open")
        return await self._execute(tick, job, started, start, prefetched)

    async def _execute(
        self,
        tick: Tick,
        job: JobFunc,
        started: JobExecutionStarted,
        start: StartRecord,
        prefetched: asyncio.Future[Any] | None = None,
    ) -> RunOutcome:
        """Run the job while (or once) ``start`` records its start; then record how it ended."""
        stream = jobrun_stream(tick.tick_id)
        attempt = started.attempt
        t0 = time.perf_counter()
        error: str | None = None
        counters: dict[str, int] = {}
        completed = _Completion()
        complete = self._completer(tick, started, start, t0, completed)
        try:
            returned = await job(JobContext(tick=tick, attempt=attempt, prefetched=prefetched, complete=complete))
            counters = {str(k): int(v) for k, v in (returned or {}).items()}
        except Exception as exc:  # any error of the job is a failed run, recorded (but a server error)
            if is_retryable(exc) and not completed.done:
                # Its servers, not the job: the run is not over. The start (if recorded) stays open, and the
                # tick's next delivery takes it over at once (the lease is let go).
                start.cancel()
                log.warning("job %s attempt %d interrupted by a server error (%s); the tick runs again",
                            tick.tick_id, attempt, safe_error(exc))
                raise
            error = safe_error(exc)
            if not completed.done:
                log.warning("job %s failed (attempt %d): %s", tick.tick_id, attempt, error)
        except BaseException:
            start.cancel()  # cancelled (a shutdown): a start not begun is not recorded; the tick comes again
            raise
        terminal: JobExecutionCompleted | JobExecutionFailed
        if completed.superseded:
            log.info("%s: another worker recorded the same run first; this run's outcome is dropped", tick.tick_id)
            return RunOutcome(RunStatus.SUPERSEDED, tick.tick_id, attempt)
        if completed.terminal is not None:
            # The completion is in the log, with the effects it was appended with: what the job did after
            # it changes nothing there (an error after it is only logged).
            terminal, counters = completed.terminal, completed.counters
            if error is not None:
                log.error("job %s raised after recording its completion (kept): %s", tick.tick_id, error)
                error = None
            duration_ms = terminal.duration_ms
        else:
            duration_ms = round((time.perf_counter() - t0) * 1000.0, 3)
            try:
                recorded_start = await until_recorded(f"{tick.tick_id} start", start.begin)
            except WrongExpectedVersion:
                log.info("%s: another worker recorded its start first; this run's outcome is dropped", tick.tick_id)
                return RunOutcome(RunStatus.SUPERSEDED, tick.tick_id, attempt)
            if not recorded_start.written:
                # Our own start from before a crash: the run is "open" in the log; a later delivery takes it over.
                return RunOutcome(RunStatus.IN_PROGRESS, tick.tick_id, attempt)
            version = recorded_start.next_expected_version
            ended_at = self.clock()
            if error is None:
                terminal = JobExecutionCompleted(
                    job_type=tick.job_type.value, tick_id=tick.tick_id, scheduled_for=tick.scheduled_at,
                    attempt=attempt, started_at=started.started_at, completed_at=ended_at,
                    duration_ms=duration_ms, counters=counters,
                )
            else:
                terminal = JobExecutionFailed(
                    job_type=tick.job_type.value, tick_id=tick.tick_id, scheduled_for=tick.scheduled_at,
                    attempt=attempt, started_at=started.started_at, failed_at=ended_at,
                    duration_ms=duration_ms, error=error,
                )
            closing = new_event(terminal, tick.tick_id, str(attempt))
            try:
                await until_recorded(
                    f"{tick.tick_id} outcome", lambda: self.store.append(stream, [closing], version)
                )
            except WrongExpectedVersion:
                log.warning("%s attempt %d was taken over by another worker; its result is dropped", tick.tick_id,
                            attempt)
                return RunOutcome(RunStatus.SUPERSEDED, tick.tick_id, attempt)
        await until_recorded(f"{tick.tick_id} job health", lambda: self._record_health(terminal))
        status = RunStatus.COMPLETED if error is None else RunStatus.FAILED
        await self._feed(JobFeed(
            at=feeds.utc(self.clock()), job_type=tick.job_type.value, tick_id=tick.tick_id, status=status.value,
            attempt=attempt,
            duration_ms=duration_ms, counters=counters, error=error,
        ))
        return RunOutcome(status, tick.tick_id, attempt, counters, error, duration_ms)

    def _completer(
        self,
        tick: Tick,
        started: JobExecutionStarted,
        start: StartRecord,
        t0: float,
        completed: _Completion,
    ) -> Callable[[Sequence[Append], Counters], Awaitable[bool]]:
        """The run's ``JobContext.complete``: the job's last effects and the completion in one commit, with
        the start too when it is not recorded yet (one commit for the whole run; a crash cannot leave
        effects without the completion). It never waits for a start being appended: it declines then."""

        async def complete(appends: Sequence[Append], counters: Counters) -> bool:
            if completed.done:
                return False
            stream = jobrun_stream(tick.tick_id)
            totals = {str(k): int(v) for k, v in counters.items()}
            terminal = JobExecutionCompleted(
                job_type=tick.job_type.value, tick_id=tick.tick_id, scheduled_for=tick.scheduled_at,
                attempt=started.attempt, started_at=started.started_at, completed_at=self.clock(),
                duration_ms=round((time.perf_counter() - t0) * 1000.0, 3), counters=totals,
            )
            closing_event = new_event(terminal, tick.tick_id, str(started.attempt))
            if start.take():
                closing: Append = (stream, [start.event, closing_event], start.expected)
            elif (recorded_start := start.recorded()) is not None and recorded_start.written:
                closing = (stream, [closing_event], recorded_start.next_expected_version)
            else:
                return False  # the start is being appended (or is not ours): the job appends as usual
            try:
                results = await self.store.append_many([*appends, closing])
            except (WrongExpectedVersion, DuplicateEventId):
                start.begin()  # nothing was written; if the start was ours to write, it is begun now
                return False  # an effect exists already, or the run was taken over
            if not results[-1].written:
                completed.superseded = True  # the same events were stored before: another worker's run
                return True
            completed.terminal, completed.counters = terminal, totals
            return True

        return complete

    # ------------------------------------------------------------------------------------- health

    def _health_events(
        self, health: JobHealth, terminal: JobExecutionCompleted | JobExecutionFailed
    ) -> list[HealthEvent]:
        if isinstance(terminal, JobExecutionCompleted):
            return breaker.on_success(
                health, job_type=terminal.job_type, tick_id=terminal.tick_id, attempt=terminal.attempt
            )
        return breaker.on_failure(
            health, job_type=terminal.job_type, tick_id=terminal.tick_id, attempt=terminal.attempt,
            error=terminal.error, at=terminal.failed_at, threshold=self.threshold,
        )

    async def _record_health(self, terminal: JobExecutionCompleted | JobExecutionFailed) -> None:
        stream = job_stream(terminal.job_type)
        for _ in range(20):
            health, version, _ = await self.health(terminal.job_type)
            events = self._health_events(health, terminal)
            if not events:
                _observe_health(terminal.job_type, health)
                return
            batch = [new_event(e, terminal.tick_id, str(terminal.attempt)) for e in events]
            try:
                await self.store.append(stream, batch, version)
            except WrongExpectedVersion:
                continue
            except DuplicateEventId:
                return  # recorded before (a repeat after a crash): nothing to add
            _observe_health(terminal.job_type, breaker.health_after(events[-1]))
            for event in events:
                if isinstance(event, JobCircuitOpened):
                    await self._circuit_opened(event)
            return
        raise RuntimeError(f"{stream}: could not record the run outcome after repeated concurrent changes")

    async def _repair_health(self, terminal: Any, recorded: RecordedEvent) -> None:
        """A redelivered tick whose run ended: make sure its outcome reached the health stream (a worker
        may have died between the two appends). Only when nothing was recorded there since the run ended,
        so a late repair never reorders the failure streak; repeats are no-ops (same event ids)."""
        if not isinstance(terminal, JobExecutionCompleted | JobExecutionFailed):
            return
        _, _, last = await self.health(terminal.job_type)
        if last is not None and last.recorded_at >= recorded.recorded_at:
            return
        await self._record_health(terminal)

    async def _circuit_opened(self, event: JobCircuitOpened) -> None:
        log.error(
            "circuit breaker opened for %s after %d consecutive failures (last: %s); "
            "re-enable with `openbell jobs enable %s`",
            event.job_type, event.consecutive_failures, event.last_error, event.job_type,
        )
        if self.nc is not None and self.subjects is not None:
            notice = CircuitOpenedFeed(
                at=feeds.utc(event.opened_at), job_type=event.job_type, tick_id=event.tick_id,
                consecutive_failures=event.consecutive_failures, last_error=event.last_error,
            )
            await self.nc.publish(self.subjects.feed("notification", "job_circuit_opened"), feeds.encode(notice))

    async def _feed(self, message: JobFeed) -> None:
        if self.nc is not None and self.subjects is not None:
            try:
                await self.nc.publish(self.subjects.feed("job", message.job_type), feeds.encode(message))
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                # A live feed (core NATS): subscribers missed one message; the log has the run.
                log.debug("job feed for %s not published: %s", message.tick_id, exc)

    # ------------------------------------------------------------------------------------ operator

    async def _operator(self, job_type: JobType | str, decide: Callable[[JobHealth, int], list[HealthEvent]]) -> bool:
        job = parse_job_type(str(job_type))
        stream = job_stream(job.value)
        for _ in range(20):
            health, version, _ = await self.health(job)
            events = decide(health, version)
            if not events:
                return False
            batch = [new_event(e, job.value, str(version)) for e in events]
            try:
                result = await self.store.append(stream, batch, version)
            except WrongExpectedVersion:
                continue
            return result.written
        raise RuntimeError(f"{stream}: could not apply the operator action after repeated concurrent changes")

    async def enable(self, job_type: JobType | str, *, by: str = "operator", reason: str = "") -> bool:
        """Append ``JobEnabled`` (closes an open breaker, resets the streak); False if already healthy."""
        at = self.clock()
        return await self._operator(
            job_type, lambda h, _v: breaker.on_enable(h, job_type=str(job_type), at=at, by=by, reason=reason)
        )

    async def disable(self, job_type: JobType | str, *, by: str = "operator", reason: str = "") -> bool:
        """Append ``JobDisabled``: ticks are then acknowledged and recorded as skipped; False if already."""
        at = self.clock()
        return await self._operator(
            job_type, lambda h, _v: breaker.on_disable(h, job_type=str(job_type), at=at, by=by, reason=reason)
        )
