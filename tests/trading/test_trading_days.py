"""The trading loop over three virtual trading days on the simulator, every service live on real NATS and
PostgreSQL: every requested order ends filled, canceled, rejected or expired; no order is sent twice; the
books equal the sum of the fills and the broker's positions equal the sum of the books; redelivered ticks
change nothing; the read models rebuilt from the log equal the live ones."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from nats.aio.client import Client as NatsClient

from services.broker.protocol import Broker
from services.broker.simulator import SimBroker, SimConfig
from services.broker.simulator.engine import FillPolicy
from services.clock import calendar
from services.clock.virtual import VirtualClock
from services.core.host import ServiceContext
from services.core.jobs.types import JobType
from services.positions.books import load_book
from services.stack import hosted
from services.strategy.commands import apply_all
from tests.positions.helpers import redeliver_tick, settings_for
from tests.trading.helpers import (
    TERMINAL,
    assert_rebuild_equals_live,
    books_settle_to_fills,
    portfolios,
    rows,
)
from tests.waiting import until

SERVICES = ["relay", "projections", "strategy", "orders", "positions", "alerts"]
DAYS = tuple(date(2026, 11, d) for d in range(16, 19))  # Monday to Wednesday


async def test_three_virtual_trading_days(pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient) -> None:
    specs = portfolios(4)
    first, last = calendar.session(DAYS[0]), calendar.session(DAYS[-1])
    assert first is not None and last is not None
    start, end = first.open - timedelta(minutes=1), last.close + timedelta(minutes=10)
    brokers: list[SimBroker] = []

    async def sim(ctx: ServiceContext) -> Broker:
        ctx.tick_time.set(start)
        broker = await SimBroker.connect(
            pg_dsn,
            SimConfig(
                seed=3,
                starting_cash=Decimal(200_000),
                fill_policy=FillPolicy(fill_latency=timedelta(seconds=20), partial_fill_steps=2),
            ),
            now=ctx.tick_time,
        )
        brokers.append(broker)
        return broker

    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    async with hosted(SERVICES, settings, broker_factory=sim, virtual=True) as ctx:
        store = ctx.rt.store
        await apply_all(store, specs, datetime.now(UTC))
        clock = VirtualClock(store, ctx.rt.nc, ctx.rt.subjects, tick_timeout=60)
        midday = first.open + timedelta(hours=3)
        result = await clock.run(start, midday)
        assert result.outcomes["completed"] == result.ticks, result.outcomes

        # Redelivered ticks (duplicates JetStream keeps: no Nats-Msg-Id) are recognised by the job ledger.
        # First let the orders of the last strategy tick reach the broker (the clock waits for job runs,
        # not for the orders they cause).
        async def none_waiting() -> bool:
            await ctx.catch_up("trades")
            return not await rows(store, "SELECT 1 FROM trades WHERE status = 'requested'")

        await until(none_waiting, what="no order still requested in the trades read model")
        submits_before = brokers[0].calls("submit_order")
        requested_before = len(await rows(store, "SELECT 1 FROM events WHERE event_type = 'OrderRequested'"))
        last_strategy_tick = max(s for s in _strategy_slots(start, midday))
        await redeliver_tick(ctx, JobType.STRATEGY_EXECUTION, last_strategy_tick, "strategy")
        await redeliver_tick(ctx, JobType.ORDER_STATUS_CHECK, midday, "orders")
        assert brokers[0].calls("submit_order") == submits_before
        assert len(await rows(store, "SELECT 1 FROM events WHERE event_type = 'OrderRequested'")) == requested_before

        result = await clock.run(midday, end)
        assert result.outcomes["completed"] == result.ticks, result.outcomes
        await ctx.catch_up()

        trades = await rows(store, "SELECT client_order_id, status, filled_qty FROM trades")
        requested = await rows(store, "SELECT DISTINCT stream_id FROM events WHERE event_type = 'OrderRequested'")
        assert len(trades) == len(requested) > 10, "the strategies should trade on these days"
        assert {t["status"] for t in trades} <= TERMINAL, {t["status"] for t in trades}
        assert any(t["status"] == "filled" for t in trades)

        # Every order reached the broker once: one submit call per order, no order we do not know.
        sim_orders = await rows(store, "SELECT client_order_id FROM sim_orders")
        submitted = [t for t in trades if t["status"] != "rejected" or t["filled_qty"] > 0]
        assert {r["client_order_id"] for r in sim_orders} >= {t["client_order_id"] for t in submitted}
        assert {r["client_order_id"] for r in sim_orders} <= {t["client_order_id"] for t in trades}
        assert brokers[0].calls("submit_order") == len(sim_orders) + len(
            [t for t in trades if t["status"] == "rejected" and t["filled_qty"] == 0]
        )

        assert await books_settle_to_fills(store, specs) > 0
        # No margin: no portfolio ever spent cash it did not have, counting orders still open or not yet
        # booked at each tick (market orders fill a little away from the price they were sized at).
        fills = await rows(
            store,
            "SELECT data->>'portfolio_id' AS pid, (data->>'cash_change')::numeric AS change FROM events"
            " WHERE event_type = 'FillApplied' ORDER BY global_position",
        )
        cash = {spec.name: spec.starting_cash for spec in specs}
        for fill in fills:
            cash[fill["pid"]] += fill["change"]
            assert cash[fill["pid"]] >= -Decimal("0.01") * next(s.starting_cash for s in specs if s.name == fill["pid"])
        # Every fill is booked: nothing still commits cash or shares.
        assert await rows(store, "SELECT 1 FROM trades WHERE filled_qty <> booked_qty") == []
        # One shared broker account: its positions are the sum of the portfolios' books.
        ours: dict[str, Decimal] = defaultdict(Decimal)
        for spec in specs:
            book, _ = await load_book(store, spec.name)
            assert book is not None
            for symbol, position in book.positions.items():
                ours[symbol] += position.qty
        broker_positions = {p.symbol: p.qty for p in await brokers[0].list_positions()}
        assert broker_positions == {s: q for s, q in ours.items() if q != 0}

        # One snapshot per portfolio and trading day; every portfolio evaluated once per strategy tick.
        snapshots = await rows(store, "SELECT portfolio_id, trading_day FROM portfolio_snapshots")
        assert sorted((r["portfolio_id"], r["trading_day"]) for r in snapshots) == sorted(
            (s.name, d) for s in specs for d in DAYS
        )
        evaluations = await rows(
            store, "SELECT count(*) AS n, count(DISTINCT (portfolio_id, tick_id)) AS d FROM strategy_evaluations"
        )
        assert evaluations[0]["n"] == evaluations[0]["d"] == len(specs) * 26 * len(DAYS)

    await assert_rebuild_equals_live(store_for_rebuild := await _store(pg_dsn))
    await store_for_rebuild.close()


def _strategy_slots(start: datetime, end: datetime) -> list[datetime]:
    from services.clock.schedule import slots_between

    return slots_between(JobType.STRATEGY_EXECUTION, start, end)


async def _store(dsn: str):  # type: ignore[no-untyped-def]
    from eventstore import EventStore

    return await EventStore.connect(dsn)
