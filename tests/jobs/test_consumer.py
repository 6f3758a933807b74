"""The durable consumer wiring on a real nats-server: malformed ticks are dead-lettered and the consumer
keeps running; transient errors are retried then dead-lettered; workers share one durable consumer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import msgspec
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from eventstore import EventStore
from services.core.embedded import EmbeddedNats
from services.core.jobs.consumer import (
    H_REASON,
    H_SUBJECT,
    Delivery,
    DurableConsumers,
    Reject,
    durable_name,
    subscribe_durable,
    subscribe_ticks,
)
from services.core.jobs.runner import JobContext, JobRunner
from services.core.jobs.types import JobType, Tick, TickReason, encode_tick
from services.core.subjects import Subjects
from tests.waiting import until

T0 = datetime(2026, 7, 2, 13, 30, tzinfo=UTC)


@pytest.fixture
async def subjects(nc: NatsClient, subject_prefix: str) -> Subjects:
    s = Subjects(subject_prefix)
    await s.ensure_streams(nc.jetstream())
    return s


@pytest.fixture
async def brokers(nats_url: str) -> AsyncIterator[list[DurableConsumers]]:
    made: list[DurableConsumers] = []
    yield made
    for b in made:
        await b.stop()


async def dlq_messages(js: JetStreamContext, subjects: Subjects, service: str) -> list[tuple[bytes, dict[str, str]]]:
    info = await js.stream_info(subjects.dlq_stream)
    result = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(subjects.dlq_stream, seq)
        if msg.subject == subjects.dlq(service):
            result.append((msg.data or b"", dict(msg.headers or {})))
    return result


def tick(n: int, job: JobType = JobType.PRICE_UPDATE) -> Tick:
    at = T0 + timedelta(minutes=5 * n)
    return Tick.for_slot(job, at, emitted_at=at, reason=TickReason.SCHEDULED)


async def test_malformed_ticks_go_to_dlq_and_consumer_keeps_running(
    pg_dsn: str, nats_url: str, nc: NatsClient, subjects: Subjects, brokers: list[DurableConsumers]
) -> None:
    store = await EventStore.connect(pg_dsn)
    ran: list[str] = []

    async def job(ctx: JobContext) -> dict[str, int]:
        ran.append(ctx.tick.tick_id)
        return {"symbols_updated": 1}

    broker = DurableConsumers(nats_url)
    brokers.append(broker)
    subscribe_ticks(broker, subjects=subjects, service="positions", job_type=JobType.PRICE_UPDATE,
                    runner=JobRunner(store), job=job)
    await broker.start()
    js = nc.jetstream()
    subject = subjects.tick("price_update")
    good = tick(0)
    await js.publish(subject, encode_tick(good))
    bad_payloads = {
        b"{not json": "malformed tick JSON",
        msgspec.json.encode({**msgspec.to_builtins(tick(1)), "job_type": "nope"}): "invalid tick",
        msgspec.json.encode({"job_type": "price_update", "tick_id": tick(2).tick_id}): "missing required field",
        # a strategy tick published on the price_update subject
        encode_tick(tick(3, JobType.STRATEGY_EXECUTION)): "published on the price_update subject",
        # tick id that does not match its scheduled time
        msgspec.json.encode({**msgspec.to_builtins(tick(4)), "tick_id": tick(5).tick_id}): "does not match",
    }
    for payload in bad_payloads:
        await js.publish(subject, payload)
    later = tick(6)
    await js.publish(subject, encode_tick(later))
    await until(lambda: len(ran) == 2, 10, "the two good ticks run")
    assert ran == [good.tick_id, later.tick_id]

    async def every_dead_letter() -> list[tuple[bytes, dict[str, str]]]:
        dead = await dlq_messages(js, subjects, "positions")
        return dead if len(dead) == len(bad_payloads) else []

    dead = await until(every_dead_letter, 10, f"{len(bad_payloads)} dead letters")
    assert [d[0] for d in dead] == list(bad_payloads)
    for (_payload, headers), expected in zip(dead, bad_payloads.values(), strict=True):
        assert expected in headers[H_REASON], headers[H_REASON]
        assert headers[H_SUBJECT] == subject
    # every message is settled: nothing pending, nothing waiting for an ack
    info = await js.consumer_info(subjects.ticks_stream, "positions_price_update")
    assert info.num_pending == 0 and info.num_ack_pending == 0
    await store.close()


async def test_transient_errors_are_retried_then_dead_lettered(
    nats_url: str, nc: NatsClient, subjects: Subjects, brokers: list[DurableConsumers]
) -> None:
    """A handler's own error is retried up to max_deliver deliveries, then dead-lettered; a server error
    (PostgreSQL or NATS down) is retried for as long as it lasts and never dead-lettered."""
    attempts: dict[bytes, list[int]] = {}

    async def flaky(delivery: Delivery) -> None:
        attempts.setdefault(delivery.data, []).append(delivery.num_delivered)
        if delivery.data == b"always" or (delivery.data == b"twice" and delivery.num_delivered <= 2):
            raise RuntimeError("cannot handle: postgresql://openbell:hunter2@db:5432/openbell")
        if delivery.data == b"server" and delivery.num_delivered <= 5:
            raise ConnectionError("database unavailable: postgresql://openbell:hunter2@db:5432/openbell")
        if delivery.data == b"poison":
            raise Reject("cannot parse")

    broker = DurableConsumers(nats_url)
    brokers.append(broker)
    subject = subjects.event("price", "PriceUpdated")
    subscribe_durable(broker, subjects=subjects, service="alerts", subject=subject, stream=subjects.events_stream,
                      handler=flaky, max_deliver=3, backoff=(0.05, 0.1))
    consumer = durable_name("alerts", subject)

    def counted(outcome: str) -> float:
        labels = {"consumer": consumer, "outcome": outcome}
        return REGISTRY.get_sample_value("openbell_consumer_messages_total", labels) or 0.0

    before = {outcome: counted(outcome) for outcome in ("acked", "retried", "dead_lettered")}
    await broker.start()
    js = nc.jetstream()
    for payload in (b"twice", b"always", b"poison", b"fine", b"server"):
        await js.publish(subject, payload)
    await until(
        lambda: len(attempts.get(b"always", [])) == 3
        and len(attempts.get(b"twice", [])) == 3
        and len(attempts.get(b"server", [])) == 6,
        10,
        "the retries of always, twice and server",
    )
    await asyncio.sleep(0.3)  # no delivery beyond these within 0.3 s (the backoff is 0.1 s)
    assert attempts[b"twice"] == [1, 2, 3]  # succeeded on the third delivery
    assert attempts[b"always"] == [1, 2, 3]  # gave up after max_deliver
    assert attempts[b"server"] == [1, 2, 3, 4, 5, 6]  # past max_deliver: the server was down, not the message
    assert attempts[b"poison"] == [1] and attempts[b"fine"] == [1]
    dead = await dlq_messages(js, subjects, "alerts")
    reasons = {payload: headers[H_REASON] for payload, headers in dead}
    assert set(reasons) == {b"always", b"poison"}
    assert reasons[b"always"].startswith("gave up after 3 deliveries: RuntimeError")
    assert "hunter2" not in reasons[b"always"] and "postgresql://***@db" in reasons[b"always"]
    assert reasons[b"poison"] == "cannot parse"
    # twice: acked on its third delivery; always: retried twice, then dead-lettered; poison: dead-lettered;
    # server: retried five times, then acked
    after = {outcome: counted(outcome) - before[outcome] for outcome in before}
    assert after == {"acked": 3, "retried": 9, "dead_lettered": 2}


async def test_workers_share_one_durable_consumer(
    pg_dsn: str, nats_url: str, nc: NatsClient, subjects: Subjects, brokers: list[DurableConsumers]
) -> None:
    store = await EventStore.connect(pg_dsn)
    ran: dict[str, list[str]] = {"w1": [], "w2": []}

    def job_for(worker: str) -> Callable[[JobContext], object]:
        async def job(ctx: JobContext) -> dict[str, int]:
            ran[worker].append(ctx.tick.tick_id)
            await asyncio.sleep(0.01)
            return {}

        return job

    for worker in ("w1", "w2"):
        broker = DurableConsumers(nats_url)
        brokers.append(broker)
        subscribe_ticks(broker, subjects=subjects, service="orders", job_type=JobType.ORDER_STATUS_CHECK,
                        runner=JobRunner(store, worker=worker), job=job_for(worker))  # type: ignore[arg-type]
        await broker.start()
    js = nc.jetstream()
    ticks = [Tick.for_slot(JobType.ORDER_STATUS_CHECK, T0 + timedelta(minutes=i), emitted_at=T0,
                           reason=TickReason.SCHEDULED) for i in range(30)]
    for t in ticks:
        await js.publish(subjects.tick("order_status_check"), encode_tick(t), headers={"Nats-Msg-Id": t.tick_id})
    await until(lambda: len(ran["w1"]) + len(ran["w2"]) == 30, 10, "30 ticks run")
    await asyncio.sleep(0.2)  # and no tick runs a second time within 0.2 s
    all_runs = ran["w1"] + ran["w2"]
    assert sorted(all_runs) == sorted(t.tick_id for t in ticks), "each tick ran exactly once"
    consumers = [c.name for c in await js.consumers_info(subjects.ticks_stream)]
    assert consumers == ["orders_order_status_check"]
    await store.close()


async def test_consumers_keep_fetching_across_a_nats_restart(private_nats: EmbeddedNats, subject_prefix: str) -> None:
    """The server dies and comes back (its streams and durable consumers are on disk): the fetch loops
    ride out the outage and handle what is published afterwards, each message once."""
    nc = await nats.connect(private_nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    subjects = Subjects(subject_prefix)
    await subjects.ensure_streams(nc.jetstream())
    handled: list[bytes] = []

    async def handler(delivery: Delivery) -> None:
        handled.append(delivery.data)

    consumers = DurableConsumers(private_nats.url)
    subject = subjects.event("price", "PriceUpdated")
    subscribe_durable(consumers, subjects=subjects, service="alerts", subject=subject,
                      stream=subjects.events_stream, handler=handler)
    await consumers.start()
    try:
        await nc.jetstream().publish(subject, b"before")
        await until(lambda: handled == [b"before"], 10, "the message published before the restart")
        private_nats.kill()
        await asyncio.sleep(0.5)  # the outage under test: the server stays down for half a second
        private_nats.start(reuse=False)
        # Publish once the client is back (its reconnect loop decides when); the message id keeps it once.
        await until(
            lambda: nc.jetstream().publish(subject, b"after", headers={"Nats-Msg-Id": "after"}),
            20,
            "the publisher to reconnect",
            interval=0.1,
            tolerate=lambda exc: isinstance(exc, nats.errors.Error | TimeoutError),
        )
        await until(lambda: b"after" in handled, 20, "the message published after the restart")
        await asyncio.sleep(0.2)  # and nothing handled twice within 0.2 s
        assert handled == [b"before", b"after"]
        # Nothing is left undelivered. (The ack of "before" may be lost with the killed server's unsynced
        # consumer state: JetStream would then deliver it again after ack_wait, which handlers tolerate.)
        info = await nc.jetstream().consumer_info(subjects.events_stream, durable_name("alerts", subject))
        assert info.num_pending == 0
    finally:
        await consumers.stop()
        await nc.close()


async def test_stop_lets_a_handler_finish_then_cuts_a_hanging_one_short(
    nats_url: str, nc: NatsClient, subjects: Subjects
) -> None:
    """Stopping a service does not cut short the message it is handling (an order half submitted is
    finished and acknowledged); one that outlasts the drain is cancelled unacknowledged, for redelivery."""
    js = nc.jetstream()
    subject = subjects.event("order", "OrderRequested")
    entered = asyncio.Event()
    finished: list[bytes] = []

    async def handler(delivery: Delivery) -> None:
        entered.set()
        await asyncio.sleep(0.3 if delivery.data == b"slow" else 60)
        finished.append(delivery.data)

    durable = durable_name("orders", subject)
    for payload, drain, acked in ((b"slow", 5.0, True), (b"hangs", 0.2, False)):
        entered.clear()
        consumers = DurableConsumers(nats_url, drain_seconds=drain)
        subscribe_durable(consumers, subjects=subjects, service="orders", subject=subject,
                          stream=subjects.events_stream, handler=handler)
        await consumers.start()
        await js.publish(subject, payload)
        await asyncio.wait_for(entered.wait(), 10)
        t0 = time.monotonic()
        await consumers.stop()
        took = time.monotonic() - t0
        assert finished == [b"slow"]
        assert (0.2 < took < 2.0) if acked else (took < 2.0)

        async def ack_pending() -> int:
            return (await js.consumer_info(subjects.events_stream, durable)).num_ack_pending

        async def acknowledged() -> bool:
            return await ack_pending() == 0

        if acked:  # the server may answer before it has read the closed client's ack
            await until(acknowledged, 2, "the finished message's ack", interval=0.02)
        else:
            assert await ack_pending() == 1  # not acknowledged: JetStream delivers it again after ack_wait


async def test_a_restart_with_new_settings_updates_the_durable_consumer(
    nats_url: str, nc: NatsClient, subjects: Subjects
) -> None:
    """The durable consumer outlives the process: a service started again with another ack wait or
    delivery limit brings it to those settings, rather than running on the first start's."""
    subject = subjects.event("price", "PriceUpdated")
    durable = durable_name("alerts", subject)

    async def handler(delivery: Delivery) -> None:
        return None

    # The ack wait of the consumer itself, then the process's (OPENBELL_ACK_WAIT_SECONDS via the host). The
    # server's delivery limit is off: openbell dead-letters after max_deliver failures of the handler's own.
    for own_ack_wait, process_ack_wait in ((30.0, 11.0), (None, 7.0)):
        consumers = DurableConsumers(nats_url, ack_wait=process_ack_wait, max_deliver=3)
        subscribe_durable(consumers, subjects=subjects, service="alerts", subject=subject,
                          stream=subjects.events_stream, handler=handler, ack_wait=own_ack_wait)
        await consumers.start()
        await consumers.stop()
        info = await nc.jetstream().consumer_info(subjects.events_stream, durable)
        expected = own_ack_wait if own_ack_wait is not None else process_ack_wait
        assert (info.config.ack_wait, info.config.max_deliver) == (expected, -1)
        assert info.config.filter_subject == subject
