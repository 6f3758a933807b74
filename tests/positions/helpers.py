"""Helpers of the positions and alerts tests: settings for the test's own servers, a simulator broker in
tick time, events the strategy and orders services would append, and ticks run to their end."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal

from eventstore import NO_STREAM, AppendResult, EventStore
from services.broker.protocol import Broker
from services.broker.simulator import SimBroker, SimConfig
from services.clock.ticks import publish_tick
from services.core.events import new_event
from services.core.host import ServiceContext
from services.core.jobs.types import JobType, Tick, TickReason, encode_tick
from services.core.settings import Settings, load_settings
from services.model.decimals import canonical_decimal
from services.model.events.orders import OrderFilled, OrderPartiallyFilled
from services.model.events.strategy import PortfolioOpened, StrategyAttached
from services.model.vocabulary import Side
from tests.waiting import until


def settings_for(pg_dsn: str, nats_url: str, subject_prefix: str) -> Settings:
    return load_settings(nats_url=nats_url, database_url=pg_dsn, subject_prefix=subject_prefix)


def sim_factory(pg_dsn: str, seed: int = 7) -> Callable[[ServiceContext], Awaitable[Broker]]:
    """A SimBroker whose simulated time is the host's tick time (moved by ``ctx.at``)."""

    async def factory(ctx: ServiceContext) -> Broker:
        return await SimBroker.connect(pg_dsn, SimConfig(seed=seed), ctx.tick_time)

    return factory


async def open_portfolio(store: EventStore, portfolio_id: str, cash: str, at: datetime,
                         universe: tuple[str, ...] = ()) -> None:
    opened = PortfolioOpened(portfolio_id=portfolio_id, starting_cash=Decimal(cash), trading_mode="paper",
                             risk_limits={}, at=at)
    events = [new_event(opened, portfolio_id)]
    if universe:
        attached = StrategyAttached(portfolio_id=portfolio_id, strategy="s1", kind="momentum", universe=universe,
                                    parameters={}, sizing={}, at=at)
        events.append(new_event(attached, portfolio_id, "s1"))
    await store.append(f"portfolio-{portfolio_id}", events, NO_STREAM)


def fill(portfolio_id: str, coid: str, symbol: str, side: Side, cumulative: str, qty: str, price: str,
         at: datetime, *, final: bool = False) -> OrderFilled | OrderPartiallyFilled:
    cls = OrderFilled if final else OrderPartiallyFilled
    q, p = Decimal(qty), Decimal(price)
    return cls(portfolio_id=portfolio_id, client_order_id=coid, symbol=symbol, side=side, fill_qty=q, fill_price=p,
               fill_notional=q * p, cumulative_qty=Decimal(cumulative), avg_price=p, filled_at=at)


async def append_fill(store: EventStore, event: OrderFilled | OrderPartiallyFilled) -> AppendResult:
    """As the orders service does: the fill event in ``order-<client_order_id>``, id from its cause."""
    cause = (event.client_order_id, canonical_decimal(event.cumulative_qty), type(event).__name__)
    return await store.append(f"order-{event.client_order_id}", [new_event(event, *cause)])


# ------------------------------------------------------------------------------------------- ticks

JOB_END_TYPES = ("JobExecutionCompleted", "JobExecutionFailed", "JobExecutionSkipped")


async def job_end(store: EventStore, tick_id: str) -> dict | None:
    """The recorded end of a tick's run: {"type", **data}, or None while it has none."""
    import msgspec

    end = None
    async for e in store.read_stream(f"jobrun-{tick_id}"):
        if e.type in JOB_END_TYPES:
            end = {"type": e.type, **msgspec.json.decode(e.data)}
    return end


async def run_tick(ctx: ServiceContext, job_type: JobType, at: datetime, *,
                   reason: TickReason = TickReason.SCHEDULED, timeout: float = 30.0) -> dict:
    """Publish a tick as the clock does and wait for its recorded end."""
    tick = Tick.for_slot(job_type, at, emitted_at=at, reason=reason)
    await publish_tick(ctx.rt.js, ctx.rt.subjects, tick)
    return await until(lambda: job_end(ctx.rt.store, tick.tick_id), timeout, f"the end of {tick.tick_id}")


async def redeliver_tick(ctx: ServiceContext, job_type: JobType, at: datetime, service: str) -> None:
    """Publish the same tick again WITHOUT its Nats-Msg-Id (JetStream keeps it: a true duplicate) and
    wait until the service's consumer has handled it."""
    tick = Tick.for_slot(job_type, at, emitted_at=at, reason=TickReason.SCHEDULED)
    await ctx.rt.js.publish(ctx.rt.subjects.tick(job_type.value), encode_tick(tick))

    async def drained() -> bool:
        info = await ctx.rt.js.consumer_info(ctx.rt.subjects.ticks_stream, f"{service}_{job_type.value}")
        return info.num_pending == 0 and info.num_ack_pending == 0

    await until(drained, what=f"the {service} consumer of {job_type.value} ticks to drain")
