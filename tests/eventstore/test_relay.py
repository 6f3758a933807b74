"""The relay on real NATS JetStream and PostgreSQL, including server restarts."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import asyncpg
import msgspec
import nats
from nats.aio.client import Client as NatsClient

from eventstore import ANY, EventStore, NewEvent, RecordedEvent
from eventstore.relay import Relay, envelope_decoder
from services.core.embedded import EmbeddedNats, EmbeddedPostgres
from services.core.subjects import Subjects
from tests.waiting import until


def order_placed(n: int) -> NewEvent:
    return NewEvent(type="OrderPlaced", data={"n": n, "price": "10.50"}, event_id=uuid.uuid4(),
                    metadata={"causation_id": f"c-{n}"})


async def stream_messages(nc: NatsClient, subjects: Subjects) -> list[nats.aio.msg.Msg]:
    """Every message stored in the events stream, in stream order."""
    js = nc.jetstream()
    info = await js.stream_info(subjects.events_stream)
    messages = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        messages.append(await js.get_msg(subjects.events_stream, seq))
    return messages


async def test_relay_publishes_every_event_once_with_envelope(
    store: EventStore, nc: NatsClient, subject_prefix: str
) -> None:
    subjects = Subjects(subject_prefix)
    await subjects.ensure_streams(nc.jetstream())
    relay = Relay(store, nc, subjects, batch_size=10)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    appended = [order_placed(n) for n in range(35)]
    for i, event in enumerate(appended):
        await store.append(f"order-{i % 5}", [event])

    async def all_published() -> bool:
        return relay.published >= 35

    await until(all_published, 20, "35 events published")
    stop.set()
    await task
    messages = await stream_messages(nc, subjects)
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [str(e.event_id) for e in appended]  # type: ignore[index]
    first = messages[0]
    assert first.subject == f"{subject_prefix}.event.order.OrderPlaced"
    envelope = envelope_decoder.decode(first.data)
    assert envelope.stream_id == "order-0" and envelope.version == 0 and envelope.type == "OrderPlaced"
    assert msgspec.json.decode(envelope.data) == {"n": 0, "price": "10.50"}
    assert envelope.metadata == {"causation_id": "c-0"}
    assert envelope.recorded_at.tzinfo is not None

    # A restarted relay continues from its checkpoint: nothing is published again.
    again = Relay(store, nc, subjects)
    stop = asyncio.Event()
    task = asyncio.create_task(again.run(stop))
    await store.append("order-9", [order_placed(99)])

    async def one_more() -> bool:
        return again.published == 1

    await until(one_more, 20, "the restarted relay to publish the new event")
    stop.set()
    await task
    assert len(await stream_messages(nc, subjects)) == 36


async def test_only_one_relay_is_active_and_a_standby_takes_over(
    store: EventStore, nc: NatsClient, subject_prefix: str
) -> None:
    subjects = Subjects(subject_prefix)
    await subjects.ensure_streams(nc.jetstream())
    first, second = Relay(store, nc, subjects), Relay(store, nc, subjects)
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(first.run(stop_first))]
    await asyncio.wait_for(first.is_leader.wait(), 5)
    tasks.append(asyncio.create_task(second.run(stop_second)))
    for n in range(10):
        await store.append("order-1", [order_placed(n)])
    await until(lambda: first.published == 10, 20, "the active relay to publish the first 10 events")
    await asyncio.sleep(0.6)  # the standby tries the lock every 0.5 s: it must stay a standby meanwhile
    assert not second.is_leader.is_set()
    stop_first.set()
    await tasks[0]
    await asyncio.wait_for(second.is_leader.wait(), 5)
    for n in range(10, 20):
        await store.append("order-1", [order_placed(n)])

    async def all_in_stream() -> bool:
        return len(await stream_messages(nc, subjects)) == 20

    await until(all_in_stream, 20, "20 events in the stream")
    stop_second.set()
    await tasks[1]
    assert first.published + second.published == 20
    assert second.published == 10


async def test_relay_survives_nats_restart_without_loss_or_duplicates(
    store: EventStore, private_nats: EmbeddedNats, subject_prefix: str
) -> None:
    nc = await nats.connect(private_nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    subjects = Subjects(subject_prefix)
    await subjects.ensure_streams(nc.jetstream())
    relay = Relay(store, nc, subjects, batch_size=20, ack_timeout=1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    appended: list[uuid.UUID] = []

    async def writer(count: int) -> None:
        for n in range(count):
            event = order_placed(n)
            await store.append(f"order-{n % 7}", [event])
            appended.append(event.event_id)
            await asyncio.sleep(0.003)  # a steady trickle, so the outage falls in the middle of it

    write = asyncio.create_task(writer(300))
    await until(lambda: relay.published >= 20, 20, "the relay publishing while the writer writes")
    private_nats.kill()
    await asyncio.sleep(0.5)  # the outage under test: the server stays down for half a second
    private_nats.start(reuse=False)
    await write

    async def delivered() -> bool:
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            return len(await stream_messages(nc, subjects)) >= len(appended)
        return False

    await until(delivered, 30, "every appended event in the stream after the restart")
    stop.set()
    await task
    ids = [m.headers["Nats-Msg-Id"] for m in await stream_messages(nc, subjects)]  # type: ignore[index]
    assert len(ids) == len(set(ids)), "a consumer would see an event twice"
    assert set(ids) == {str(i) for i in appended}
    await nc.close()


async def test_relay_survives_postgres_restart(
    private_postgres: EmbeddedPostgres, nc: NatsClient, subject_prefix: str
) -> None:
    store = await EventStore.connect(private_postgres.dsn())
    subjects = Subjects(subject_prefix)
    await subjects.ensure_streams(nc.jetstream())
    relay = Relay(store, nc, subjects)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    for n in range(20):
        await store.append("order-1", [order_placed(n)])
    await until(lambda: relay.published == 20, 20, "the first 20 events published before the crash")
    private_postgres.kill()
    private_postgres.start(reuse=False)
    # The pool drops its dead connections; appends work again once the server is back.
    for n in range(20, 40):

        async def appended(n: int = n) -> bool:
            await store.append("order-1", [order_placed(n)])
            return True

        await until(
            appended,
            5,
            f"append #{n} once PostgreSQL is back",
            interval=0.1,
            tolerate=lambda exc: isinstance(exc, OSError | asyncpg.PostgresError | asyncpg.InterfaceError),
        )

    async def all_in_stream() -> bool:
        return len(await stream_messages(nc, subjects)) == 40

    await until(all_in_stream, 30, "40 events in the stream")
    stop.set()
    await task
    await store.close()


async def test_relay_leaves_its_connection_as_it_found_it(pg_dsn: str, nc: NatsClient, subject_prefix: str) -> None:
    """The relay's checkpoint writes skip the WAL flush with a session setting on its own connection; the
    store's pool does not reset sessions, so the relay must undo it before the connection serves appends."""
    store = await EventStore.connect(pg_dsn, min_size=1, max_size=1)  # one connection: the relay's is reused
    try:
        subjects = Subjects(subject_prefix)
        await subjects.ensure_streams(nc.jetstream())
        relay = Relay(store, nc, subjects)
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run(stop))
        await asyncio.wait_for(relay.is_leader.wait(), 5)
        stop.set()
        await task
        async with store.pool.acquire() as con:
            source = "SELECT source FROM pg_settings WHERE name = 'synchronous_commit'"
            assert await con.fetchval(source) != "session"
            locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            assert await con.fetchval(locks) == 0
    finally:
        await store.close()


