"""The shared Alpaca budget against the fake server's enforced limit: it counts what it sends, so a slow
response's stale ``X-Ratelimit-Remaining`` cannot raise it and earn 429s; and order_status_check's
listing floor lists 10,000 open orders in 20 calls."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from services.broker.alpaca import AlpacaBroker
from services.broker.ratelimit import Priority, RateLimiter
from services.orders.service import listing_floor
from tests.broker.conftest import API_KEY, API_SECRET, START, alpaca_settings_for
from tests.fake_alpaca import FakeAlpaca, Fault

LIMIT = 20


async def _until_called(fake: FakeAlpaca, name: str) -> None:
    while fake.calls[name] == 0:  # noqa: ASYNC110 (the fake's counter is the only signal it landed)
        await asyncio.sleep(0.01)


async def test_a_late_response_does_not_raise_the_budget(clock: object) -> None:
    fake = FakeAlpaca(seed=3, now=clock, key_id=API_KEY, secret_key=API_SECRET,  # type: ignore[arg-type]
                      rate_limit_per_minute=LIMIT).start()
    limiter = RateLimiter(LIMIT)
    broker = AlpacaBroker(alpaca_settings_for(fake, alpaca_read_timeout=5.0), limiter)
    try:
        # The first request stalls; the server counts it first (its answer will say 19 left) ...
        fake.add_fault("GET", "/v2/account", Fault("stall", seconds=3.0))
        slow = asyncio.create_task(broker.get_account())
        await asyncio.wait_for(_until_called(fake, "GET /v2/account"), 5)
        # ... while 18 more are sent and answered: one request is left in this window.
        for _ in range(LIMIT - 2):
            await broker.get_clock()
        assert not slow.done()
        await slow
        assert limiter.remaining == 1, limiter.remaining  # the late "19 left" did not raise it
        # That one is an order submission's (status checks leave 5 % to them); then nothing until the reset.
        assert limiter.try_acquire(Priority.ORDER_STATUS) > 0
        assert limiter.try_acquire(Priority.ORDER_SUBMIT) == 0
        assert limiter.try_acquire(Priority.ORDER_SUBMIT) > 0
        assert fake.calls == {"GET /v2/account": 1, "GET /v2/clock": LIMIT - 2}  # and no 429 answered
    finally:
        await broker.aclose()
        fake.stop()


async def test_a_burst_gets_no_429(clock: object) -> None:
    fake = FakeAlpaca(seed=3, now=clock, key_id=API_KEY, secret_key=API_SECRET,  # type: ignore[arg-type]
                      rate_limit_per_minute=LIMIT).start()
    limiter = RateLimiter(LIMIT)
    broker = AlpacaBroker(alpaca_settings_for(fake), limiter)
    try:
        calls = [asyncio.create_task(broker.get_clock()) for _ in range(30)]
        done, pending = await asyncio.wait(calls, timeout=3)
        # 19 are answered (one is left to order submissions); the rest wait for the window's reset
        # instead of being refused.
        assert len(done) == LIMIT - 1 and all(task.exception() is None for task in done)
        assert len(pending) == 30 - LIMIT + 1 and fake.calls == {"GET /v2/clock": LIMIT - 1}
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        await broker.aclose()
        fake.stop()


async def test_status_check_floor_lists_ten_thousand_orders_in_twenty_calls(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    oldest = START - timedelta(hours=2)
    ids = fake_alpaca.seed_open_orders(10_000, start=oldest)
    orders = await alpaca_broker.list_orders("all", after=listing_floor(oldest))
    assert {o.id for o in orders} == set(ids)
    assert fake_alpaca.calls["GET /v2/orders"] == 20
    # The floor a second below (as before) needed one more call to prove the end.
    fake_alpaca.reset_counts()
    await alpaca_broker.list_orders("all", after=oldest - timedelta(seconds=1))
    assert fake_alpaca.calls["GET /v2/orders"] == 21


async def test_a_trade_stream_outage_is_one_warning_line(
    fake_alpaca: FakeAlpaca, caplog: pytest.LogCaptureFixture
) -> None:
    """No Alpaca stream to connect to: alpaca-py's traceback per backoff becomes one line with the next try."""
    from services.core.embedded import free_port

    broker = AlpacaBroker(
        alpaca_settings_for(fake_alpaca, api_stream_url=f"ws://127.0.0.1:{free_port()}/stream"), RateLimiter(1000)
    )
    caplog.set_level(logging.DEBUG)
    updates = broker.trade_updates()
    reader = asyncio.ensure_future(updates.__anext__())
    try:
        await asyncio.wait({reader}, timeout=4)  # several reconnect attempts (backoff from 0.5 s)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await updates.aclose()
        await broker.aclose()
    attempts = [r for r in caplog.records if "starting trading websocket connection" in r.getMessage()]
    assert len(attempts) >= 2  # it did retry
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1, [r.getMessage() for r in loud]
    assert "Alpaca trade stream down" in loud[0].getMessage() and "next try at" in loud[0].getMessage()
    assert loud[0].exc_info is None
