"""The trading loop against unmodified alpaca-py on the fake Alpaca server: a 504 after the order was
accepted, a 429 and a stalled submit never create a second order, and every order ends known and final."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from nats.aio.client import Client as NatsClient

from services.broker.alpaca import AlpacaBroker
from services.broker.protocol import Broker
from services.broker.ratelimit import RateLimiter
from services.broker.simulator.engine import FillPolicy
from services.core.host import ServiceContext
from services.core.jobs.types import JobType
from services.stack import hosted
from services.strategy.commands import apply_all
from services.strategy.config import parse_portfolio_spec
from tests.broker.conftest import API_KEY, API_SECRET, alpaca_settings_for
from tests.fake_alpaca import FakeAlpaca
from tests.fake_alpaca.server import Fault
from tests.positions.helpers import run_tick, settings_for
from tests.trading.helpers import TERMINAL, books_settle_to_fills, rows
from tests.waiting import until

T0 = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)  # Tuesday 11:00 New York
SUBMIT = "POST /v2/orders"


class TickTimeNow:
    ctx: ServiceContext | None = None

    def __call__(self) -> datetime:
        return self.ctx.tick_time() if self.ctx is not None else T0


@pytest.fixture
def now() -> TickTimeNow:
    return TickTimeNow()


@pytest.fixture
def fake(now: TickTimeNow) -> Iterator[FakeAlpaca]:
    server = FakeAlpaca(
        seed=4,
        now=now,
        key_id=API_KEY,
        secret_key=API_SECRET,
        rate_limit_per_minute=100_000,
        starting_cash=Decimal(1_000_000),
        fill_policy=FillPolicy(fill_latency=timedelta(seconds=20)),
    ).start()
    yield server
    server.stop()


async def test_trading_on_fake_alpaca_with_faults(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient, fake: FakeAlpaca, now: TickTimeNow
) -> None:
    specs = [
        parse_portfolio_spec(
            {
                "name": f"a{i}",
                "starting_cash": "100000",
                # RSI below 98 is "oversold" here: every symbol is a buy, so every submit path is taken.
                "strategy": [
                    {
                        "kind": "rsi_mean_reversion",
                        "universe": universe,
                        "parameters": {"period": 5, "oversold": "98", "overbought": "99"},
                        "sizing": {"method": "fixed_quantity", "quantity": "3"},
                    }
                ],
            }
        )
        for i, universe in enumerate((["AAPL", "MSFT", "NVDA"], ["AMZN", "META", "TSLA"]))
    ]

    async def alpaca(_ctx: ServiceContext) -> Broker:
        # The fake server's market runs in tick time: so does the broker's clock (order requests are in time).
        return AlpacaBroker(alpaca_settings_for(fake, alpaca_read_timeout=0.5), RateLimiter(100_000), clock=now)

    # The first submit is accepted but answered 504; the next is rate limited; the next stalls past
    # the client's timeout (the order lands after the client gave up).
    fake.add_fault("POST", "/v2/orders", Fault("status", status=504, after_handling=True), times=1)
    fake.add_fault("POST", "/v2/orders", Fault("status", status=429, reset_seconds=0.2), times=1)
    fake.add_fault("POST", "/v2/orders", Fault("stall", seconds=1.0), times=1)

    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    services = ["relay", "projections", "strategy", "orders", "positions"]
    async with hosted(services, settings, broker_factory=alpaca, virtual=True) as ctx:
        now.ctx = ctx
        ctx.tick_time.set(T0)
        store = ctx.rt.store
        await apply_all(store, specs, datetime.now(UTC))
        end = await run_tick(ctx, JobType.STRATEGY_EXECUTION, T0, timeout=60)
        assert end["type"] == "JobExecutionCompleted", end
        requested = end["counters"]["trades_requested"]
        assert requested >= 3, end
        # The stalled submit lands at the broker a second after the client gave up (0.5 s), and the 429
        # holds every call until its reset. In real time the next order check is a minute away; here
        # ticks come as fast as they are handled, so let the broker receive every order first.
        async def all_at_broker() -> bool:
            return fake.order_count() >= requested

        await until(all_at_broker, 20, "every requested order at the fake Alpaca")

        async def all_final() -> bool:
            await ctx.catch_up("trades")
            found = await rows(store, "SELECT status FROM trades")
            return len(found) == requested and all(r["status"] in TERMINAL for r in found)

        # Order checks every minute, as the clock would, until every order is final.
        for minute in range(1, 15):
            check = await run_tick(ctx, JobType.ORDER_STATUS_CHECK, T0 + timedelta(minutes=minute), timeout=60)
            assert check["type"] == "JobExecutionCompleted", check
            if await all_final():
                break
        assert await all_final(), [dict(r) for r in await rows(store, "SELECT status, reason FROM trades")]

        trades = await rows(store, "SELECT client_order_id, status, broker_order_id, reason FROM trades")
        assert all(t["status"] == "filled" for t in trades), [dict(t) for t in trades if t["status"] != "filled"]
        # Exactly one order at the broker per client order id, and none we do not know.
        assert fake.order_count() == len(trades)
        assert {t["broker_order_id"] for t in trades} == set(fake._state.orders)
        # The 504'd order was found by its client order id, not sent again.
        assert fake.calls["GET /v2/orders:by_client_order_id"] >= 1
        assert await books_settle_to_fills(store, specs) == len(trades)
