"""Finding: simulated fills depended on timing. An order reached the simulator at the latest tick time
its process had seen, not at its own tick's, so the same seed gave other fills; and an order reaching the
simulator after the close was accepted for the next day and never became final."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.broker.models import OrderRequest, OrderSide, OrderStatus, OrderType
from services.broker.simulator import SimBroker, SimConfig
from services.broker.simulator.engine import FillPolicy
from services.core.host import TickTime

SEED = 7
POLICY = FillPolicy(fill_latency=timedelta(seconds=2))
# Tuesday 2025-03-04, New York: the session is 14:30-21:00 UTC.
DECIDED = datetime(2025, 3, 4, 19, 0, tzinfo=UTC)  # the order's own tick
LATER = datetime(2025, 3, 4, 19, 15, tzinfo=UTC)  # a later tick the orders process handled first
LAST_STRATEGY_TICK = datetime(2025, 3, 4, 20, 45, tzinfo=UTC)  # 15:45 in New York
SNAPSHOT = datetime(2025, 3, 4, 21, 5, tzinfo=UTC)  # portfolio_snapshot, after the close


def market_buy(coid: str, qty: int = 10) -> OrderRequest:
    return OrderRequest(
        client_order_id=coid, symbol="AAPL", side=OrderSide.BUY, qty=Decimal(qty), type=OrderType.MARKET
    )


async def test_an_order_is_submitted_and_filled_at_its_own_ticks_time(pg_dsn: str, second_pg_dsn: str) -> None:
    # In time: the process's clock is at the order's tick.
    timely_clock = TickTime(DECIDED)
    timely = await SimBroker.connect(pg_dsn, SimConfig(seed=SEED, fill_policy=POLICY), timely_clock)
    # Late: the process saw a later tick (19:15) before this order reached it.
    late_clock = TickTime(DECIDED)
    late_clock.set(LATER)
    late = await SimBroker.connect(second_pg_dsn, SimConfig(seed=SEED, fill_policy=POLICY), late_clock)
    try:
        await timely.at(DECIDED).submit_order(market_buy("o-1"))
        await late.at(DECIDED).submit_order(market_buy("o-1"))
        timely_clock.set(LATER)  # both processes then move on to 19:15 and look
        (a,) = await timely.list_orders(status="all")
        (b,) = await late.list_orders(status="all")
    finally:
        await timely.aclose()
        await late.aclose()
    assert a.submitted_at == b.submitted_at == DECIDED
    assert a.status is b.status is OrderStatus.FILLED
    assert a.filled_at == b.filled_at == DECIDED + POLICY.fill_latency
    expected_price = timely.market.quote("AAPL", DECIDED + POLICY.fill_latency).ask_price
    assert a.filled_avg_price == b.filled_avg_price == expected_price


async def test_an_order_reaching_the_simulator_after_the_close_becomes_final(pg_dsn: str) -> None:
    """Decided at 15:45, it reaches the simulator once the process is at the 16:05 snapshot: it is an order
    of 15:45 (filled, or expired at that day's close), never a next-day order left open."""
    clock = TickTime(LAST_STRATEGY_TICK)
    clock.set(SNAPSHOT)
    sim = await SimBroker.connect(pg_dsn, SimConfig(seed=SEED, fill_policy=POLICY), clock)
    try:
        order = await sim.at(LAST_STRATEGY_TICK).submit_order(market_buy("o-close"))
        limit = OrderRequest(
            client_order_id="o-close-limit", symbol="AAPL", side=OrderSide.BUY, qty=Decimal(1),
            type=OrderType.LIMIT, limit_price=Decimal("0.01"),  # never marketable: it expires at the close
        )
        await sim.at(LAST_STRATEGY_TICK).submit_order(limit)
        orders = {o.client_order_id: o for o in await sim.list_orders(status="all")}
    finally:
        await sim.aclose()
    assert order.submitted_at == LAST_STRATEGY_TICK
    assert orders["o-close"].status is OrderStatus.FILLED
    assert orders["o-close-limit"].status is OrderStatus.EXPIRED
    assert orders["o-close-limit"].expired_at == datetime(2025, 3, 4, 21, 0, tzinfo=UTC)
