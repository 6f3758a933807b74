"""The whole system in virtual time on the simulator (relay, projections, strategy, orders, positions,
alerts; every job through the real consumers and the job ledger): the early close of Friday 2026-11-27
and Monday 2026-11-30, with discrepancies injected at the broker between the two days. Each is detected
once and handled by its policy; the strategies' own orders are never flagged; one snapshot per portfolio
per trading day; each alert fires once; read models rebuilt from the log equal the live ones."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient

from eventstore import EventStore
from eventstore.projections import ProjectionRunner
from services.alerts.projection import AlertsProjection
from services.alerts.service import AlertCommands
from services.broker.protocol import Broker
from services.broker.simulator import SimBroker, SimConfig
from services.broker.simulator.engine import FillPolicy
from services.clock import calendar
from services.clock.virtual import VirtualClock
from services.core.host import ServiceContext
from services.core.jobs.types import JobType, TickReason
from services.model.vocabulary import Side
from services.positions.books import load_book
from services.positions.projection import PortfolioProjection
from services.stack import hosted
from services.strategy.commands import apply_all
from services.strategy.config import parse_portfolio_spec
from tests.positions.helpers import append_fill, fill, redeliver_tick, run_tick, settings_for
from tests.waiting import until

FRIDAY = calendar.session(date(2026, 11, 27))
MONDAY = calendar.session(date(2026, 11, 30))
POLICY = '{"quantity": "fix", "closed_at_broker": "halt", "unknown_at_broker": "quarantine"}'
SERVICES = ["relay", "projections", "strategy", "orders", "positions", "alerts"]


def portfolios() -> list[Any]:
    specs = []
    for i, (kind, params) in enumerate([
        ("momentum", {"lookback": 12, "threshold": "0.004"}),
        ("ma_crossover", {"fast_window": 5, "slow_window": 20}),
    ]):
        specs.append(parse_portfolio_spec({
            "name": f"trader-{i + 1}", "starting_cash": "100000",
            "strategy": [{"kind": kind, "parameters": params, "universe": ["AAPL", "MSFT", "NVDA", "AMZN"],
                          "sizing": {"method": "fixed_notional", "notional": "5000"}}],
        }))
    # A portfolio with no strategy, holding positions from earlier (booked fills).
    specs.append(parse_portfolio_spec({"name": "holder", "starting_cash": "10000"}))
    return specs


async def sim_sql(pg_dsn: str, sql: str, *args: Any) -> None:
    con = await asyncpg.connect(pg_dsn)
    try:
        await con.execute(sql, *args)
    finally:
        await con.close()


async def table_rows(store: EventStore, tables: tuple[str, ...]) -> dict[str, list[tuple[Any, ...]]]:
    async with store.pool.acquire() as con:
        return {t: sorted(tuple(r) for r in await con.fetch(f"SELECT * FROM {t}")) for t in tables}


async def test_virtual_days_with_injected_discrepancies(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert FRIDAY is not None and FRIDAY.early_close and MONDAY is not None
    monkeypatch.setenv("OPENBELL_POSITION_SYNC_POLICY", POLICY)
    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    start = FRIDAY.open - timedelta(minutes=1)
    friday_end = FRIDAY.close + timedelta(minutes=10)
    end = MONDAY.close + timedelta(minutes=10)

    async def sim_broker(ctx: ServiceContext) -> Broker:
        ctx.tick_time.set(start)
        config = SimConfig(seed=3, starting_cash=Decimal(300_000),
                           fill_policy=FillPolicy(fill_latency=timedelta(seconds=20), partial_fill_steps=2))
        broker = await SimBroker.connect(pg_dsn, config, now=ctx.tick_time)
        # What the holder owns, at the broker too (the account is shared by every portfolio).
        await sim_sql(pg_dsn, "INSERT INTO sim_positions VALUES ('PEP', 10, 50), ('KO', 5, 60)"
                              " ON CONFLICT (symbol) DO NOTHING")
        return broker

    async with hosted(SERVICES, settings, broker_factory=sim_broker, virtual=True) as ctx:
        store = ctx.rt.store
        await apply_all(store, portfolios(), start)
        await append_fill(store, fill("holder", "h1", "PEP", Side.BUY, "10", "10", "50", start, final=True))
        await append_fill(store, fill("holder", "h2", "KO", Side.BUY, "5", "5", "60", start, final=True))

        async def holder_booked() -> bool:
            book, _ = await load_book(store, "holder")
            return book is not None and book.position("KO").qty == 5 and book.position("PEP").qty == 10

        await until(holder_booked, what="the holder's fills booked")
        await ctx.broker()
        commands = AlertCommands(store)
        await commands.create({"alert_id": "cheap", "symbol": "AAPL", "condition": "above", "threshold": "1",
                               "portfolio_id": "trader-1"})
        await commands.create({"alert_id": "never", "symbol": "MSFT", "condition": "below", "threshold": "0.01"})

        vclock = VirtualClock(store, ctx.rt.nc, ctx.rt.subjects, tick_timeout=60)
        t0 = time.perf_counter()
        friday = await vclock.run(start, friday_end)
        # Behind our back, over the weekend: PEP reduced, KO closed, an unknown TSLA position.
        await sim_sql(pg_dsn, "UPDATE sim_positions SET qty = 7 WHERE symbol = 'PEP'")
        await sim_sql(pg_dsn, "DELETE FROM sim_positions WHERE symbol = 'KO'")
        await sim_sql(pg_dsn, "INSERT INTO sim_positions VALUES ('TSLA', 4, 300)")
        monday = await vclock.run(friday_end, end)
        elapsed = time.perf_counter() - t0
        print(f"virtual days: {friday.ticks + monday.ticks} ticks in {elapsed:.1f}s")
        outcomes = friday.outcomes + monday.outcomes
        assert set(outcomes) == {"completed"}, outcomes

        # Duplicate and manual snapshot ticks change nothing.
        await redeliver_tick(ctx, JobType.PORTFOLIO_SNAPSHOT, MONDAY.close + timedelta(minutes=5), "positions")
        manual = await run_tick(ctx, JobType.PORTFOLIO_SNAPSHOT, MONDAY.close + timedelta(hours=2),
                                reason=TickReason.MANUAL)
        assert manual["counters"]["snapshots_created"] == 0

        await ctx.catch_up()
        events = [e async for e in store.read_all()]
        async with store.pool.acquire() as con:
            trades = Counter(r["status"] for r in await con.fetch("SELECT status FROM trades"))
            halted = {r["portfolio_id"]: r["halted"] for r in await con.fetch("SELECT * FROM portfolios")}
            quarantined = [r["symbol"] for r in await con.fetch("SELECT symbol FROM quarantined_symbols")]
        live = await table_rows(store, PortfolioProjection.tables + AlertsProjection.tables)

    detected = [e for e in events if e.type == "PositionDiscrepancyDetected"]
    assert sorted((e.stream_id, e.data.count("halt")) for e in detected) == [
        ("discrepancy-KO", 1), ("discrepancy-PEP", 0), ("discrepancy-TSLA", 0),
    ], [e.data for e in detected]
    assert sum(trades.values()) > 0 and trades["filled"] > 0, trades  # the strategies traded meanwhile
    assert halted["holder"] is True and not halted["trader-1"] and not halted["trader-2"]
    assert quarantined == ["TSLA"]
    holder, _ = await _book(pg_dsn, "holder")
    assert holder.position("PEP").qty == 7 and holder.position("KO").qty == 5  # fixed / halted (kept)

    snapshots = Counter((e.stream_id) for e in events if e.type == "PortfolioSnapshotTaken")
    assert snapshots == Counter({f"snapshot-{p}-{d}": 1 for p in ("trader-1", "trader-2", "holder")
                                 for d in ("2026-11-27", "2026-11-30")})
    triggered = [e.stream_id for e in events if e.type == "AlertTriggered"]
    assert triggered == ["alert-cheap"]
    observed = [e for e in events if e.type == "QuotesObserved"]
    assert len(observed) == len({e.stream_id for e in observed}) == 43 + 79

    # Rebuilt from the log, the read models equal the live ones.
    store = await EventStore.connect(pg_dsn)
    try:
        runner = ProjectionRunner(store, [PortfolioProjection(), AlertsProjection()])
        await runner.rebuild(PortfolioProjection.name)
        await runner.rebuild(AlertsProjection.name)
        rebuilt = await table_rows(store, PortfolioProjection.tables + AlertsProjection.tables)
    finally:
        await store.close()
    assert rebuilt == live


async def _book(pg_dsn: str, portfolio_id: str) -> tuple[Any, int]:
    store = await EventStore.connect(pg_dsn)
    try:
        book, version = await load_book(store, portfolio_id)
    finally:
        await store.close()
    assert book is not None
    return book, version


def test_dates() -> None:
    assert FRIDAY is not None and FRIDAY.close == datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
