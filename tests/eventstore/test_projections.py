"""Projection runner on a real PostgreSQL: exactly-once effects, concurrent runners, rebuild == live."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import asyncpg
import pytest

from eventstore import EventStore, NewEvent, RecordedEvent
from eventstore.projections import STOP_AFTER, Projection, ProjectionFailed, ProjectionRunner, ProjectionStopped
from tests.waiting import until


def moved(amount: str) -> NewEvent:
    return NewEvent(type="Moved", data={"amount": amount}, event_id=uuid.uuid4())


class Balances(Projection):
    name = "balances"
    tables = ("balances",)
    event_types = frozenset({"Moved"})

    def __init__(self, fail_on: str | None = None) -> None:
        self.fail_on = fail_on

    async def setup(self, con: asyncpg.Connection) -> None:
        await con.execute(
            "CREATE TABLE IF NOT EXISTS balances (account text PRIMARY KEY, balance numeric NOT NULL,"
            " moves int NOT NULL, last_position bigint NOT NULL)"
        )

    async def apply(self, con: asyncpg.Connection, events: list[RecordedEvent]) -> None:
        import msgspec

        rows = []
        for event in events:
            amount = msgspec.json.decode(event.data)["amount"]
            if amount == self.fail_on:
                raise RuntimeError("projection bug")
            rows.append((event.stream_id, Decimal(amount), event.global_position))
        await con.executemany(
            "INSERT INTO balances VALUES ($1, $2, 1, $3) ON CONFLICT (account) DO UPDATE SET"
            " balance = balances.balance + excluded.balance, moves = balances.moves + 1,"
            " last_position = excluded.last_position",
            rows,
        )


async def table(store: EventStore) -> list[tuple[object, ...]]:
    async with store.pool.acquire() as con:
        return [tuple(r) for r in await con.fetch("SELECT * FROM balances ORDER BY account")]


async def test_live_projection_equals_rebuild(store: EventStore) -> None:
    runner = ProjectionRunner(store, [Balances()], batch_size=7)
    for i in range(60):
        await store.append(f"acct-{i % 4}", [moved(f"{i}.5")])
        await store.append(f"other-{i % 2}", [NewEvent(type="Ignored", data={}, event_id=uuid.uuid4())])
        if i % 9 == 0:
            await runner.run_once()
    await runner.run_once()
    live = await table(store)
    assert len(live) == 4
    assert sum(r[2] for r in live) == 60  # type: ignore[misc]
    assert sum(r[1] for r in live) == sum(Decimal(f"{i}.5") for i in range(60))  # type: ignore[misc]
    seen: list[int] = []
    assert await runner.rebuild("balances", progress=seen.append) == 120
    assert sum(seen) == 120
    assert await table(store) == live
    assert await runner.position("balances") == (await store.head_position())


async def test_failed_batch_leaves_neither_rows_nor_checkpoint(store: EventStore) -> None:
    runner = ProjectionRunner(store, [Balances(fail_on="13")], batch_size=100)
    await store.append("acct-1", [moved("1"), moved("2")])
    await runner.run_once()
    before = (await table(store), await runner.position("balances"))
    await store.append("acct-1", [moved("5"), moved("13")])
    await runner.run_once()  # a full pass goes on: the failure is logged and counted...
    with pytest.raises(ProjectionFailed, match="projection bug"):
        await runner.run_once("balances")  # ...and a reader of that projection gets it in one line
    assert (await table(store), await runner.position("balances")) == before
    # The fixed projection picks up exactly where the checkpoint is: 5 and 13 applied once.
    fixed = ProjectionRunner(store, [Balances()])
    await fixed.run_once()
    assert (await table(store))[0][1:3] == (Decimal("21"), 4)


async def test_a_projection_failing_again_at_one_position_stops_loudly_and_the_others_go_on(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    stops: list[tuple[str, int, str]] = []

    async def on_stopped(name: str, position: int, reason: str) -> None:
        stops.append((name, position, reason))

    class Other(Balances):
        name = "other_balances"
        tables = ("other_balances",)

        async def setup(self, con: asyncpg.Connection) -> None:
            await con.execute("CREATE TABLE IF NOT EXISTS other_balances (n int)")

        async def apply(self, con: asyncpg.Connection, events: list[RecordedEvent]) -> None:
            await con.executemany("INSERT INTO other_balances VALUES ($1)", [(1,) for _ in events])

    runner = ProjectionRunner(store, [Balances(fail_on="13"), Other()], batch_size=100)
    runner.on_stopped = on_stopped
    await store.append("acct-1", [moved("1"), moved("13")])
    for _ in range(STOP_AFTER + 2):
        await runner.run_once()
    assert set(runner.stopped) == {"balances"} and len(stops) == 1
    assert stops[0][0] == "balances" and "projection bug" in stops[0][2]
    assert "projection balances is stopped after position 0" in caplog.text
    assert await runner.position("other_balances") == 2  # the other projection followed the log
    with pytest.raises(ProjectionStopped):
        await runner.run_once("balances")
    assert "RuntimeError" in str(await runner.check("balances"))


async def test_concurrent_runners_apply_each_event_once(store: EventStore) -> None:
    runners = [ProjectionRunner(store, [Balances()], batch_size=5) for _ in range(3)]
    for runner in runners:
        await runner.setup()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop, poll_interval=0.005)) for r in runners]
    await asyncio.gather(*(store.append(f"acct-{i % 3}", [moved("1")]) for i in range(90)))

    async def all_applied() -> bool:
        return sum(r[2] for r in await table(store)) == 90  # type: ignore[misc]

    await until(all_applied, 10, "the 90 events applied", interval=0.02)
    stop.set()
    await asyncio.gather(*tasks)
    rows = await table(store)
    assert [r[1:3] for r in rows] == [(Decimal("30"), 30)] * 3


async def test_unknown_projection_name_is_a_clear_error(store: EventStore) -> None:
    runner = ProjectionRunner(store, [Balances()])
    with pytest.raises(KeyError, match=r"unknown projection 'nope' \(known: balances"):
        await runner.rebuild("nope")


async def test_relevant_only_skips_projections_with_nothing_of_their_types(store: EventStore) -> None:
    runner = ProjectionRunner(store, [Balances()])
    await store.append("acct-1", [moved("1")])
    await runner.run_once()
    start = await runner.position("balances")
    await store.append("noise-1", [NewEvent(type="Ignored", data={}, event_id=uuid.uuid4())])
    # Only other types pending: a reader's catch-up does nothing (the read model is current).
    assert await runner.run_once("balances", relevant_only=True) == 0
    assert await runner.position("balances") == start
    await store.append("acct-1", [moved("2")])
    assert await runner.run_once("balances", relevant_only=True) == 2
    assert (await table(store))[0][1:3] == (Decimal("3"), 2)
    # A full run moves the checkpoint past everything.
    await store.append("noise-1", [NewEvent(type="Ignored", data={}, event_id=uuid.uuid4())])
    assert await runner.run_once() == 1
    assert await runner.position("balances") == await store.head_position()
