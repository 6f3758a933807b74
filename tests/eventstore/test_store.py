"""The event store on a real PostgreSQL: concurrency, idempotency, append-only, no skipped late commits."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import msgspec
import pytest

from eventstore import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    DuplicateEventId,
    EventDecodeError,
    EventRegistry,
    EventStore,
    NewEvent,
    PositionNotFound,
    UnknownEventType,
    WrongExpectedVersion,
)
from eventstore.store import _READ_ALL
from tests.waiting import until


class Deposited(msgspec.Struct, frozen=True, kw_only=True):
    amount: Decimal
    at: datetime


registry = EventRegistry()
registry.register(Deposited)


def deposit(amount: str = "1.10") -> NewEvent:
    return NewEvent(
        type="Deposited",
        data=Deposited(amount=Decimal(amount), at=datetime(2026, 11, 24, 15, 0, tzinfo=UTC)),
        event_id=uuid.uuid4(),
        metadata={"correlation_id": "c-1"},
    )


async def test_append_and_read_back_typed_events(store: EventStore) -> None:
    result = await store.append("account-1", [deposit("10.25"), deposit("0.10")], NO_STREAM)
    assert result.next_expected_version == 1
    events = [e async for e in store.read_stream("account-1")]
    assert [e.version for e in events] == [0, 1]
    assert events[0].metadata == {"correlation_id": "c-1"}
    assert events[0].category == "account"
    first = registry.decode(events[0])
    assert first == Deposited(amount=Decimal("10.25"), at=datetime(2026, 11, 24, 15, 0, tzinfo=UTC))
    assert isinstance(first.amount, Decimal) and first.at.tzinfo is not None
    assert [e.version async for e in store.read_stream("account-1", from_version=1)] == [1]


async def test_expected_versions(store: EventStore) -> None:
    with pytest.raises(WrongExpectedVersion, match="expected STREAM_EXISTS, found no stream"):
        await store.append("s-1", [deposit()], STREAM_EXISTS)
    await store.append("s-1", [deposit()], NO_STREAM)
    with pytest.raises(WrongExpectedVersion, match="expected NO_STREAM, found version 0"):
        await store.append("s-1", [deposit()], NO_STREAM)
    with pytest.raises(WrongExpectedVersion):
        await store.append("s-1", [deposit()], 5)
    assert (await store.append("s-1", [deposit()], 0)).next_expected_version == 1
    assert (await store.append("s-1", [deposit()], STREAM_EXISTS)).next_expected_version == 2
    assert (await store.append("s-1", [deposit()], ANY)).next_expected_version == 3
    assert await store.stream_version("s-1") == 3
    assert await store.stream_version("s-none") == -1


async def test_concurrent_writers_one_winner_per_version(store: EventStore) -> None:
    await store.append("race-1", [deposit()], NO_STREAM)

    async def writer() -> str:
        try:
            await store.append("race-1", [deposit()], 0)
            return "won"
        except WrongExpectedVersion:
            return "lost"

    outcomes = await asyncio.gather(*(writer() for _ in range(16)))
    assert outcomes.count("won") == 1
    assert await store.stream_version("race-1") == 1


async def test_concurrent_any_writers_all_land_without_gaps_in_versions(store: EventStore) -> None:
    await asyncio.gather(*(store.append("busy-1", [deposit(), deposit()]) for _ in range(20)))
    versions = [e.version async for e in store.read_stream("busy-1")]
    assert versions == list(range(40))


async def test_idempotent_reappend_is_a_noop(store: EventStore) -> None:
    events = [deposit(), deposit()]
    first = await store.append("idem-1", events, NO_STREAM)
    again = await store.append("idem-1", events, NO_STREAM)
    assert again.written is False
    assert (again.next_expected_version, again.last_global_position) == (
        first.next_expected_version,
        first.last_global_position,
    )
    assert await store.count() == 2
    # Part of a batch already stored, or an id stored in another stream: refused, nothing written.
    with pytest.raises(DuplicateEventId):
        await store.append("idem-1", [events[0], deposit()])
    with pytest.raises(DuplicateEventId):
        await store.append("idem-2", [events[0]])
    with pytest.raises(DuplicateEventId):
        await store.append("idem-3", [events[0], events[0]])
    assert await store.count() == 2


async def test_concurrent_duplicate_appends_write_once(store: EventStore) -> None:
    event = deposit()
    results = await asyncio.gather(*(store.append("dup-1", [event], ANY) for _ in range(10)))
    assert sum(r.written for r in results) == 1
    assert await store.count() == 1


async def test_events_table_is_append_only(store: EventStore) -> None:
    await store.append("ro-1", [deposit()])
    async with store.pool.acquire() as con:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await con.execute("UPDATE events SET event_type = 'X'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await con.execute("DELETE FROM events")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await con.execute("TRUNCATE events")
    assert await store.count() == 1


async def test_unknown_type_and_bad_data_give_clear_errors(store: EventStore) -> None:
    await store.append("odd-1", [NewEvent(type="Mystery", data={"x": 1}, event_id=uuid.uuid4())])
    await store.append("odd-1", [NewEvent(type="Deposited", data={"amount": [1]}, event_id=uuid.uuid4())])
    mystery, broken = [e async for e in store.read_stream("odd-1")]
    with pytest.raises(UnknownEventType, match=r"unknown event type 'Mystery' at global position \d+"):
        registry.decode(mystery)
    with pytest.raises(EventDecodeError, match=r"cannot decode Deposited at global position \d+: .*amount"):
        registry.decode(broken)


async def test_bad_arguments(store: EventStore) -> None:
    with pytest.raises(ValueError, match="stream_id"):
        await store.append("", [deposit()])
    with pytest.raises(ValueError, match="at least one"):
        await store.append("x-1", [])
    with pytest.raises(ValueError, match="expected_version"):
        await store.append("x-1", [deposit()], -7)
    with pytest.raises(PositionNotFound):
        [e async for e in store.read_all(123456)]


async def test_read_all_pages_and_checkpoints(store: EventStore) -> None:
    for i in range(25):
        await store.append(f"page-{i % 3}", [deposit()])
    everything = [e async for e in store.read_all(batch_size=7)]
    assert len(everything) == 25
    assert len({e.global_position for e in everything}) == 25
    middle = everything[9].global_position
    assert [e.event_id async for e in store.read_all(middle, batch_size=4)] == [e.event_id for e in everything[10:]]
    assert len([e async for e in store.read_all(limit=11, batch_size=4)]) == 11


async def test_a_page_of_the_log_walks_the_commit_order_index(store: EventStore) -> None:
    """Each page of read_all / the relay / a projection reads its rows in index order from the checkpoint,
    never sorting everything after it: reading a log of n events must not cost n squared."""
    for batch in range(20):
        await store.append(f"bulk-{batch}", [deposit() for _ in range(1000)])
    async with store.pool.acquire() as con:
        await con.execute("VACUUM (ANALYZE) events")
        position = await con.fetchval("SELECT global_position FROM events ORDER BY global_position OFFSET 5000 LIMIT 1")
        tx = await store.tx_of(position, con=con)
        plan = await con.fetchval("EXPLAIN (FORMAT JSON) " + _READ_ALL, str(tx), position, 1000)
    nodes = []
    pending = [json.loads(plan)[0]["Plan"]]
    while pending:
        node = pending.pop()
        nodes.append(node["Node Type"])
        pending.extend(node.get("Plans", []))
    assert "Sort" not in nodes and "Index Scan" in nodes, nodes
    page = await store.read_page(position, 1000)
    assert len(page.events) == 1000 and page.events[0].global_position > position
    assert [e.global_position for e in page.events] == sorted(e.global_position for e in page.events)


async def test_tailing_reader_never_skips_a_late_commit(store: EventStore, pg_dsn: str) -> None:
    """Many writers, some holding their transaction open after inserting (late commits), while a reader
    tails by checkpoint. Every committed event must be seen exactly once."""
    stop = asyncio.Event()
    written: set[uuid.UUID] = set()
    rng = random.Random(7)

    async def slow_writer(n: int) -> None:
        con = await asyncpg.connect(pg_dsn)
        try:
            for i in range(15):
                event_id = uuid.uuid4()
                async with con.transaction():
                    # The identity value is taken now; the commit comes later, after faster writers.
                    await con.execute(
                        "INSERT INTO events (stream_id, stream_version, event_id, event_type, data)"
                        " VALUES ($1, $2, $3, 'Deposited', '{}')",
                        f"slow-{n}",
                        i,
                        event_id,
                    )
                    await asyncio.sleep(rng.uniform(0.005, 0.04))  # a slow writer: commits out of order
                written.add(event_id)
        finally:
            await con.close()

    async def fast_writer(n: int) -> None:
        for _ in range(40):
            event = deposit()
            await store.append(f"fast-{n}", [event])
            written.add(event.event_id)
            await asyncio.sleep(0)

    seen: list[uuid.UUID] = []

    async def reader() -> None:
        position = 0
        while True:
            batch = await store.read_batch(position, 17)
            for event in batch:
                seen.append(event.event_id)
                position = event.global_position
            if not batch:
                if stop.is_set():
                    return
                await asyncio.sleep(0.002)

    reader_task = asyncio.create_task(reader())
    await asyncio.gather(*(slow_writer(n) for n in range(4)), *(fast_writer(n) for n in range(6)))
    stop.set()
    await asyncio.wait_for(reader_task, 30)
    assert len(seen) == len(set(seen)), "an event was read twice"
    assert set(seen) == written, f"{len(written - set(seen))} committed events were skipped"


async def test_subscribe_all_catches_up_then_follows(store: EventStore) -> None:
    for _ in range(5):
        await store.append("sub-1", [deposit()])
    received: list[int] = []

    async def consume() -> None:
        async for event in store.subscribe_all(0, poll_interval=0.05):
            received.append(event.version)
            if len(received) == 8:
                return

    task = asyncio.create_task(consume())
    await until(lambda: len(received) == 5, 5, "the subscription to catch up with the first 5 events")
    for _ in range(3):
        await store.append("sub-1", [deposit()])
    await asyncio.wait_for(task, 5)
    assert received == list(range(8))


async def test_append_many_writes_every_stream_in_one_transaction_or_nothing(store: EventStore) -> None:
    await store.append("acct-a", [deposit()], NO_STREAM)
    batch = [("acct-a", [deposit(), deposit()], 0), ("acct-b", [deposit()], NO_STREAM), ("acct-c", [deposit()], ANY)]
    results = await store.append_many(batch)
    assert [r.next_expected_version for r in results] == [2, 0, 0]
    recorded = [e async for e in store.read_all()]
    assert [(e.stream_id, e.version) for e in recorded] == [
        ("acct-a", 0), ("acct-a", 1), ("acct-a", 2), ("acct-b", 0), ("acct-c", 0),
    ]
    assert results[-1].last_global_position == recorded[-1].global_position
    async with store.pool.acquire() as con:  # one transaction: one transaction id for the whole batch
        assert await con.fetchval("SELECT count(DISTINCT tx_id::text) FROM events WHERE stream_id <> 'acct-a'"
                                  " OR stream_version > 0") == 1

    # One expectation fails: nothing of the batch is written, and the error names that stream.
    with pytest.raises(WrongExpectedVersion, match="'acct-b': expected NO_STREAM, found version 0"):
        await store.append_many([("acct-d", [deposit()], NO_STREAM), ("acct-b", [deposit()], NO_STREAM)])
    assert await store.stream_version("acct-d") == -1

    # The same batch again is a success that writes nothing.
    again = await store.append_many(batch)
    assert [r.written for r in again] == [False, False, False]
    assert [(r.next_expected_version, r.last_global_position) for r in again] == [
        (r.next_expected_version, r.last_global_position) for r in results
    ]
    assert await store.count() == 5
    # Part of it stored already: refused, nothing written.
    with pytest.raises(DuplicateEventId):
        await store.append_many([("acct-e", [deposit()], ANY), ("acct-b", [batch[1][1][0]], ANY)])
    assert await store.count() == 5
    with pytest.raises(ValueError, match="each stream may appear once"):
        await store.append_many([("acct-f", [deposit()], ANY), ("acct-f", [deposit()], ANY)])
    with pytest.raises(ValueError, match="at least one"):
        await store.append_many([])


async def test_concurrent_append_many_of_one_batch_writes_it_once(store: EventStore) -> None:
    batch = [(f"race-{i}", [deposit()], NO_STREAM) for i in range(3)]

    async def writer() -> str:
        try:
            results = await store.append_many(batch)
        except WrongExpectedVersion:
            return "refused"
        return "wrote" if all(r.written for r in results) else "repeat"

    outcomes = await asyncio.gather(*(writer() for _ in range(8)))
    assert outcomes.count("wrote") == 1 and set(outcomes) <= {"wrote", "repeat", "refused"}
    assert await store.count() == 3


async def test_close_is_bounded_when_a_connection_is_stuck(pg_dsn: str) -> None:
    """A connection held by a query that does not end (as on a server that died mid-query) cannot keep a
    stopping process alive: close waits its timeout, then terminates the connections."""
    store = await EventStore.connect(pg_dsn)
    held = asyncio.Event()

    async def stuck() -> None:
        async with store.pool.acquire() as con:
            held.set()
            await con.execute("SELECT pg_sleep(30)")

    task = asyncio.create_task(stuck())
    await asyncio.wait_for(held.wait(), 10)
    started = asyncio.get_running_loop().time()
    await store.close(timeout=0.5)
    assert asyncio.get_running_loop().time() - started < 5
    with pytest.raises((asyncpg.InterfaceError, asyncpg.ConnectionDoesNotExistError, asyncio.CancelledError)):
        await task
