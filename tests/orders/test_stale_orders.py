"""Order requests that reach a broker trading in real time long after their tick (a service down for a
while, a backlog), on real NATS and PostgreSQL: they are not sent, unless the broker has them already (a
worker died after the broker accepted one, before recording it). The simulator stands in for that broker
with its real_time flag set."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from eventstore import NO_STREAM
from services.broker.models import OrderRequest as BrokerOrderRequest
from services.broker.models import OrderSide
from services.broker.protocol import Broker
from services.broker.simulator import SimBroker, SimConfig, wall_clock
from services.core.events import new_event, registry
from services.core.host import ServiceContext
from services.model.events.orders import OrderRejected, OrderSubmitted
from services.model.events.strategy import OrderRequested
from services.model.ids import client_order_id
from services.model.streams import order_stream
from services.model.vocabulary import OrderType, Side
from services.stack import hosted
from tests.positions.helpers import settings_for
from tests.waiting import until


class WallClockSim(SimBroker):
    """The simulator on the wall clock, taken for a broker that trades in real time (as Alpaca does)."""

    real_time = True


def request(tick_at: datetime, symbol: str) -> OrderRequested:
    tick_id = f"strategy_execution@{tick_at.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    return OrderRequested(
        portfolio_id="p1",
        client_order_id=client_order_id("p1", tick_id, symbol, Side.BUY),
        symbol=symbol,
        side=Side.BUY,
        qty=Decimal(1),
        order_type=OrderType.MARKET,
        limit_price=None,
        tick_id=tick_id,
        strategy="momentum",
        reason="test",
        at=tick_at,
    )


async def test_requests_too_old_are_not_sent_unless_the_broker_has_them(
    pg_dsn: str, nats_url: str, subject_prefix: str
) -> None:
    sims: list[WallClockSim] = []

    async def sim(ctx: ServiceContext) -> Broker:
        broker = await WallClockSim.connect(pg_dsn, SimConfig(seed=4, starting_cash=Decimal(10**6)), now=wall_clock)
        assert isinstance(broker, WallClockSim)
        sims.append(broker)
        return broker

    settings = settings_for(pg_dsn, nats_url, subject_prefix).model_copy(update={"order_max_age_seconds": 60.0})
    # A virtual run: what decides is the broker's clock, not how the services are run.
    async with hosted(["relay", "orders"], settings, broker_factory=sim, virtual=True) as ctx:
        store = ctx.rt.store
        now = datetime.now(UTC).replace(microsecond=0)
        fresh = request(now, "AAPL")
        stale = request(now - timedelta(hours=1), "MSFT")
        # Accepted by the broker before a crash, never recorded: old, but the broker has it.
        accepted = request(now - timedelta(hours=1), "NVDA")
        broker = await ctx.broker()
        sent_before = BrokerOrderRequest(
            client_order_id=accepted.client_order_id, symbol="NVDA", side=OrderSide.BUY, qty=Decimal(1)
        )
        await broker.submit_order(sent_before)
        for order in (stale, accepted, fresh):
            stream = order_stream(order.client_order_id)
            await store.append(stream, [new_event(order, order.client_order_id)], NO_STREAM)

        async def answered() -> bool:
            return all(
                [await store.stream_version(order_stream(o.client_order_id)) >= 1 for o in (stale, accepted, fresh)]
            )

        await until(answered, 20, "the orders service to answer each of the three requests")

        async def outcome(order: OrderRequested) -> object:
            return [registry.decode(e) async for e in store.read_stream(order_stream(order.client_order_id))][1]

        refused = await outcome(stale)
        assert isinstance(refused, OrderRejected) and not refused.definite
        assert refused.reason.startswith("not sent: it reached submission")
        assert isinstance(await outcome(accepted), OrderSubmitted)
        assert isinstance(await outcome(fresh), OrderSubmitted)
        # The broker saw the fresh order and the one it had, each once, and never the stale one.
        assert sims[0].calls("submit_order") == 2
        assert await sims[0].get_order_by_client_id(stale.client_order_id) is None