async def test_relay_checkpoint_is_stored_once_caught_up_and_a_lost_write_only_republishes(
    store: EventStore, nc: NatsClient, subject_prefix: str
) -> None:
    """While events keep coming the checkpoint is written at most every ``checkpoint_every``; once the
    relay is caught up it is stored. A checkpoint write lost in a crash makes the next relay publish
    again what went out since; JetStream drops the repeats (same Nats-Msg-Id): every event once."""
    subjects = Subjects(subject_prefix)
    await subjects.ensure_streams(nc.jetstream())
    relay = Relay(store, nc, subjects, checkpoint_every=3600.0)  # only the caught-up write happens
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    for n in range(20):
        await store.append(f"order-{n % 3}", [order_placed(n)])
    positions = [e.global_position async for e in store.read_all()]

    async def checkpoint() -> int:
        async with store.pool.acquire() as con:
            return int(
                await con.fetchval("SELECT position FROM eventstore_checkpoints WHERE name = $1", relay.checkpoint_name)
            )

    async def stored() -> bool:
        return relay.published == 20 and await checkpoint() == positions[-1]

    await until(stored, 20, "20 events published and the checkpoint stored")
    assert relay.published_position == positions[-1]
    stop.set()
    await task
    # A relay that starts caught up has published up to its checkpoint (what a lag metric compares with).
    resumed = Relay(store, nc, subjects)
    stop = asyncio.Event()
    task = asyncio.create_task(resumed.run(stop))

    async def resumed_at_checkpoint() -> bool:
        return resumed.published_position == positions[-1]

    await until(resumed_at_checkpoint, 20, "the resumed relay at its checkpoint")
    assert resumed.published == 0
    stop.set()
    await task

    # The write of the last 8 events' checkpoint was lost (a crash right after their acks).
    async with store.pool.acquire() as con:
        await con.execute(
            "UPDATE eventstore_checkpoints SET position = $2, tx = (SELECT tx_id::text::bigint FROM events"
            " WHERE global_position = $2) WHERE name = $1",
            relay.checkpoint_name,
            positions[11],
        )
    again = Relay(store, nc, subjects)
    stop = asyncio.Event()
    task = asyncio.create_task(again.run(stop))

    async def republished() -> bool:
        return again.published == 8

    await until(republished, 20, "the 8 events after the lost checkpoint republished")
    stop.set()
    await task
    messages = await stream_messages(nc, subjects)
    assert len(messages) == 20 and len({m.headers["Nats-Msg-Id"] for m in messages}) == 20  # type: ignore[index]
    assert await checkpoint() == positions[-1]


