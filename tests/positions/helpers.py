"""Helpers of the positions and alerts tests: settings for the test's own servers, a simulator broker in
tick time, events the strategy and orders services would append, and polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from eventstore import NO_STREAM, AppendResult, EventStore
from services.broker.protocol import Broker
from services.broker.simulator.broker import SimBroker, SimConfig
from services.core.events import new_event
from services.core.host import ServiceContext
from services.core.settings import Settings, load_settings
from services.orders.events import OrderFilled, OrderPartiallyFilled
from services.orders.lifecycle import canonical_decimal
from services.orders.types import Side
from services.strategy.events import PortfolioOpened, StrategyAttached

T = TypeVar("T")


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


async def wait_for(check: Callable[[], Awaitable[T]], timeout: float = 15.0, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns a truthy value; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    value = await check()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)
        value = await check()
    return value
