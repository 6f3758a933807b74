"""Fills into the books on real NATS + PostgreSQL: each fill booked exactly once whatever the
redeliveries, duplicates and workers; books, read models and a rebuild agree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
from nats.aio.client import Client as NatsClient

from eventstore.relay import envelope_of
from services.model.vocabulary import Side
from services.positions.books import load_book
from services.stack import hosted
from tests.positions.helpers import append_fill, fill, open_portfolio, settings_for
from tests.waiting import until

T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


async def test_fills_booked_once_with_two_workers_and_redeliveries(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient
) -> None:
    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    feed: list[dict] = []

    async def on_feed(msg) -> None:  # type: ignore[no-untyped-def]
        feed.append(msgspec.json.decode(msg.data))

    await nc.subscribe(f"{subject_prefix}.feed.fill.*", cb=on_feed)
    async with hosted(["relay", "projections", "positions"], settings) as one, \
            hosted(["positions"], settings):
        store = one.rt.store
        await open_portfolio(store, "p1", "10000", T0)
        await open_portfolio(store, "p2", "5000", T0)
        fills = []
        # p1: many orders, partial fills, a sale that realizes P&L; p2: one order.
        for i in range(8):
            coid = f"o{i}"
            at = T0 + timedelta(minutes=i)
            fills.append(fill("p1", coid, "AAPL", Side.BUY, "2", "2", f"{100 + i}", at))
            fills.append(fill("p1", coid, "AAPL", Side.BUY, "5", "3", f"{101 + i}", at, final=True))
        fills.append(fill("p1", "s1", "AAPL", Side.SELL, "10", "10", "120", T0 + timedelta(minutes=20), final=True))
        fills.append(fill("p2", "q1", "MSFT", Side.BUY, "4", "4", "50", T0, final=True))
        # A zero-quantity completion after a partial fill: booked too (its own cause).
        fills.append(fill("p2", "q2", "MSFT", Side.BUY, "1", "1", "51", T0))
        fills.append(fill("p2", "q2", "MSFT", Side.BUY, "1", "0", "51", T0, final=True))
        recorded = []
        for f in fills:
            await append_fill(store, f)
        async for e in store.read_all():
            if e.stream_id.startswith("order-"):
                recorded.append(e)
        # Duplicates on the subject (no Nats-Msg-Id: JetStream keeps them): each is a redelivery.
        for e in recorded[:6]:
            await nc.jetstream().publish(f"{subject_prefix}.event.order.{e.type}", envelope_of(e))

        async def all_booked() -> bool:
            n = 0
            for pid in ("p1", "p2"):
                async for e in store.read_stream(f"portfolio-{pid}"):
                    n += e.type == "FillApplied"
            return n == len(fills)

        await until(all_booked, what="every fill booked")
        # Booked in log order per portfolio, whichever worker or durable got each fill first.
        for pid in ("p1", "p2"):
            source = [(f.client_order_id, f.cumulative_qty, f.fill_qty) for f in fills if f.portfolio_id == pid]
            applied = [msgspec.json.decode(e.data) async for e in store.read_stream(f"portfolio-{pid}")
                       if e.type == "FillApplied"]
            assert [(a["client_order_id"], Decimal(a["cumulative_qty"]), Decimal(a["fill_qty"]))
                    for a in applied] == source
        await one.catch_up()
        book1, _ = await load_book(store, "p1")
        book2, _ = await load_book(store, "p2")
        async with store.pool.acquire() as con:
            rows = {(r["portfolio_id"], r["symbol"]): r for r in await con.fetch("SELECT * FROM positions")}
            portfolios = {r["portfolio_id"]: r for r in await con.fetch("SELECT * FROM portfolios")}

    assert book1 is not None and book2 is not None
    bought = sum((Decimal(2) * (100 + i) + Decimal(3) * (101 + i) for i in range(8)), Decimal(0))
    assert book1.position("AAPL").qty == 30
    assert book1.cash == Decimal(10000) - bought + Decimal(1200)
    # cash + basis - realized == starting cash
    assert book1.cash + book1.cost_basis - book1.realized_pnl == Decimal(10000)
    assert book2.position("MSFT").qty == 5 and book2.cash == Decimal(5000) - 200 - 51
    assert rows[("p1", "AAPL")]["qty"] == 30
    assert rows[("p1", "AAPL")]["cost_basis"] == book1.position("AAPL").cost_basis
    assert rows[("p1", "AAPL")]["realized_pnl"] == book1.realized_pnl
    assert portfolios["p1"]["cash"] == book1.cash
    assert portfolios["p2"]["cash"] == book2.cash
    assert portfolios["p1"]["realized_pnl"] == book1.realized_pnl
    # No price observed yet: no market value (never 0 for an unpriced position).
    assert portfolios["p1"]["market_value"] is None and portfolios["p1"]["unpriced_positions"] == 1
    booked = [m for m in feed if m["booked"]]
    assert len(booked) == len(fills)
    assert {m["portfolio_id"] for m in booked} == {"p1", "p2"}


async def test_unknown_portfolio_and_garbage_are_dead_lettered(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient
) -> None:
    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    async with hosted(["relay", "positions"], settings) as ctx:
        dlq = await nc.subscribe(f"{subject_prefix}.dlq.positions")
        await nc.jetstream().publish(f"{subject_prefix}.event.order.OrderFilled", b"not json")
        msg = await dlq.next_msg(timeout=10)
        assert "not an event envelope" in msg.headers["Openbell-Dlq-Reason"]
        # The consumer keeps running: a valid fill afterwards is booked.
        await open_portfolio(ctx.rt.store, "p1", "100", T0)
        await append_fill(ctx.rt.store, fill("p1", "o1", "AAPL", Side.BUY, "1", "1", "10", T0, final=True))

        async def booked() -> bool:
            book, _ = await load_book(ctx.rt.store, "p1")
            return book is not None and book.position("AAPL").qty == 1

        await until(booked, what="the fill booked into p1")