async def test_early_types_are_published_from_the_append_and_counted_once(
    store: EventStore, nc: NatsClient, subject_prefix: str
) -> None:
    """An event of an early type appended in the relay's process goes out from the append's result; the
    tailing read then moves past it. Every event is in the stream once, with the stored content."""
    subjects = Subjects(subject_prefix)
    await subjects.ensure_streams(nc.jetstream())

    early: list[str] = []

    class Recording(Relay):
        async def _publish_early(self, events: list[RecordedEvent]) -> None:
            early.extend(str(e.event_id) for e in events)
            await super()._publish_early(events)

    relay = Recording(store, nc, subjects, early_types=["OrderPlaced"])
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await asyncio.wait_for(relay.is_leader.wait(), 10)
    placed = [order_placed(n) for n in range(5)]
    other = NewEvent(type="OrderNoted", data={"n": 1}, event_id=uuid.uuid4())
    for i, event in enumerate(placed):
        await store.append(f"order-{i}", [event])
    await store.append_many([("order-9", [other], ANY), ("order-10", [order_placed(10)], ANY)])

    async def all_published() -> bool:
        return relay.published == 7

    await until(all_published, 20, "7 events published")
    stop.set()
    await task
    assert relay.published == 7  # each event counted once, early or not
    assert len(early) == 6 and str(other.event_id) not in early
    messages = await stream_messages(nc, subjects)
    assert len(messages) == 7 and len({m.headers["Nats-Msg-Id"] for m in messages}) == 7  # type: ignore[index]
    stored = {str(e.event_id): e async for e in store.read_all()}
    for message in messages:
        envelope = envelope_decoder.decode(message.data)
        recorded = stored[str(envelope.event_id)]
        assert (envelope.stream_id, envelope.version, envelope.global_position) == (
            recorded.stream_id, recorded.version, recorded.global_position,
        )
        assert envelope.recorded_at == recorded.recorded_at
        assert msgspec.json.decode(envelope.data) == msgspec.json.decode(recorded.data)
