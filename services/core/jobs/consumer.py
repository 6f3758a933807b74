"""Durable JetStream pull consumers (ticks and events alike), on a nats-py connection of their own.

- Explicit ack: a handler that returns acks the message.
- A message that can never be handled (bad JSON, unknown type, missing fields) raises :class:`Reject`:
  it is terminated and copied to ``<prefix>.dlq.<service>`` with the reason; the consumer keeps running.
- An error of the servers (PostgreSQL or NATS down: ``eventstore.faults.is_retryable``) or a
  :class:`Retry` is retried with a growing delay for as long as it takes: such a message is never
  dead-lettered (the server's own delivery limit is off).
- Any other exception is retried too, with a growing delay (``backoff``), up to ``max_deliver``
  deliveries (``OPENBELL_MAX_DELIVER``); that failure is then terminated and dead-lettered.
- Long handlers send ``in_progress`` every ``ack_wait / 3`` (``OPENBELL_ACK_WAIT_SECONDS``) so the server
  does not redeliver while a worker is alive.
- A fetch loop waits out its servers' errors; one that ends with any other error is reported to the
  process's health (``services.core.health``): the service host then stops and exits non-zero.
- All workers of one service use the same durable name, so they share one consumer: starting more copies
  scales out (each message goes to one of them).
- A fetched batch is handled concurrently, and the next fetch waits for the whole batch: consumers whose
  messages must be handled in order per key fetch one at a time (the default).

These consumers are on the path from every tick to its orders (two hops: the tick, then the order
request), so they are a plain fetch loop on nats-py: FastStream's per-message machinery (its task group,
dependency injection and middleware) cost 0.3-0.6 ms per hop there (bench/README.md). FastStream wires the
request/reply commands (``ServiceContext.bus``).

Usage::

    consumers = DurableConsumers(nats_url)
    subscribe_ticks(consumers, subjects=s, service="positions", job_type=JobType.PRICE_UPDATE,
                    runner=JobRunner(store, nc=nc, subjects=s), job=price_update)
    subscribe_durable(consumers, subjects=s, service="alerts", subject=s.event("price", "PriceUpdated"),
                      stream=s.events_stream, handler=on_price)   # handler(delivery: Delivery) -> None
    await consumers.start()
    ...
    await consumers.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from eventstore.faults import is_retryable
from services.clock.schedule import tick_problem
from services.core import metrics
from services.core.health import HostHealth
from services.core.jobs.runner import JobFunc, JobRunner, Prefetch, RunStatus, safe_error
from services.core.jobs.types import InvalidTick, JobType, decode_tick
from services.core.runtime import connect_nats
from services.core.subjects import Subjects

log = logging.getLogger(__name__)


class Reject(Exception):
    """Raised by a handler: this message can never be handled (terminate it and dead-letter it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Retry(Exception):
    """Raised by a handler: try this message again later (after ``delay`` seconds if given)."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


@dataclass(frozen=True, slots=True)
class Delivery:
    subject: str
    data: bytes
    headers: Mapping[str, str]
    num_delivered: int
    stream_sequence: int
    msg_id: str | None


Handler = Callable[[Delivery], Awaitable[None]]

DEFAULT_BACKOFF: tuple[float, ...] = (0.5, 2.0, 10.0, 30.0)
# The longest pause before a message that failed on a server error is tried again: the server is
# usually back within seconds, and the message should follow soon after.
MAX_RETRYABLE_DELAY = 5.0
DEFAULT_MAX_DELIVER = 5
DEFAULT_ACK_WAIT = 30.0

# DLQ message headers
H_REASON = "Openbell-Dlq-Reason"
H_SUBJECT = "Openbell-Dlq-Subject"
H_STREAM_SEQ = "Openbell-Dlq-Stream-Seq"
H_DELIVERIES = "Openbell-Dlq-Deliveries"
H_SERVICE = "Openbell-Dlq-Service"


def durable_name(service: str, subject: str) -> str:
    """A durable consumer name shared by all workers of ``service`` for ``subject`` (no dots/wildcards)."""
    digest = hashlib.sha1(subject.encode()).hexdigest()[:10]
    tail = subject.rsplit(".", 1)[-1].replace("*", "any").replace(">", "all")
    return f"{service}_{tail}_{digest}"


def _delay_for(attempt: int, backoff: Sequence[float]) -> float:
    return backoff[min(max(attempt, 1), len(backoff)) - 1] if backoff else 0.0


@dataclass(frozen=True, slots=True)
class _Consumer:
    service: str
    subject: str
    stream: str
    durable: str
    handler: Handler
    dlq_subject: str
    dlq_stream: str
    max_deliver: int | None  # None: the process's (DurableConsumers.max_deliver)
    backoff: Sequence[float]
    ack_wait: float | None  # None: the process's (DurableConsumers.ack_wait)
    deliver_policy: DeliverPolicy
    batch_size: int
    fetch_timeout: float


class DurableConsumers:
    """The durable pull consumers of one process: registered by ``subscribe_durable`` / ``subscribe_ticks``,
    run from ``start`` (one fetch loop each, on a connection of their own that reconnects forever) until
    ``stop``."""

    def __init__(
        self,
        nats_url: str,
        *,
        name: str = "openbell-consumers",
        drain_seconds: float = 5.0,
        credentials: Mapping[str, Any] | None = None,
        health: HostHealth | None = None,
        max_deliver: int = DEFAULT_MAX_DELIVER,
        ack_wait: float = DEFAULT_ACK_WAIT,
    ) -> None:
        """``max_deliver`` and ``ack_wait``: for every consumer registered without its own (the service
        host passes OPENBELL_MAX_DELIVER and OPENBELL_ACK_WAIT_SECONDS). ``credentials``: how the
        connection authenticates (``Servers.nats_options(role)``); never logged."""
        if max_deliver < 1:
            raise ValueError("max_deliver must be >= 1")
        if ack_wait <= 0:
            raise ValueError("ack_wait must be > 0")
        self.nats_url = nats_url
        self.name = name
        self.credentials = dict(credentials or {})
        self.health = health
        self.max_deliver = max_deliver
        self.ack_wait = ack_wait
        # On stop, how long the messages being handled may take to finish before they are cancelled.
        self.drain_seconds = drain_seconds
        self._consumers: list[_Consumer] = []
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight: set[asyncio.Future[Any]] = set()

    def add(self, consumer: _Consumer) -> None:
        if self._nc is not None:
            raise RuntimeError("consumers are registered before start()")
        if consumer.max_deliver is None:
            consumer = dataclasses.replace(consumer, max_deliver=self.max_deliver)
        if consumer.ack_wait is None:
            consumer = dataclasses.replace(consumer, ack_wait=self.ack_wait)
        self._consumers.append(consumer)

    async def start(self) -> None:
        """Connect, create (or bind to) every durable consumer, and start fetching."""
        self._nc = await connect_nats(self.nats_url, self.name, **self.credentials)
        self._js = self._nc.jetstream()
        try:
            for consumer in self._consumers:
                config = ConsumerConfig(
                    name=consumer.durable,
                    durable_name=consumer.durable,
                    filter_subject=consumer.subject,
                    ack_policy=AckPolicy.EXPLICIT,
                    # No limit at the server: a message is dead-lettered by us (with the reason) after
                    # max_deliver failures of its own, never dropped by the server after a few deliveries
                    # that found a server down or a worker killed.
                    max_deliver=-1,
                    ack_wait=consumer.ack_wait,
                    deliver_policy=consumer.deliver_policy,
                )
                # Create or update: a durable consumer made by an earlier start takes the settings of this one
                # (OPENBELL_ACK_WAIT_SECONDS changed, say); one the server cannot change is an error here.
                await self._js.add_consumer(consumer.stream, config)
                subscription = await self._js.pull_subscribe_bind(durable=consumer.durable, stream=consumer.stream)
                task = asyncio.create_task(self._fetch_loop(consumer, subscription), name=consumer.durable)
                if self.health is not None:
                    self.health.watch(task, f"consumer {consumer.durable}")
                self._tasks.append(task)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop fetching, let the messages being handled finish (up to ``drain_seconds``; then they are
        cancelled unacknowledged, and JetStream redelivers them), and close the connection."""
        if self.health is not None:
            self.health.stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._in_flight:
            _, late = await asyncio.wait(self._in_flight, timeout=self.drain_seconds)
            for handling in late:
                handling.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._nc is not None:
            with contextlib.suppress(NatsError, OSError):
                await self._nc.close()
            self._nc = self._js = None

    async def _fetch_loop(self, consumer: _Consumer, subscription: JetStreamContext.PullSubscription) -> None:
        delay = 0.1
        while True:
            try:
                messages = await subscription.fetch(consumer.batch_size, timeout=consumer.fetch_timeout)
            except TimeoutError:  # nothing to deliver (nats-py's own TimeoutError is one too)
                continue
            except Exception as exc:
                if not is_retryable(exc):
                    raise  # a bug: the loop ends, and the process's health says so (the host exits)
                # Disconnected, or JetStream unavailable: the connection reconnects by itself. One line per
                # outage (the first failed fetch), not one per retry.
                log.log(logging.WARNING if delay == 0.1 else logging.DEBUG,
                        "%s: fetch failed (%s); retrying until NATS answers", consumer.durable, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.1
            handling: asyncio.Future[Any] = (
                asyncio.ensure_future(self._handle(consumer, messages[0]))
                if len(messages) == 1
                else asyncio.gather(*(self._handle(consumer, message) for message in messages))
            )
            self._in_flight.add(handling)
            handling.add_done_callback(self._in_flight.discard)
            # Shielded: stopping the loop does not cut a handler short (stop() lets it finish first).
            await asyncio.shield(handling)

    async def _handle(self, consumer: _Consumer, raw: Msg) -> None:
        """One delivery: the handler, then ack, nak with a delay, or terminate and dead-letter. It never
        raises (but for cancellation): a failure to settle the message leaves it to JetStream's redelivery."""
        try:
            await self._settle(consumer, raw)
        except (NatsError, OSError) as exc:
            log.warning("%s: could not settle %s (%s); JetStream redelivers it", consumer.service, raw.subject, exc)
        except Exception:  # a bug here must not stop the fetch loop; it is logged in full
            log.exception("%s: unexpected error settling %s", consumer.service, raw.subject)

    async def _settle(self, consumer: _Consumer, raw: Msg) -> None:
        meta = raw.metadata
        delivery = Delivery(
            subject=raw.subject,
            data=raw.data,
            headers=dict(raw.headers or {}),
            num_delivered=meta.num_delivered,
            stream_sequence=meta.sequence.stream,
            msg_id=(raw.headers or {}).get("Nats-Msg-Id"),
        )
        assert consumer.ack_wait is not None and consumer.max_deliver is not None  # set by add()
        beat = asyncio.create_task(_heartbeat(raw, consumer.ack_wait))
        try:
            await consumer.handler(delivery)
        except Reject as exc:
            log.warning("%s: rejected %s #%d: %s", consumer.service, raw.subject, delivery.stream_sequence, exc.reason)
            await self._dead_letter(consumer, raw, exc.reason, delivery.num_delivered)
            await raw.term()
            metrics.MESSAGES.labels(consumer.durable, "dead_lettered").inc()
            return
        except Exception as exc:  # noqa: BLE001 - a failing handler must never stop the consumer
            # Logged and, on the last delivery, sent with the dead letter: credentials redacted.
            reason = exc.reason if isinstance(exc, Retry) else safe_error(exc)
            if not isinstance(exc, Retry) and is_retryable(exc):
                # A server is down: this message is not at fault. Again once it is likely back, however often.
                delay = min(_delay_for(delivery.num_delivered, consumer.backoff), MAX_RETRYABLE_DELAY)
                log.warning("%s: %s failed on a server error (delivery %d), retrying in %.1fs: %s",
                            consumer.service, raw.subject, delivery.num_delivered, delay, reason)
                await raw.nak(delay=delay)
                metrics.MESSAGES.labels(consumer.durable, "retried").inc()
                return
            if not isinstance(exc, Retry) and delivery.num_delivered >= consumer.max_deliver:
                log.error("%s: giving up on %s after %d deliveries: %s", consumer.service, raw.subject,
                          delivery.num_delivered, reason)
                await self._dead_letter(consumer, raw, f"gave up after {delivery.num_delivered} deliveries: {reason}",
                                        delivery.num_delivered)
                await raw.term()
                metrics.MESSAGES.labels(consumer.durable, "dead_lettered").inc()
                return
            delay = exc.delay if isinstance(exc, Retry) and exc.delay is not None else _delay_for(
                delivery.num_delivered, consumer.backoff
            )
            if not isinstance(exc, Retry):
                log.warning("%s: %s failed (delivery %d), retrying in %.1fs: %s", consumer.service, raw.subject,
                            delivery.num_delivered, delay, reason)
            await raw.nak(delay=delay)
            metrics.MESSAGES.labels(consumer.durable, "retried").inc()
            return
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        await raw.ack()
        metrics.MESSAGES.labels(consumer.durable, "acked").inc()

    async def _dead_letter(self, consumer: _Consumer, raw: Msg, reason: str, deliveries: int) -> None:
        assert self._js is not None and self._nc is not None
        headers = {
            H_REASON: reason[:1000],
            H_SUBJECT: raw.subject,
            H_STREAM_SEQ: str(raw.metadata.sequence.stream),
            H_DELIVERIES: str(deliveries),
            H_SERVICE: consumer.service,
            # one copy per original message, even if the termination itself is repeated
            "Nats-Msg-Id": f"dlq:{consumer.service}:{raw.metadata.stream}:{raw.metadata.sequence.stream}",
        }
        try:
            await self._js.publish(consumer.dlq_subject, raw.data, headers=headers, stream=consumer.dlq_stream)
        except (NatsError, TimeoutError) as exc:  # the DLQ stream may be missing: fall back to core NATS
            log.error("%s: JetStream DLQ publish failed (%s), publishing on core NATS", consumer.service, exc)
            await self._nc.publish(consumer.dlq_subject, raw.data, headers=headers)


async def _heartbeat(raw: Msg, ack_wait: float) -> None:
    """Tell JetStream the message is still being worked on, so it is not redelivered meanwhile."""
    while True:
        await asyncio.sleep(max(ack_wait / 3, 0.1))
        try:
            await raw.in_progress()
        except (NatsError, OSError) as exc:  # disconnected: the next beat tries again
            log.debug("in-progress notice for %s failed: %s", raw.subject, exc)


def subscribe_durable(
    consumers: DurableConsumers,
    *,
    subjects: Subjects,
    service: str,
    subject: str,
    stream: str,
    handler: Handler,
    durable: str | None = None,
    max_deliver: int | None = None,
    backoff: Sequence[float] = DEFAULT_BACKOFF,
    ack_wait: float | None = None,
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL,
    batch_size: int = 1,
    fetch_timeout: float = 1.0,
) -> None:
    """Register ``handler`` as a durable pull consumer of ``subject`` on ``stream`` (it runs from
    ``consumers.start()``). ``max_deliver`` / ``ack_wait`` left None: the process's (``consumers``)."""
    if max_deliver is not None and max_deliver < 1:
        raise ValueError("max_deliver must be >= 1")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    consumers.add(
        _Consumer(
            service=service,
            subject=subject,
            stream=stream,
            durable=durable or durable_name(service, subject),
            handler=handler,
            dlq_subject=subjects.dlq(service),
            dlq_stream=subjects.dlq_stream,
            max_deliver=max_deliver,
            backoff=tuple(backoff),
            ack_wait=ack_wait,
            deliver_policy=deliver_policy,
            batch_size=batch_size,
            fetch_timeout=fetch_timeout,
        )
    )


def tick_handler(
    runner: JobRunner,
    job_type: JobType,
    job: JobFunc,
    *,
    retry_delay: float | None = None,
    prefetch: Prefetch | None = None,
    idempotent_effects: bool = False,
) -> Handler:
    """The handler of ``<prefix>.tick.<job_type>``: validate the tick, run the job through the ledger
    (``prefetch``, ``idempotent_effects``: see ``JobRunner.run``).

    A tick whose run another live worker holds (IN_PROGRESS: its lease is renewed) is kept, not given
    back: this delivery looks again every ``retry_delay`` seconds (default: a third of the lease) until
    the run ended (acknowledged) or its lease ran out (taken over here). The consumer's in-progress
    notices keep the message meanwhile, so no delivery is used up and the tick is never dead-lettered
    while its run may still complete."""
    poll = retry_delay if retry_delay is not None else max(runner.leases.lease.total_seconds() / 3, 0.05)

    async def handle(delivery: Delivery) -> None:
        try:
            tick = decode_tick(delivery.data, subject_job_type=delivery.subject.rsplit(".", 1)[-1])
        except InvalidTick as exc:
            raise Reject(str(exc)) from None
        if tick.job_type is not job_type:
            raise Reject(f"tick for {tick.job_type} delivered to the {job_type} consumer")
        problem = tick_problem(tick, datetime.now(UTC))  # the wall clock only bounds what is obeyed
        if problem is not None:
            raise Reject(problem)
        outcome = await runner.run(tick, job, prefetch=prefetch, idempotent_effects=idempotent_effects)
        while outcome.status is RunStatus.IN_PROGRESS:
            await asyncio.sleep(poll)
            outcome = await runner.run(tick, job, prefetch=prefetch, idempotent_effects=idempotent_effects)

    return handle


def subscribe_ticks(
    consumers: DurableConsumers,
    *,
    subjects: Subjects,
    service: str,
    job_type: JobType,
    runner: JobRunner,
    job: JobFunc,
    max_deliver: int | None = None,
    backoff: Sequence[float] = DEFAULT_BACKOFF,
    ack_wait: float | None = None,
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL,
    prefetch: Prefetch | None = None,
    idempotent_effects: bool = False,
) -> None:
    """Consume ``<prefix>.tick.<job_type>`` with a durable consumer shared by the service's workers."""
    subject = subjects.tick(job_type.value)
    subscribe_durable(
        consumers,
        subjects=subjects,
        service=service,
        subject=subject,
        stream=subjects.ticks_stream,
        handler=tick_handler(runner, job_type, job, prefetch=prefetch, idempotent_effects=idempotent_effects),
        durable=f"{service}_{job_type.value}",
        max_deliver=max_deliver,
        backoff=backoff,
        ack_wait=ack_wait,
        deliver_policy=deliver_policy,
    )
