"""price_update and portfolio_snapshot on real NATS + PostgreSQL with the simulator broker."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import msgspec
import pytest
from nats.aio.client import Client as NatsClient

from services.broker.simulator import SimBroker
from services.clock import calendar
from services.core.host import ServiceContext
from services.core.jobs.types import JobType, TickReason
from services.model.vocabulary import Side
from services.positions.books import load_book
from services.positions.valuation import value_portfolio
from services.stack import hosted
from tests.positions.helpers import (
    append_fill,
    fill,
    open_portfolio,
    redeliver_tick,
    run_tick,
    settings_for,
    sim_factory,
)
from tests.waiting import until

NY = calendar.NEW_YORK
T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # Tuesday 10:00 New York


async def _booked(ctx: ServiceContext, portfolio_id: str, symbol: str, qty: int) -> None:
    async def check() -> bool:
        book, _ = await load_book(ctx.rt.store, portfolio_id)
        return book is not None and book.position(symbol).qty == qty

    await until(check, what=f"{qty} {symbol} booked into {portfolio_id}")


async def test_price_update_batches_and_never_prices_missing_at_zero(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENBELL_QUOTE_BATCH_SIZE", "2")
    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    prices: list[dict] = []

    async def on_price(msg) -> None:  # type: ignore[no-untyped-def]
        prices.append(msgspec.json.decode(msg.data))

    await nc.subscribe(f"{subject_prefix}.feed.price.>", cb=on_price)
    async with hosted(["relay", "projections", "positions"], settings, broker_factory=sim_factory(pg_dsn)) as ctx:
        store = ctx.rt.store
        # Held: AAPL, MSFT, ZZZZ (unknown to the market: never quoted); watched: NVDA, BRK.B.
        await open_portfolio(store, "p1", "100000", T0, universe=("NVDA", "BRK.B", "AAPL"))
        await append_fill(store, fill("p1", "o1", "AAPL", Side.BUY, "10", "10", "100", T0, final=True))
        await append_fill(store, fill("p1", "o2", "MSFT", Side.BUY, "5", "5", "200", T0, final=True))
        await append_fill(store, fill("p1", "o3", "ZZZZ", Side.BUY, "1", "1", "10", T0, final=True))
        await _booked(ctx, "p1", "ZZZZ", 1)
        at = T0 + timedelta(minutes=5)
        end = await run_tick(ctx, JobType.PRICE_UPDATE, at)
        assert end["type"] == "JobExecutionCompleted", end
        assert end["counters"] == {"symbols_checked": 5, "symbols_updated": 4, "quote_problems": 1}
        broker = await ctx.broker()
        assert isinstance(broker, SimBroker)
        assert broker.calls("latest_quotes") == 3  # 5 symbols in batches of 2: one call per batch

        # A redelivered tick does nothing more.
        await redeliver_tick(ctx, JobType.PRICE_UPDATE, at, "positions")
        assert broker.calls("latest_quotes") == 3
        observed = [e async for e in store.read_all() if e.type == "QuotesObserved"]
        assert len(observed) == 1
        body = msgspec.json.decode(observed[0].data)
        assert body["problems"] == {"ZZZZ": "missing"}

        await ctx.catch_up()
        async with store.pool.acquire() as con:
            quotes = {r["symbol"]: r for r in await con.fetch("SELECT * FROM latest_quotes")}
            positions = {r["symbol"]: r for r in await con.fetch("SELECT * FROM positions")}
            portfolio = await con.fetchrow("SELECT * FROM portfolios WHERE portfolio_id = 'p1'")
    assert quotes["ZZZZ"]["price"] is None and quotes["ZZZZ"]["problem"] == "missing"
    aapl = quotes["AAPL"]["price"]
    assert aapl > 0 and positions["AAPL"]["last_price"] == aapl
    assert positions["AAPL"]["market_value"] == 10 * aapl
    assert positions["AAPL"]["unrealized_pnl"] == 10 * aapl - 1000
    assert positions["ZZZZ"]["last_price"] is None and positions["ZZZZ"]["market_value"] is None
    # One unpriced position: the portfolio has no total (never a 0 in its place).
    assert portfolio["market_value"] is None and portfolio["equity"] is None
    assert portfolio["unpriced_positions"] == 1
    assert {p["symbol"] for p in prices} == {"AAPL", "MSFT", "NVDA", "BRK.B"}
    assert all(Decimal(p["price"]) > 0 for p in prices)


async def test_one_snapshot_per_portfolio_per_trading_day(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient
) -> None:
    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    feed: list[dict] = []

    async def on_snapshot(msg) -> None:  # type: ignore[no-untyped-def]
        feed.append(msgspec.json.decode(msg.data))

    await nc.subscribe(f"{subject_prefix}.feed.snapshot.*", cb=on_snapshot)
    friday = calendar.session(date(2026, 11, 27))
    monday = calendar.session(date(2026, 11, 30))
    assert friday is not None and friday.early_close and monday is not None
    friday_snap = friday.close + timedelta(minutes=5)  # 13:05 New York
    factory = sim_factory(pg_dsn)
    async with hosted(["relay", "projections", "positions"], settings, broker_factory=factory) as ctx:
        store = ctx.rt.store
        await open_portfolio(store, "p1", "10000", T0)
        await open_portfolio(store, "p2", "5000", T0)
        await append_fill(store, fill("p1", "o1", "AAPL", Side.BUY, "10", "10", "100", T0, final=True))
        await _booked(ctx, "p1", "AAPL", 10)
        assert (await run_tick(ctx, JobType.PRICE_UPDATE, friday.close))["type"] == "JobExecutionCompleted"
        end = await run_tick(ctx, JobType.PORTFOLIO_SNAPSHOT, friday_snap)
        assert end["counters"]["snapshots_created"] == 2, end
        await redeliver_tick(ctx, JobType.PORTFOLIO_SNAPSHOT, friday_snap, "positions")
        manual = await run_tick(ctx, JobType.PORTFOLIO_SNAPSHOT, friday_snap + timedelta(minutes=40),
                                reason=TickReason.MANUAL)
        assert manual["counters"]["snapshots_created"] == 0
    # A restarted service; a manual tick on Saturday still belongs to Friday's session.
    async with hosted(["relay", "projections", "positions"], settings, broker_factory=factory) as ctx:
        saturday = datetime(2026, 11, 28, 12, 0, tzinfo=NY)
        again = await run_tick(ctx, JobType.PORTFOLIO_SNAPSHOT, saturday, reason=TickReason.MANUAL)
        assert again["counters"]["snapshots_created"] == 0
        await run_tick(ctx, JobType.PRICE_UPDATE, monday.close)
        end = await run_tick(ctx, JobType.PORTFOLIO_SNAPSHOT, monday.close + timedelta(minutes=5))
        assert end["counters"]["snapshots_created"] == 2
        await ctx.catch_up()
        book, _ = await load_book(ctx.rt.store, "p1")
        async with ctx.rt.store.pool.acquire() as con:
            rows = await con.fetch("SELECT * FROM portfolio_snapshots ORDER BY trading_day, portfolio_id")
            price = await con.fetchval("SELECT price FROM latest_quotes WHERE symbol = 'AAPL'")
        snapshots = [e async for e in ctx.rt.store.read_all() if e.type == "PortfolioSnapshotTaken"]
    assert len(snapshots) == 4
    assert [(r["portfolio_id"], r["trading_day"]) for r in rows] == [
        ("p1", date(2026, 11, 27)), ("p2", date(2026, 11, 27)), ("p1", date(2026, 11, 30)), ("p2", date(2026, 11, 30)),
    ]
    assert book is not None
    expected = value_portfolio(book, {"AAPL": price})
    monday_p1 = rows[2]
    assert monday_p1["total_value"] == expected.total_value == book.cash + 10 * price
    assert monday_p1["cash_balance"] == Decimal(9000)
    assert rows[1]["total_value"] == Decimal(5000)
    assert len(feed) == 4 and {f["trading_day"] for f in feed} == {"2026-11-27", "2026-11-30"}
