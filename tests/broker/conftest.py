"""Fixtures for the broker tests: a ManualClock, the fake Alpaca server, and ``harness`` parametrized over
the simulator broker and AlpacaBroker-on-the-fake-server (the shared contract suite uses it)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.broker.alpaca import AlpacaBroker, AlpacaSettings, load_alpaca_settings
from services.broker.protocol import Broker
from services.broker.ratelimit import RateLimiter
from services.broker.simulator import ManualClock, SimBroker, SimConfig
from services.broker.simulator.engine import FillPolicy
from services.broker.simulator.market import MarketSimulator
from tests.fake_alpaca import FakeAlpaca

SEED = 11
# Tuesday 2026-11-24, 10:00 in New York: the market is open.
START = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
FILL_POLICY = FillPolicy(fill_latency=timedelta(seconds=2), partial_fill_steps=2)
# Distinctive so a leak is unmistakable in any log line or message.
API_KEY = "PKTESTKEY0123456789AB"
API_SECRET = "sEcReT-do-not-leak-0123456789abcdefABCDEF"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def fake_alpaca(clock: ManualClock) -> Iterator[FakeAlpaca]:
    server = FakeAlpaca(
        seed=SEED,
        now=clock,
        fill_policy=FILL_POLICY,
        key_id=API_KEY,
        secret_key=API_SECRET,
        rate_limit_per_minute=100_000,
    ).start()
    yield server
    server.stop()


def alpaca_settings_for(server: FakeAlpaca, **overrides: object) -> AlpacaSettings:
    values: dict[str, object] = {
        "api_key_id": API_KEY,
        "api_secret_key": API_SECRET,
        # The fake server is not Alpaca's paper host: trading there passes the live gate, as any host would.
        "trading_mode": "live",
        "live_trading": "yes",
        "api_base_url": server.url,
        "api_data_url": server.url,
        "api_stream_url": server.stream_url,
        "alpaca_connect_timeout": 2.0,
        "alpaca_read_timeout": 2.0,
        "alpaca_submit_lookup_delays": (0.0, 0.05),
    }
    values.update(overrides)
    return load_alpaca_settings(**values)


@pytest.fixture
async def alpaca_broker(fake_alpaca: FakeAlpaca) -> AsyncIterator[AlpacaBroker]:
    broker = AlpacaBroker(alpaca_settings_for(fake_alpaca), RateLimiter(100_000))
    yield broker
    await broker.aclose()


@dataclass
class Harness:
    """One broker under test plus the handles to drive simulated time."""

    kind: str
    broker: Broker
    clock: ManualClock
    market: MarketSimulator
    fake: FakeAlpaca | None = None

    async def advance(self, delta: timedelta) -> None:
        moment = self.clock() + delta
        if isinstance(self.broker, SimBroker):
            await self.broker.advance_to(moment)
        else:
            assert self.fake is not None
            self.clock.set(moment)
            self.fake.settle()


@pytest.fixture(params=["sim", "alpaca"])
async def harness(
    request: pytest.FixtureRequest, clock: ManualClock, pg_dsn: str, fake_alpaca: FakeAlpaca
) -> AsyncIterator[Harness]:
    # Both resources are cheap (a fresh database, a server thread); each param uses one of them.
    if request.param == "sim":
        sim = await SimBroker.connect(pg_dsn, SimConfig(seed=SEED, fill_policy=FILL_POLICY), clock)
        yield Harness("sim", sim, clock, sim.market)
        await sim.aclose()
    else:
        fake = fake_alpaca
        broker = AlpacaBroker(alpaca_settings_for(fake), RateLimiter(100_000))
        yield Harness("alpaca", broker, clock, fake.market, fake)
        await broker.aclose()


@pytest.fixture
async def second_pg_dsn(pg_admin_dsn: str) -> AsyncIterator[str]:
    """Another fresh database, for comparing two independent simulator runs."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await admin.close()
    base, _, query = pg_admin_dsn.partition("?")
    yield f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
