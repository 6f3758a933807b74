"""position_sync on real NATS + PostgreSQL with the simulator: positions changed behind our back at the
broker (sim_positions, by SQL), each discrepancy detected once and handled by its policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient

from services.broker.models import OrderRequest, OrderSide, OrderType
from services.core.host import ServiceContext
from services.core.jobs.types import JobType
from services.model.vocabulary import Side
from services.positions.books import load_book
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

T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # Tuesday 10:00 New York
POLICY = '{"quantity": "fix", "closed_at_broker": "halt", "unknown_at_broker": "quarantine"}'


async def set_broker_positions(pg_dsn: str, positions: dict[str, tuple[str, str]]) -> None:
    con = await asyncpg.connect(pg_dsn)
    try:
        await con.execute("DELETE FROM sim_positions")
        await con.executemany(
            "INSERT INTO sim_positions (symbol, qty, avg_entry_price) VALUES ($1, $2, $3)",
            [(s, Decimal(q), Decimal(p)) for s, (q, p) in positions.items()],
        )
    finally:
        await con.close()


async def sync(ctx: ServiceContext, at: datetime) -> dict[str, int]:
    end = await run_tick(ctx, JobType.POSITION_SYNC, at)
    assert end["type"] == "JobExecutionCompleted", end
    return end["counters"]


async def test_discrepancies_detected_once_and_handled_by_policy(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENBELL_POSITION_SYNC_POLICY", POLICY)
    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    async with hosted(["relay", "projections", "positions"], settings, broker_factory=sim_factory(pg_dsn)) as ctx:
        store = ctx.rt.store
        await open_portfolio(store, "p1", "100000", T0)
        await open_portfolio(store, "p2", "100000", T0)
        await append_fill(store, fill("p1", "o1", "AAPL", Side.BUY, "10", "10", "100", T0, final=True))
        await append_fill(store, fill("p1", "o2", "NVDA", Side.BUY, "3", "3", "50", T0, final=True))
        await append_fill(store, fill("p2", "o3", "MSFT", Side.BUY, "5", "5", "200", T0, final=True))

        async def booked() -> bool:
            b2, _ = await load_book(store, "p2")
            b1, _ = await load_book(store, "p1")
            return bool(b1 and b2 and b1.position("NVDA").qty == 3 and b1.position("AAPL").qty == 10
                        and b2.position("MSFT").qty == 5)

        await until(booked, what="the fills booked into p1 and p2")
        broker = await ctx.at(T0)
        # In flight: a limit order far below the market stays open at the broker.
        await broker.submit_order(OrderRequest(client_order_id="inflight-1", symbol="GOOGL", side=OrderSide.BUY,
                                               qty=Decimal(5), type=OrderType.LIMIT, limit_price=Decimal("1")))
        # All agree first: nothing to report.
        await set_broker_positions(pg_dsn, {"AAPL": ("10", "100"), "NVDA": ("3", "50"), "MSFT": ("5", "200")})
        first = await sync(ctx, T0 + timedelta(minutes=5))
        assert first["discrepancies_found"] == 0 and first["positions_synced"] == 3 and first["portfolios_synced"] == 2
        # Behind our back: AAPL changed, MSFT closed, TSLA unknown, GOOGL filled while its order is open.
        await set_broker_positions(pg_dsn, {"AAPL": ("7", "100"), "NVDA": ("3", "50"), "TSLA": ("4", "300"),
                                            "GOOGL": ("5", "1")})
        t1 = T0 + timedelta(minutes=10)
        counters = await sync(ctx, t1)
        assert counters["discrepancies_found"] == 3
        assert counters["discrepancies_fixed"] == 1
        assert counters["quarantined"] == 1 and counters["halted"] == 1
        # Same differences at later runs, and the first run redelivered: nothing new.
        await redeliver_tick(ctx, JobType.POSITION_SYNC, t1, "positions")
        for minutes in (15, 20):
            again = await sync(ctx, T0 + timedelta(minutes=minutes))
            assert again["discrepancies_found"] == 0, again
        await ctx.catch_up()
        async with store.pool.acquire() as con:
            rows = await con.fetch("SELECT symbol, kind, policy, status FROM position_discrepancies ORDER BY symbol")
            quarantined = [r["symbol"] for r in await con.fetch("SELECT symbol FROM quarantined_symbols")]
            halted = {r["portfolio_id"]: r["halted"] for r in await con.fetch("SELECT * FROM portfolios")}
            aapl = await con.fetchrow("SELECT * FROM positions WHERE portfolio_id = 'p1' AND symbol = 'AAPL'")
        assert [tuple(r) for r in rows] == [
            ("AAPL", "quantity", "fix", "fixed"),
            ("MSFT", "closed_at_broker", "halt", "open"),
            ("TSLA", "unknown_at_broker", "quarantine", "open"),
        ]
        assert quarantined == ["TSLA"]
        assert halted == {"p1": False, "p2": True}
        assert aapl["qty"] == 7 and aapl["avg_cost"] == 100  # fixed: the owner's average cost kept
        book, _ = await load_book(store, "p1")
        assert book is not None and book.position("AAPL").qty == 7
        detected = [e async for e in store.read_all() if e.type == "PositionDiscrepancyDetected"]
        assert len(detected) == 3

        # The unknown position disappears at the broker: resolved, quarantine lifted.
        await set_broker_positions(pg_dsn, {"AAPL": ("7", "100"), "NVDA": ("3", "50"), "GOOGL": ("5", "1")})
        await sync(ctx, T0 + timedelta(minutes=25))
        await ctx.catch_up()
        async with store.pool.acquire() as con:
            assert await con.fetchval("SELECT count(*) FROM quarantined_symbols") == 0
            status = await con.fetchval("SELECT status FROM position_discrepancies WHERE symbol = 'TSLA'")
        assert status == "resolved"


async def test_default_policy_fixes_into_the_unassigned_bucket(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient
) -> None:
    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    async with hosted(["relay", "projections", "positions"], settings, broker_factory=sim_factory(pg_dsn)) as ctx:
        store = ctx.rt.store
        await open_portfolio(store, "p1", "1000", T0)
        await open_portfolio(store, "p2", "1000", T0)
        await append_fill(store, fill("p1", "o1", "AMD", Side.BUY, "2", "2", "100", T0, final=True))
        await append_fill(store, fill("p2", "o2", "AMD", Side.BUY, "3", "3", "100", T0, final=True))

        async def booked() -> bool:
            b2, _ = await load_book(store, "p2")
            b1, _ = await load_book(store, "p1")
            return bool(b1 and b2 and b1.position("AMD").qty == 2 and b2.position("AMD").qty == 3)

        await until(booked, what="the fills booked into p1 and p2")
        await ctx.broker()  # creates the simulator's tables
        # Two owners, the broker has 1 more; plus an unknown symbol: both go to the unassigned bucket.
        await set_broker_positions(pg_dsn, {"AMD": ("6", "100"), "KO": ("10", "60")})
        counters = await sync(ctx, T0 + timedelta(minutes=5))
        assert counters["discrepancies_found"] == 2 and counters["discrepancies_fixed"] == 2
        assert (await sync(ctx, T0 + timedelta(minutes=10)))["discrepancies_found"] == 0
        unassigned, _ = await load_book(store, "unassigned")
        assert unassigned is not None
        assert unassigned.position("AMD").qty == 1 and unassigned.position("KO").qty == 10
        assert unassigned.position("KO").cost_basis == 600
