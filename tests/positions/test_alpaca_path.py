"""price_update and position_sync with AlpacaBroker (unmodified alpaca-py) on the fake Alpaca server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from nats.aio.client import Client as NatsClient

from services.broker.alpaca import AlpacaBroker
from services.broker.protocol import Broker
from services.broker.ratelimit import RateLimiter
from services.core.host import ServiceContext
from services.core.jobs.types import JobType
from services.model.vocabulary import Side
from services.positions.books import load_book
from services.stack import hosted
from tests.broker.conftest import API_KEY, API_SECRET, alpaca_settings_for
from tests.fake_alpaca import FakeAlpaca
from tests.positions.helpers import append_fill, fill, open_portfolio, run_tick, settings_for
from tests.waiting import until

T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # Tuesday 10:00 New York
QUOTES = "GET /v2/stocks/quotes/latest"


class Now:
    """The fake server's time: the host's tick time once the host exists."""

    ctx: ServiceContext | None = None

    def __call__(self) -> datetime:
        return self.ctx.tick_time() if self.ctx is not None else T0


@pytest.fixture
def now() -> Now:
    return Now()


@pytest.fixture
def fake(now: Now) -> Iterator[FakeAlpaca]:
    server = FakeAlpaca(seed=5, now=now, key_id=API_KEY, secret_key=API_SECRET, rate_limit_per_minute=100_000).start()
    yield server
    server.stop()


async def test_price_update_and_position_sync_on_fake_alpaca(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient, fake: FakeAlpaca, now: Now,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("OPENBELL_QUOTE_BATCH_SIZE", "2")
    settings = settings_for(pg_dsn, nats_url, subject_prefix)

    async def alpaca(_ctx: ServiceContext) -> Broker:
        return AlpacaBroker(alpaca_settings_for(fake), RateLimiter(100_000))

    async with hosted(["relay", "projections", "positions"], settings, broker_factory=alpaca) as ctx:
        now.ctx = ctx
        ctx.tick_time.set(T0)
        store = ctx.rt.store
        await open_portfolio(store, "p1", "100000", T0, universe=("NVDA",))
        await append_fill(store, fill("p1", "o1", "AAPL", Side.BUY, "10", "10", "100", T0, final=True))
        await append_fill(store, fill("p1", "o2", "MSFT", Side.BUY, "4", "4", "200", T0, final=True))

        async def booked() -> bool:
            book, _ = await load_book(store, "p1")
            return book is not None and book.position("MSFT").qty == 4 and book.position("AAPL").qty == 10

        await until(booked)
        fake.reset_counts()
        end = await run_tick(ctx, JobType.PRICE_UPDATE, T0 + timedelta(minutes=5))
        assert end["type"] == "JobExecutionCompleted", end
        assert end["counters"]["symbols_updated"] == 3
        assert fake.calls[QUOTES] == 2  # 3 symbols, batches of 2

        # The broker holds 8 AAPL (not 10) and the 4 MSFT.
        fake._state.positions.update({"AAPL": (Decimal(8), Decimal(100)), "MSFT": (Decimal(4), Decimal(200))})
        sync = await run_tick(ctx, JobType.POSITION_SYNC, T0 + timedelta(minutes=10))
        assert sync["counters"]["discrepancies_found"] == 1 and sync["counters"]["discrepancies_fixed"] == 1, sync
        again = await run_tick(ctx, JobType.POSITION_SYNC, T0 + timedelta(minutes=15))
        assert again["counters"]["discrepancies_found"] == 0
        book, _ = await load_book(store, "p1")
        await ctx.catch_up()
        async with store.pool.acquire() as con:
            value = await con.fetchval("SELECT market_value FROM portfolios WHERE portfolio_id = 'p1'")
    assert book is not None and book.position("AAPL").qty == 8
    assert value is not None and value > 0
    assert API_SECRET not in caplog.text
