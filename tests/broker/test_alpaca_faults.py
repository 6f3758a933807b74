"""alpaca-py against the fake server, over real HTTP, with the faults of DESIGN.md "Alpaca pitfalls"."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.broker import BrokerSettings, create_broker
from services.broker.alpaca import AlpacaBroker, AlpacaSettings, check_settings, load_alpaca_settings
from services.broker.errors import (
    AmbiguousSubmit,
    BrokerConfigError,
    BrokerError,
    BrokerUnavailable,
    DuplicateClientOrderId,
    OrderRejected,
    RateLimited,
)
from services.broker.models import OrderRequest, OrderSide
from services.broker.ratelimit import RateLimiter
from tests.broker.conftest import API_KEY, API_SECRET, START, alpaca_settings_for
from tests.fake_alpaca import FakeAlpaca, Fault

SUBMIT = "POST /v2/orders"
LOOKUP = "GET /v2/orders:by_client_order_id"
LIST = "GET /v2/orders"


def buy(client_id: str, qty: str = "2") -> OrderRequest:
    return OrderRequest(client_order_id=client_id, symbol="AAPL", side=OrderSide.BUY, qty=Decimal(qty))


async def test_504_after_acceptance_yields_exactly_one_order(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    fake_alpaca.add_fault("POST", "/v2/orders", Fault("status", status=504, after_handling=True))
    order = await alpaca_broker.submit_order(buy("fault-504-after"))
    assert order.client_order_id == "fault-504-after" and order.qty == Decimal(2)
    assert fake_alpaca.order_count() == 1
    assert fake_alpaca.calls[SUBMIT] == 1  # never re-POSTed (alpaca-py alone would retry 3 times)
    assert fake_alpaca.calls[LOOKUP] == 1


async def test_504_before_acceptance_is_ambiguous_and_never_resubmitted(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    fake_alpaca.add_fault("POST", "/v2/orders", Fault("status", status=504))
    with pytest.raises(AmbiguousSubmit) as info:
        await alpaca_broker.submit_order(buy("fault-504-before"))
    assert info.value.client_order_id == "fault-504-before" and info.value.status == 504
    assert fake_alpaca.order_count() == 0
    assert fake_alpaca.calls[SUBMIT] == 1
    assert fake_alpaca.calls[LOOKUP] == 2  # one lookup per configured delay


async def test_connection_reset_after_acceptance_is_resolved_by_lookup(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    fake_alpaca.add_fault("POST", "/v2/orders", Fault("reset", after_handling=True))
    order = await alpaca_broker.submit_order(buy("fault-reset-after"))
    assert order.client_order_id == "fault-reset-after"
    assert fake_alpaca.order_count() == 1 and fake_alpaca.calls[SUBMIT] == 1


async def test_submit_that_times_out_but_lands_later_is_found(fake_alpaca: FakeAlpaca) -> None:
    # The server sits on the POST for 0.6 s, then accepts it; we give up reading after 0.2 s.
    fake_alpaca.add_fault("POST", "/v2/orders", Fault("stall", seconds=0.6))
    settings = alpaca_settings_for(fake_alpaca, alpaca_read_timeout=0.2, alpaca_submit_lookup_delays=(0.0, 1.0))
    broker = AlpacaBroker(settings, RateLimiter(100_000))
    try:
        order = await broker.submit_order(buy("fault-stall-submit"))
    finally:
        await broker.aclose()
    assert order.client_order_id == "fault-stall-submit"
    assert fake_alpaca.order_count() == 1 and fake_alpaca.calls[SUBMIT] == 1
    assert fake_alpaca.calls[LOOKUP] == 2  # the first lookup came too early


async def test_a_stalled_read_times_out(fake_alpaca: FakeAlpaca) -> None:
    fake_alpaca.add_fault("GET", "/v2/account", Fault("stall", seconds=3))
    broker = AlpacaBroker(alpaca_settings_for(fake_alpaca, alpaca_read_timeout=0.3), RateLimiter(100_000))
    started = time.monotonic()
    try:
        with pytest.raises(BrokerUnavailable, match="timed out"):
            await broker.get_account()
    finally:
        await broker.aclose()
    assert time.monotonic() - started < 1.5


async def test_reused_client_order_id_reports_the_existing_order(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    first = await alpaca_broker.submit_order(buy("fault-dup"))
    with pytest.raises(DuplicateClientOrderId) as info:
        await alpaca_broker.submit_order(buy("fault-dup"))
    assert info.value.existing is not None and info.value.existing.id == first.id
    assert info.value.status == 422 and info.value.code == 40010001
    assert fake_alpaca.order_count() == 1


async def test_definite_refusal_is_a_rejection_without_lookup(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    with pytest.raises(OrderRejected) as info:
        await alpaca_broker.submit_order(buy("fault-too-big", "1000000"))
    assert (info.value.status, info.value.code) == (403, 40310000)
    assert "insufficient buying power" in info.value.message
    assert fake_alpaca.calls[LOOKUP] == 0


async def test_429_backs_off_until_the_reset_time(fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker) -> None:
    fake_alpaca.add_fault("GET", "/v2/account", Fault("status", status=429, reset_seconds=1.0))
    account = await alpaca_broker.get_account()
    assert account.cash == Decimal(100000)
    (first, second) = [t for t, name in fake_alpaca.request_log if name == "GET /v2/account"]
    reset = alpaca_broker.rate_limiter.blocked_until  # the X-Ratelimit-Reset of the 429
    assert second >= reset - 0.01 > first  # the retry waited for the reset the server named
    assert second - first < 3
    assert fake_alpaca.calls["GET /v2/account"] == 2


async def test_429_on_submit_is_retried_with_the_same_client_order_id(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    fake_alpaca.add_fault("POST", "/v2/orders", Fault("status", status=429, reset_seconds=0.5))
    order = await alpaca_broker.submit_order(buy("fault-429-submit"))
    assert order.client_order_id == "fault-429-submit"
    assert fake_alpaca.calls[SUBMIT] == 2 and fake_alpaca.order_count() == 1


async def test_429_beyond_the_retry_budget_surfaces_with_reset_time(fake_alpaca: FakeAlpaca) -> None:
    fake_alpaca.add_fault("GET", "/v2/positions", Fault("status", status=429, reset_seconds=30))
    broker = AlpacaBroker(alpaca_settings_for(fake_alpaca, alpaca_max_rate_limit_retries=0), RateLimiter(100_000))
    try:
        with pytest.raises(RateLimited) as info:
            await broker.list_positions()
    finally:
        await broker.aclose()
    assert info.value.status == 429 and info.value.code == 42910000
    assert info.value.reset_at is not None and info.value.reset_at.timestamp() > time.time() + 20


@pytest.mark.parametrize(
    ("fault", "status", "code", "text"),
    [
        (Fault("status", status=500), 500, 50000000, "internal server error"),
        (Fault("status", status=502), 502, None, "non-JSON error body"),
        (Fault("reset"), None, None, "connection failed"),
        (Fault("non_json"), None, None, "non-JSON response body"),
    ],
)
async def test_transport_faults_map_to_broker_unavailable(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker, fault: Fault, status: int | None, code: int | None, text: str
) -> None:
    fake_alpaca.add_fault("GET", "/v2/positions", fault)
    with pytest.raises(BrokerUnavailable) as info:
        await alpaca_broker.list_positions()
    assert (info.value.status, info.value.code) == (status, code)
    assert text in info.value.message


async def test_ten_thousand_open_orders_in_at_most_twenty_list_calls(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker
) -> None:
    ids = fake_alpaca.seed_open_orders(10_000, start=START - timedelta(hours=2))
    orders = await alpaca_broker.list_orders("open", after=START - timedelta(hours=2, microseconds=1))
    assert {o.id for o in orders} == set(ids) and len(orders) == 10_000
    assert fake_alpaca.calls[LIST] == 20
    assert [o.submitted_at for o in orders] == sorted((o.submitted_at for o in orders), reverse=True)

    # Without a floor the last full page must be followed by one (empty) page that proves the end.
    fake_alpaca.reset_counts()
    assert len(await alpaca_broker.list_orders("open")) == 10_000
    assert fake_alpaca.calls[LIST] == 21


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(st.integers(min_value=1, max_value=600), min_size=1, max_size=3),
    gaps=st.lists(st.integers(min_value=1, max_value=10**9), min_size=3, max_size=3, unique=True),
)
async def test_paging_returns_every_open_order_once(
    fake_alpaca: FakeAlpaca, alpaca_broker: AlpacaBroker, batches: list[int], gaps: list[int]
) -> None:
    # Batches interleave in time (each is one microsecond apart, starting at its own offset); Alpaca's
    # submitted_at stamps are distinct, and so are these.
    fake_alpaca.clear_orders()
    added: set[str] = set()
    for count, gap in zip(batches, gaps, strict=False):
        start = START - timedelta(hours=3) + timedelta(microseconds=gap * 1000)
        added |= set(fake_alpaca.seed_open_orders(count, start=start))
    fake_alpaca.reset_counts()
    orders = await alpaca_broker.list_orders("open")
    assert len(orders) == len({o.id for o in orders})  # deduplicated
    assert {o.id for o in orders} == added
    assert fake_alpaca.calls[LIST] == len(orders) // 500 + 1


async def test_keys_never_appear_in_logs_errors_or_reprs(
    fake_alpaca: FakeAlpaca, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = alpaca_settings_for(fake_alpaca, alpaca_read_timeout=0.2, alpaca_max_rate_limit_retries=0)
    broker = AlpacaBroker(settings, RateLimiter(100_000))
    texts = [repr(settings), str(settings), repr(broker), str(settings.model_dump())]
    faults = [
        Fault("status", status=500),
        Fault("status", status=429, reset_seconds=0),
        Fault("stall", seconds=1),
        Fault("reset"),
        Fault("non_json"),
    ]
    try:
        for fault in faults:
            fake_alpaca.add_fault("GET", "/v2/account", fault)
            with pytest.raises(BrokerError) as info:
                await broker.get_account()
            texts += [str(info.value), repr(info.value), info.value.message]
        fake_alpaca.add_fault("POST", "/v2/orders", Fault("status", status=504))
        fake_alpaca.add_fault("GET", "/v2/orders:by_client_order_id", Fault("reset"), times=5)
        with pytest.raises(AmbiguousSubmit) as ambiguous:
            await broker.submit_order(buy("fault-secret"))
        texts += [str(ambiguous.value), repr(ambiguous.value)]
    finally:
        await broker.aclose()
    texts += [record.getMessage() for record in caplog.records]
    texts += [str(record.exc_info) for record in caplog.records if record.exc_info]
    everything = "\n".join(texts)
    assert "get_account" in everything  # we did capture the failures
    assert API_KEY not in everything and API_SECRET not in everything


async def test_live_trading_must_be_enabled_explicitly(fake_alpaca: FakeAlpaca) -> None:
    live = alpaca_settings_for(fake_alpaca, trading_mode="live", live_trading="no")
    with pytest.raises(BrokerConfigError, match="OPENBELL_LIVE_TRADING=yes"):
        AlpacaBroker(live)
    enabled = alpaca_settings_for(fake_alpaca, trading_mode="live", live_trading="yes")
    check_settings(enabled)
    with pytest.raises(BrokerConfigError, match="APCA_API_KEY_ID"):
        check_settings(AlpacaSettings(api_key_id=None, api_secret_key=None))
    with pytest.raises(BrokerConfigError, match="trading_mode") as info:
        load_alpaca_settings(trading_mode="yolo", api_secret_key=API_SECRET)
    assert API_SECRET not in str(info.value)


def test_a_client_without_the_attributes_openbell_sets_is_refused(fake_alpaca: FakeAlpaca) -> None:
    """Should an alpaca-py release rename the attributes that carry the request timeout and the retry count,
    the adapter refuses that client rather than run with blind order retries and no timeout."""
    from alpaca.trading.client import TradingClient

    from services.broker.alpaca.client import prepare_client

    settings = alpaca_settings_for(fake_alpaca)
    client = TradingClient(API_KEY, API_SECRET, paper=True, url_override=fake_alpaca.url)
    prepare_client(client, settings, RateLimiter())
    assert client._retry == 0 and client._session.default_timeout == (
        settings.alpaca_connect_timeout,
        settings.alpaca_read_timeout,
    )

    class RenamedClient:
        _session = None  # a release that kept the session but renamed the retry count

    with pytest.raises(BrokerConfigError, match="_retry") as info:
        prepare_client(RenamedClient(), settings, RateLimiter())
    assert API_SECRET not in str(info.value)


async def test_settings_and_factory_from_the_environment(
    fake_alpaca: FakeAlpaca, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APCA_API_KEY_ID", API_KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", API_SECRET)
    monkeypatch.setenv("APCA_API_BASE_URL", fake_alpaca.url)
    monkeypatch.setenv("APCA_API_DATA_URL", fake_alpaca.url)
    monkeypatch.setenv("OPENBELL_ALPACA_READ_TIMEOUT", "1.5")
    monkeypatch.setenv("OPENBELL_BROKER", "alpaca")
    monkeypatch.setenv("OPENBELL_TRADING_MODE", "live")  # the fake server is not Alpaca's paper host
    monkeypatch.setenv("OPENBELL_LIVE_TRADING", "yes")
    settings = load_alpaca_settings()
    assert settings.api_key_id is not None and settings.api_key_id.get_secret_value() == API_KEY
    assert settings.alpaca_read_timeout == 1.5 and settings.trading_mode == "live"
    assert API_SECRET not in repr(settings)
    broker = await create_broker(BrokerSettings())
    try:
        assert isinstance(broker, AlpacaBroker)
        assert (await broker.get_clock()).is_open
    finally:
        await broker.aclose()
    monkeypatch.setenv("OPENBELL_TRADING_MODE", "paper")
    with pytest.raises(BrokerConfigError, match="not Alpaca's paper host"):
        await create_broker(BrokerSettings())
