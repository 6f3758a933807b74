"""The simulator: deterministic market, persisted broker state, partial fills, fault injection; and the
shared rate-limit budget."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.broker import BrokerSettings, create_broker
from services.broker.errors import AmbiguousSubmit, BrokerUnavailable, RateLimited
from services.broker.models import OrderRequest, OrderSide, OrderStatus, OrderType
from services.broker.ratelimit import Priority, RateLimiter
from services.broker.simulator import ManualClock, SimBroker, SimConfig, SimFaults
from services.broker.simulator.engine import FillPolicy, cumulative_target
from services.broker.simulator.market import MarketSimulator
from tests.broker.conftest import START

SYMBOLS = ["AAPL", "MSFT", "SPY", "TSLA"]
moments = st.integers(min_value=0, max_value=60 * 24 * 365 * 3).map(lambda m: START + timedelta(minutes=m))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), queries=st.lists(st.tuples(st.sampled_from(SYMBOLS), moments), min_size=1))
def test_prices_are_a_pure_function_of_seed_symbol_and_time(seed: int, queries: list[tuple[str, datetime]]) -> None:
    forward = MarketSimulator(seed)
    backward = MarketSimulator(seed)
    expected = [forward.quote(symbol, moment) for symbol, moment in queries]
    # Another instance, asked in the opposite order, agrees: no hidden state from earlier calls.
    actual = [backward.quote(symbol, moment) for symbol, moment in reversed(queries)]
    assert expected == list(reversed(actual))
    for quote in expected:
        assert Decimal("0.01") <= quote.bid_price < quote.ask_price


def test_different_seeds_give_different_markets_and_bars_are_consistent() -> None:
    a, b = MarketSimulator(1), MarketSimulator(2)
    assert [a.price("AAPL", START + timedelta(minutes=i)) for i in range(30)] != [
        b.price("AAPL", START + timedelta(minutes=i)) for i in range(30)
    ]
    bar = a.bar("AAPL", START, "15Min")
    minutes = [a.price("AAPL", START + timedelta(minutes=i)) for i in range(15)]
    assert (bar.open, bar.close, bar.high, bar.low) == (minutes[0], minutes[-1], max(minutes), min(minutes))
    assert a.bars("AAPL", START, START + timedelta(hours=1), "15Min")[1] == a.bar(
        "AAPL", START + timedelta(minutes=15), "15Min"
    )
    # A plausible random walk: one-minute moves are small, a year can wander.
    assert abs(minutes[1] / minutes[0] - 1) < Decimal("0.01")


@given(qty=st.integers(1, 10_000), steps=st.integers(1, 6))
def test_partial_fill_tranches_are_monotonic_and_complete(qty: int, steps: int) -> None:
    targets = [cumulative_target(Decimal(qty), s, steps) for s in range(steps + 1)]
    assert targets[0] == 0 and targets[-1] == qty
    assert targets == sorted(targets)
    assert all(t == t.to_integral_value() for t in targets)  # whole shares stay whole


async def _scenario(dsn: str, seed: int) -> list[tuple[str, Decimal, Decimal | None]]:
    clock = ManualClock(START)
    config = SimConfig(seed=seed, fill_policy=FillPolicy(timedelta(seconds=20), partial_fill_steps=3))
    broker = await SimBroker.connect(dsn, config, clock)
    try:
        for i, symbol in enumerate(SYMBOLS):
            await broker.submit_order(
                OrderRequest(client_order_id=f"det-{i}", symbol=symbol, side=OrderSide.BUY, qty=Decimal(9))
            )
            await broker.advance_to(START + timedelta(seconds=25 * (i + 1)))
        await broker.advance_to(START + timedelta(minutes=5))
        orders = await broker.list_orders("all")
        return [(o.client_order_id, o.filled_qty, o.filled_avg_price) for o in orders]
    finally:
        await broker.aclose()


async def test_same_seed_and_times_give_the_same_fills(pg_dsn: str, second_pg_dsn: str) -> None:
    first = await _scenario(pg_dsn, seed=5)
    second = await _scenario(second_pg_dsn, seed=5)
    assert first == second
    assert all(filled == 9 and price is not None for _, filled, price in first)


async def test_different_seed_gives_different_fills(pg_dsn: str, second_pg_dsn: str) -> None:
    assert await _scenario(pg_dsn, seed=5) != await _scenario(second_pg_dsn, seed=6)


async def test_state_survives_a_restart(pg_dsn: str) -> None:
    clock = ManualClock(START)
    config = SimConfig(seed=3, fill_policy=FillPolicy(timedelta(seconds=2)))
    first = await SimBroker.connect(pg_dsn, config, clock)
    filled = await first.submit_order(
        OrderRequest(client_order_id="restart-1", symbol="SPY", side=OrderSide.BUY, qty=Decimal(4))
    )
    await first.advance_to(START + timedelta(seconds=3))
    resting = await first.submit_order(
        OrderRequest(
            client_order_id="restart-2",
            symbol="SPY",
            side=OrderSide.BUY,
            qty=Decimal(1),
            type=OrderType.LIMIT,
            limit_price=Decimal("1.00"),
        )
    )
    cash_before = (await first.get_account()).cash
    await first.aclose()

    # A different starting cash must not reset the existing account.
    second = await SimBroker.connect(pg_dsn, SimConfig(seed=3, starting_cash=Decimal(1)), clock)
    try:
        assert (await second.get_order(filled.id)).status is OrderStatus.FILLED
        assert (await second.get_order(resting.id)).status is OrderStatus.NEW
        assert [p.qty for p in await second.list_positions()] == [Decimal(4)]
        assert (await second.get_account()).cash == cash_before < Decimal(100000)
    finally:
        await second.aclose()


async def test_background_settle_books_fills_before_the_next_call(pg_dsn: str) -> None:
    """settle_soon (the clock moved) fills due orders without any broker call; a call after it finds them
    booked, and a second settle_soon while one runs is the same settle."""
    clock = ManualClock(START)
    broker = await SimBroker.connect(pg_dsn, SimConfig(seed=4, fill_policy=FillPolicy(timedelta(seconds=2))), clock)
    received: list[str] = []

    async def collect() -> None:
        async for update in broker.trade_updates():
            received.append(str(update.event))

    collector = asyncio.create_task(collect())
    await asyncio.sleep(0)  # subscribed
    try:
        order = await broker.submit_order(
            OrderRequest(client_order_id="bg-1", symbol="AAPL", side=OrderSide.BUY, qty=Decimal(3))
        )
        clock.set(START + timedelta(seconds=5))
        first = broker.settle_soon()
        assert broker.settle_soon() is first
        await first
        async with broker._pool.acquire() as conn:  # the table itself: any broker call would settle
            row = await conn.fetchrow("SELECT status, filled_qty FROM sim_orders WHERE id = $1", order.id)
        assert (row["status"], row["filled_qty"]) == ("filled", Decimal(3))
        await asyncio.sleep(0)
        assert received == ["new", "fill"]
        assert [p.qty for p in await broker.list_positions()] == [Decimal(3)]
        assert broker.settle_soon() is not first  # the next one is a new settle
    finally:
        collector.cancel()
        await broker.aclose()


async def test_many_fills_in_one_settle_book_each_fill(pg_dsn: str) -> None:
    """Fills of several orders, in one symbol and across symbols, settled together (one write): the
    positions, their average prices and the cash are those of the fills one after another, and a symbol
    sold out leaves no position behind."""
    clock = ManualClock(START)
    broker = await SimBroker.connect(pg_dsn, SimConfig(seed=9, fill_policy=FillPolicy(timedelta(seconds=2))), clock)
    try:
        opening = [("m-1", "AAPL", OrderSide.BUY, 3), ("m-2", "MSFT", OrderSide.BUY, 2)]
        for coid, symbol, side, qty in opening:
            await broker.submit_order(OrderRequest(client_order_id=coid, symbol=symbol, side=side, qty=Decimal(qty)))
        await broker.advance_to(START + timedelta(seconds=5))
        later = [
            ("m-3", "AAPL", OrderSide.BUY, 5),
            ("m-4", "MSFT", OrderSide.SELL, 2),
            ("m-5", "AAPL", OrderSide.SELL, 1),
        ]
        for i, (coid, symbol, side, qty) in enumerate(later):
            # Half a second apart (the fills in this order), all before the first of them is due.
            clock.set(START + timedelta(seconds=5 + i / 2))
            await broker.submit_order(OrderRequest(client_order_id=coid, symbol=symbol, side=side, qty=Decimal(qty)))
        clock.set(START + timedelta(seconds=10))
        await broker.settle_soon()  # the three later orders fill in this one settle
        orders = {o.client_order_id: o for o in await broker.list_orders("all")}
        assert all(o.status is OrderStatus.FILLED for o in orders.values())
        cash = Decimal(100000)
        held: dict[str, tuple[Decimal, Decimal]] = {}
        for coid, symbol, side, qty in [*opening, *later]:
            price = orders[coid].filled_avg_price
            assert price is not None
            quantity, average = held.get(symbol, (Decimal(0), Decimal(0)))
            signed = Decimal(qty) if side is OrderSide.BUY else -Decimal(qty)
            if signed > 0:
                average = ((average * quantity + price * signed) / (quantity + signed)).quantize(Decimal("0.0001"))
            held[symbol] = (quantity + signed, average)
            cash -= signed * price
        positions = {p.symbol: (p.qty, p.avg_entry_price) for p in await broker.list_positions()}
        assert positions == {"AAPL": held["AAPL"]}  # MSFT sold out: no row left
        assert positions["AAPL"][0] == 7
        assert (await broker.get_account()).cash == cash
    finally:
        await broker.aclose()


async def test_concurrent_connects_create_the_schema_once(pg_dsn: str) -> None:
    brokers = await asyncio.gather(*(SimBroker.connect(pg_dsn, SimConfig(), ManualClock(START)) for _ in range(4)))
    try:
        assert (await brokers[0].get_account()).cash == Decimal(100000)
    finally:
        for broker in brokers:
            await broker.aclose()


async def test_fault_injection(pg_dsn: str) -> None:
    faults = SimFaults(
        error_rate={"get_account": 1.0, "list_orders": 0.5},
        rate_limit_rate={"list_positions": 1.0},
        hang=frozenset({"get_clock"}),
        hang_seconds=0.2,
        lost_submit_response_rate=1.0,
    )
    broker = await SimBroker.connect(pg_dsn, SimConfig(seed=9, faults=faults), ManualClock(START))
    try:
        with pytest.raises(BrokerUnavailable) as unavailable:
            await broker.get_account()
        assert unavailable.value.status == 500
        with pytest.raises(RateLimited) as limited:
            await broker.list_positions()
        assert limited.value.reset_at is not None
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="hang"):
            await broker.get_clock()
        assert time.monotonic() - started >= 0.2
        with pytest.raises(AmbiguousSubmit):
            await broker.submit_order(
                OrderRequest(client_order_id="lost-1", symbol="AAPL", side=OrderSide.BUY, qty=Decimal(1))
            )
        # The order was accepted although the answer was lost: the lookup resolves it.
        assert (await broker.get_order_by_client_id("lost-1")) is not None
        outcomes = []
        for _ in range(12):
            try:
                await broker.list_orders()
                outcomes.append(True)
            except BrokerUnavailable:
                outcomes.append(False)
        assert True in outcomes and False in outcomes
    finally:
        await broker.aclose()
    # The same seed fails the same calls.
    again = await SimBroker.connect(pg_dsn, SimConfig(seed=9, faults=faults), ManualClock(START))
    try:
        replay = []
        for _ in range(12):
            try:
                await again.list_orders()
                replay.append(True)
            except BrokerUnavailable:
                replay.append(False)
        assert replay == outcomes
    finally:
        await again.aclose()


async def test_factory_builds_the_simulator_by_default(pg_dsn: str) -> None:
    broker = await create_broker(BrokerSettings(sim_seed=4, sim_partial_fill_steps=2), dsn=pg_dsn, now=lambda: START)
    try:
        assert isinstance(broker, SimBroker) and broker.config.seed == 4
        assert (await broker.get_clock()).timestamp == START
    finally:
        await broker.aclose()


async def test_rate_limiter_priorities_and_reset() -> None:
    now = [1000.0]
    limiter = RateLimiter(limit_per_minute=100, clock=lambda: now[0], poll_seconds=0.001)
    limiter.update_from_headers({"X-Ratelimit-Remaining": "15", "X-Ratelimit-Reset": "1060"}, 200)
    # 15 left: quotes must leave 20 (20 %), position sync 10, order status 5, submission 0.
    assert limiter.try_acquire(Priority.QUOTES) > 0
    assert limiter.try_acquire(Priority.POSITION_SYNC) == 0
    limiter.update_from_headers({"X-Ratelimit-Remaining": "3"}, 200)
    assert limiter.try_acquire(Priority.ORDER_STATUS) > 0
    assert limiter.try_acquire(Priority.ORDER_SUBMIT) == 0

    order: list[Priority] = []

    async def take(priority: Priority) -> None:
        await limiter.acquire(priority)
        order.append(priority)

    limiter.update_from_headers({"X-Ratelimit-Remaining": "0"}, 200)
    tasks = [asyncio.create_task(take(p)) for p in (Priority.QUOTES, Priority.ORDER_STATUS, Priority.ORDER_SUBMIT)]
    await asyncio.sleep(0.02)  # none of them gets through within 0.02 s:
    assert order == []  # nothing left until the reset
    now[0] = 1061.0  # the window resets: the budget refills
    await asyncio.wait_for(asyncio.gather(*tasks), 2)
    assert order == [Priority.ORDER_SUBMIT, Priority.ORDER_STATUS, Priority.QUOTES]

    limiter.update_from_headers({"X-Ratelimit-Reset": "1070"}, 429)
    assert limiter.try_acquire(Priority.ORDER_SUBMIT) == pytest.approx(9.0)
    assert limiter.reset_time() == datetime.fromtimestamp(1070, UTC)
