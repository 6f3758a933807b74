"""Generic FastStream wiring for JetStream durable pull consumers (ticks and events alike).

- Explicit ack: a handler that returns acks the message.
- A message that can never be handled (bad JSON, unknown type, missing fields) raises :class:`Reject`:
  it is terminated and copied to ``<prefix>.dlq.<service>`` with the reason; the consumer keeps running.
- Any other exception is retried: ``nak`` with a growing delay (``backoff``), up to ``max_deliver``
  deliveries; the last failure is terminated and dead-lettered too. Nothing crashes the service.
- Long handlers send ``in_progress`` every ``ack_wait / 3`` so the server does not redeliver while a worker
  is alive.
- All workers of one service use the same durable name, so they share one consumer: starting more copies
  scales out (each message goes to one of them).

Usage::

    broker = NatsBroker(nats_url)
    subscribe_ticks(broker, subjects=s, service="positions", job_type=JobType.PRICE_UPDATE,
                    runner=JobRunner(store, nc=nc, subjects=s), job=price_update)
    subscribe_durable(broker, subjects=s, service="alerts", subject=s.event("price", "PriceUpdated"),
                      stream=s.events_stream, handler=on_price)   # handler(delivery: Delivery) -> None
    await broker.start()
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from faststream import AckPolicy
from faststream.nats import ConsumerConfig, DeliverPolicy, JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from faststream.nats.message import NatsMessage as NatsStreamMessage
from nats.aio.msg import Msg

from services.core.jobs.runner import JobFunc, JobRunner, Prefetch, RunStatus
from services.core.jobs.types import InvalidTick, JobType, decode_tick
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


async def _the_message_itself(message: NatsStreamMessage) -> NatsStreamMessage:
    """FastStream decoder: the handler receives the message object itself as its argument.

    Asking for it with the ``NatsMessage`` annotation instead resolves it through a synchronous context
    field, which fast_depends runs in a worker thread: a thread round trip on every delivery, about 0.3 ms
    of latency per hop under load. An async decoder stays on the event loop."""
    return message


def _delay_for(attempt: int, backoff: Sequence[float]) -> float:
    return backoff[min(max(attempt, 1), len(backoff)) - 1] if backoff else 0.0


def subscribe_durable(
    broker: NatsBroker,
    *,
    subjects: Subjects,
    service: str,
    subject: str,
    stream: str,
    handler: Handler,
    durable: str | None = None,
    max_deliver: int = 5,
    backoff: Sequence[float] = DEFAULT_BACKOFF,
    ack_wait: float = 30.0,
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL,
    batch_size: int = 1,
    fetch_timeout: float = 1.0,
) -> object:
    """Register ``handler`` as a durable pull consumer of ``subject`` on ``stream``; returns the FastStream
    subscriber (``await sub.start()`` if the broker is already running)."""
    if max_deliver < 1:
        raise ValueError("max_deliver must be >= 1")
    dlq_subject = subjects.dlq(service)

    async def dead_letter(raw: Msg, reason: str, deliveries: int) -> None:
        headers = {
            H_REASON: reason[:1000],
            H_SUBJECT: raw.subject,
            H_STREAM_SEQ: str(raw.metadata.sequence.stream),
            H_DELIVERIES: str(deliveries),
            H_SERVICE: service,
            # one copy per original message, even if the termination itself is repeated
            "Nats-Msg-Id": f"dlq:{service}:{raw.metadata.stream}:{raw.metadata.sequence.stream}",
        }
        try:
            await broker.publish(raw.data, dlq_subject, headers=headers, stream=subjects.dlq_stream)
        except Exception:  # the DLQ stream may be missing: fall back to core NATS
            log.exception("%s: JetStream DLQ publish failed, publishing on core NATS", service)
            await broker.publish(raw.data, dlq_subject, headers=headers)

    async def heartbeat(message: NatsMessage) -> None:
        while True:
            await asyncio.sleep(max(ack_wait / 3, 0.1))
            await message.in_progress()

    # ``Any``: the message object from _the_message_itself, passed through unvalidated (a class annotation
    # would make FastStream try to validate it as a pydantic field).
    async def on_message(message: Any) -> None:
        message = cast(NatsStreamMessage, message)
        raw: Msg = message.raw_message
        meta = raw.metadata
        delivery = Delivery(
            subject=raw.subject,
            data=raw.data,
            headers=dict(raw.headers or {}),
            num_delivered=meta.num_delivered,
            stream_sequence=meta.sequence.stream,
            msg_id=(raw.headers or {}).get("Nats-Msg-Id"),
        )
        beat = asyncio.create_task(heartbeat(message))
        try:
            await handler(delivery)
        except Reject as exc:
            log.warning("%s: rejected %s #%d: %s", service, raw.subject, delivery.stream_sequence, exc.reason)
            await dead_letter(raw, exc.reason, delivery.num_delivered)
            await message.reject()
            return
        except Exception as exc:  # noqa: BLE001 - a failing handler must never stop the consumer
            reason = exc.reason if isinstance(exc, Retry) else f"{type(exc).__name__}: {exc}"
            if delivery.num_delivered >= max_deliver:
                log.error("%s: giving up on %s after %d deliveries: %s", service, raw.subject,
                          delivery.num_delivered, reason)
                await dead_letter(raw, f"gave up after {delivery.num_delivered} deliveries: {reason}",
                                  delivery.num_delivered)
                await message.reject()
                return
            delay = exc.delay if isinstance(exc, Retry) and exc.delay is not None else _delay_for(
                delivery.num_delivered, backoff
            )
            if not isinstance(exc, Retry):
                log.warning("%s: %s failed (delivery %d), retrying in %.1fs: %s", service, raw.subject,
                            delivery.num_delivered, delay, reason)
            await message.nack(delay=delay)
            return
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        await message.ack()

    sub = broker.subscriber(
        subject,
        stream=JStream(stream, declare=False),
        durable=durable or durable_name(service, subject),
        pull_sub=PullSub(batch_size=batch_size, timeout=fetch_timeout),
        # One delivery more than we handle: the last failure is dead-lettered by us, never silently
        # dropped by the server, even if the worker dies during the last attempt.
        config=ConsumerConfig(max_deliver=max_deliver + 1, ack_wait=ack_wait, deliver_policy=deliver_policy),
        ack_policy=AckPolicy.MANUAL,
        decoder=_the_message_itself,
    )
    sub(on_message)
    return sub


def tick_handler(
    runner: JobRunner,
    job_type: JobType,
    job: JobFunc,
    *,
    retry_delay: float = 1.0,
    prefetch: Prefetch | None = None,
    idempotent_effects: bool = False,
) -> Handler:
    """The handler of ``<prefix>.tick.<job_type>``: validate the tick, run the job through the ledger
    (``prefetch``, ``idempotent_effects``: see ``JobRunner.run``)."""

    async def handle(delivery: Delivery) -> None:
        try:
            tick = decode_tick(delivery.data, subject_job_type=delivery.subject.rsplit(".", 1)[-1])
        except InvalidTick as exc:
            raise Reject(str(exc)) from None
        if tick.job_type is not job_type:
            raise Reject(f"tick for {tick.job_type} delivered to the {job_type} consumer")
        outcome = await runner.run(tick, job, prefetch=prefetch, idempotent_effects=idempotent_effects)
        if outcome.status is RunStatus.IN_PROGRESS:
            raise Retry(f"{tick.tick_id} is being run by another worker", delay=retry_delay)

    return handle


def subscribe_ticks(
    broker: NatsBroker,
    *,
    subjects: Subjects,
    service: str,
    job_type: JobType,
    runner: JobRunner,
    job: JobFunc,
    max_deliver: int = 5,
    backoff: Sequence[float] = DEFAULT_BACKOFF,
    ack_wait: float = 30.0,
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL,
    prefetch: Prefetch | None = None,
    idempotent_effects: bool = False,
) -> object:
    """Consume ``<prefix>.tick.<job_type>`` with a durable consumer shared by the service's workers."""
    subject = subjects.tick(job_type.value)
    return subscribe_durable(
        broker,
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
