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
from tests.waiting import until

LIMIT = 20


async def test_a_late_response_does_not_raise_the_budget(clock: object) -> None:
    fake = FakeAlpaca(seed=3, now=clock, key_id=API_KEY, secret_key=API_SECRET,  # type: ignore[arg-type]
                      rate_limit_per_minute=LIMIT).start()
    limiter = RateLimiter(LIMIT)
    broker = AlpacaBroker(alpaca_settings_for(fake, alpaca_read_timeout=5.0), limiter)
    try:
        # The first request stalls; the server counts it first (its answer will say 19 left) ...
        fake.add_fault("GET", "/v2/account", Fault("stall", seconds=3.0))
        slow = asyncio.create_task(broker.get_account())
        # The fake's counter is the only signal the request landed.
        await until(lambda: fake.calls["GET /v2/account"], 5, "the fake to count the first request", interval=0.01)
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


def test_the_budget_is_whole_again_at_a_429s_reset_whatever_answers_after_it() -> None:
    """A 429 with a reset a second away, then the slow answer of an earlier request carrying the window's
    end a minute away: the budget must refill at the 429's reset, not at the window's end (it used to stay
    empty for the rest of the minute, holding every order)."""
    now = [1000.0]
    limiter = RateLimiter(limit_per_minute=100, clock=lambda: now[0], poll_seconds=0.001)
    first, second = limiter.try_acquire(Priority.ORDER_SUBMIT), limiter.try_acquire(Priority.ORDER_SUBMIT)
    assert (first, second) == (0.0, 0.0)
    with limiter.sending(2):
        limiter.update_from_headers({"X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": "1001"}, 429)
    with limiter.sending(1):
        limiter.update_from_headers({"X-Ratelimit-Remaining": "98", "X-Ratelimit-Reset": "1060"}, 504)
    assert limiter.try_acquire(Priority.ORDER_SUBMIT) == pytest.approx(1.0)  # blocked until the 429's reset
    now[0] = 1001.0
    assert limiter.try_acquire(Priority.ORDER_SUBMIT) == 0.0
    assert limiter.remaining == 99
    now[0] = 1002.0  # and it stays whole: the refill happens once per 429
    assert limiter.try_acquire(Priority.ORDER_SUBMIT) == 0.0
    assert limiter.remaining == 98


def test_the_answer_to_the_latest_request_cannot_raise_the_budget() -> None:
    """Two concurrent requests counted by the server in the other order: the answer to the latest one sent
    carries the higher remaining count. Taking it as the truth gave one request too many (a 429)."""
    now = [1000.0]
    limiter = RateLimiter(limit_per_minute=20, clock=lambda: now[0])
    assert limiter.try_acquire(Priority.ORDER_SUBMIT) == limiter.try_acquire(Priority.ORDER_SUBMIT) == 0.0
    with limiter.sending(1):  # counted second by the server
        limiter.update_from_headers({"X-Ratelimit-Remaining": "18", "X-Ratelimit-Reset": "1060"}, 200)
    with limiter.sending(2):  # counted first, answered last, nothing unanswered after it
        limiter.update_from_headers({"X-Ratelimit-Remaining": "19", "X-Ratelimit-Reset": "1060"}, 200)
    assert limiter.remaining == 18
    with limiter.sending(3):  # another client of the account spent some: the budget goes down
        limiter.update_from_headers({"X-Ratelimit-Remaining": "10", "X-Ratelimit-Reset": "1060"}, 200)
    assert limiter.remaining == 10
    with limiter.sending(4):  # a newer window refills it
        limiter.update_from_headers({"X-Ratelimit-Remaining": "19", "X-Ratelimit-Reset": "1120"}, 200)
    assert limiter.remaining == 19
