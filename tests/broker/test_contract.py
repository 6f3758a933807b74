"""One contract, two brokers: every test runs against SimBroker and AlpacaBroker-on-the-fake-server."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from services.broker.errors import DuplicateClientOrderId, NotFound, OrderNotCancelable, OrderRejected
from services.broker.models import (
    Order,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
    TradeUpdate,
    TradeUpdateEvent,
)
from services.broker.protocol import Broker
from tests.broker.conftest import START, Harness
from tests.waiting import until


def market(client_id: str, qty: str = "10", side: OrderSide = OrderSide.BUY, symbol: str = "AAPL") -> OrderRequest:
    return OrderRequest(client_order_id=client_id, symbol=symbol, side=side, qty=Decimal(qty))


def limit(client_id: str, price: str, qty: str = "5", side: OrderSide = OrderSide.BUY) -> OrderRequest:
    return OrderRequest(
        client_order_id=client_id,
        symbol="MSFT",
        side=side,
        qty=Decimal(qty),
        type=OrderType.LIMIT,
        limit_price=Decimal(price),
    )


def assert_utc(*moments: datetime | None) -> None:
    for moment in moments:
        if moment is not None:
            assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0), moment


async def test_is_a_broker(harness: Harness) -> None:
    assert isinstance(harness.broker, Broker)
    # Alpaca trades in real time (order requests can be too late to send); the simulator's market moves
    # with the time it is given. Both tell their current time.
    assert harness.broker.real_time is (type(harness.broker).__name__ == "AlpacaBroker")
    assert harness.broker.now.tzinfo is not None


async def test_submit_get_and_lookup_by_client_id(harness: Harness) -> None:
    submitted = await harness.broker.submit_order(market("contract-submit-1", "3"))
    assert submitted.client_order_id == "contract-submit-1"
    assert submitted.status in (OrderStatus.ACCEPTED, OrderStatus.NEW)
    assert submitted.qty == Decimal(3) and isinstance(submitted.qty, Decimal)
    assert submitted.filled_qty == 0
    assert submitted.submitted_at == START
    assert_utc(submitted.submitted_at, submitted.updated_at)

    by_id = await harness.broker.get_order(submitted.id)
    by_client_id = await harness.broker.get_order_by_client_id("contract-submit-1")
    assert by_id.id == submitted.id and by_client_id is not None and by_client_id.id == submitted.id
    assert by_id.status is OrderStatus.NEW  # acknowledged once read back
    assert await harness.broker.get_order_by_client_id("never-submitted") is None


async def test_market_order_fills_in_decimal_at_the_simulated_ask(harness: Harness) -> None:
    order = await harness.broker.submit_order(market("contract-fill-1", "10"))
    await harness.advance(timedelta(seconds=5))
    filled = await harness.broker.get_order(order.id)

    assert filled.status is OrderStatus.FILLED
    assert filled.filled_qty == Decimal(10)
    # Two tranches (2 s and 4 s after submission), both at the ask of that minute.
    ask = harness.market.quote("AAPL", START).ask_price
    assert filled.filled_avg_price == ask and isinstance(filled.filled_avg_price, Decimal)
    assert filled.filled_at == START + timedelta(seconds=4)
    assert_utc(filled.filled_at, filled.updated_at)

    positions = await harness.broker.list_positions()
    assert [(p.symbol, p.qty, p.avg_entry_price) for p in positions] == [("AAPL", Decimal(10), ask)]
    account = await harness.broker.get_account()
    assert account.cash == Decimal(100000) - 10 * ask
    assert isinstance(account.equity, Decimal)


async def test_partial_fill_then_fill(harness: Harness) -> None:
    order = await harness.broker.submit_order(market("contract-partial-1", "7"))
    await harness.advance(timedelta(seconds=2))
    partial = await harness.broker.get_order(order.id)
    assert partial.status is OrderStatus.PARTIALLY_FILLED
    assert partial.filled_qty == Decimal(3)  # 7 * 1/2 rounded down to whole shares
    await harness.advance(timedelta(seconds=2))
    done = await harness.broker.get_order(order.id)
    assert done.status is OrderStatus.FILLED and done.filled_qty == Decimal(7)


async def test_sell_reduces_the_position_and_returns_cash(harness: Harness) -> None:
    await harness.broker.submit_order(market("contract-buy-2", "10"))
    await harness.advance(timedelta(seconds=5))
    sell = await harness.broker.submit_order(market("contract-sell-2", "4", side=OrderSide.SELL))
    await harness.advance(timedelta(seconds=5))
    assert (await harness.broker.get_order(sell.id)).status is OrderStatus.FILLED
    (position,) = await harness.broker.list_positions()
    assert position.qty == Decimal(6)
    bid = harness.market.quote("AAPL", START + timedelta(seconds=5)).bid_price
    ask = harness.market.quote("AAPL", START).ask_price
    assert (await harness.broker.get_account()).cash == Decimal(100000) - 10 * ask + 4 * bid


async def test_limit_order_rests_until_canceled(harness: Harness) -> None:
    far_below = (harness.market.quote("MSFT", START).bid_price / 2).quantize(Decimal("0.01"))
    order = await harness.broker.submit_order(limit("contract-limit-1", str(far_below)))
    assert order.type is OrderType.LIMIT and order.limit_price == far_below
    await harness.advance(timedelta(minutes=3))
    assert (await harness.broker.get_order(order.id)).status is OrderStatus.NEW
    # An open buy holds back buying power.
    assert (await harness.broker.get_account()).buying_power == Decimal(100000) - 5 * far_below

    await harness.broker.cancel_order(order.id)
    canceled = await harness.broker.get_order(order.id)
    assert canceled.status is OrderStatus.CANCELED and canceled.filled_qty == 0
    assert_utc(canceled.canceled_at)
    with pytest.raises(OrderNotCancelable):
        await harness.broker.cancel_order(order.id)


async def test_marketable_limit_order_fills_at_the_market(harness: Harness) -> None:
    ask = harness.market.quote("MSFT", START + timedelta(seconds=2)).ask_price
    order = await harness.broker.submit_order(limit("contract-limit-2", str(ask + 1), qty="4"))
    await harness.advance(timedelta(seconds=5))
    filled = await harness.broker.get_order(order.id)
    assert filled.status is OrderStatus.FILLED and filled.filled_avg_price == ask


async def test_day_order_expires_at_the_close(harness: Harness) -> None:
    order = await harness.broker.submit_order(limit("contract-expire-1", "1.00"))
    await harness.advance(timedelta(hours=7))  # 17:00 New York: after the 16:00 close
    expired = await harness.broker.get_order(order.id)
    assert expired.status is OrderStatus.EXPIRED
    assert expired.expired_at == datetime(2026, 11, 24, 21, 0, tzinfo=UTC)


async def test_unknown_order_is_not_found_not_canceled(harness: Harness) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(NotFound) as info:
        await harness.broker.get_order(missing)
    assert info.value.status == 404
    with pytest.raises(NotFound):
        await harness.broker.cancel_order(missing)


async def test_duplicate_client_order_id_is_refused_with_the_existing_order(harness: Harness) -> None:
    first = await harness.broker.submit_order(market("contract-dup-1", "2"))
    with pytest.raises(DuplicateClientOrderId) as info:
        await harness.broker.submit_order(market("contract-dup-1", "2"))
    assert info.value.status == 422
    assert info.value.existing is not None and info.value.existing.id == first.id
    assert len(await harness.broker.list_orders("all")) == 1


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (market("contract-reject-bp", "100000"), 403),  # insufficient buying power
        (market("contract-reject-sym", "1", symbol="NOPE"), 422),  # unknown symbol
        (market("contract-reject-sell", "1", side=OrderSide.SELL), 403),  # nothing to sell
    ],
)
async def test_definite_refusals_are_rejections(harness: Harness, request_: OrderRequest, status: int) -> None:
    with pytest.raises(OrderRejected) as info:
        await harness.broker.submit_order(request_)
    assert info.value.status == status and info.value.code is not None
    assert await harness.broker.get_order_by_client_id(request_.client_order_id) is None


async def test_list_orders_filters_by_status_and_time(harness: Harness) -> None:
    far = "1.00"
    opened: list[Order] = []
    for i in range(4):
        opened.append(await harness.broker.submit_order(limit(f"contract-list-open-{i}", far, qty="1")))
        await harness.advance(timedelta(seconds=1))
    filled = await harness.broker.submit_order(market("contract-list-filled", "1"))
    await harness.advance(timedelta(seconds=5))

    open_orders = await harness.broker.list_orders("open")
    assert [o.id for o in open_orders] == [o.id for o in reversed(opened)]  # newest first
    assert [o.id for o in await harness.broker.list_orders("closed")] == [filled.id]
    assert len(await harness.broker.list_orders("all")) == 5
    middle = await harness.broker.list_orders(
        "open", after=opened[0].submitted_at, until=opened[3].submitted_at
    )  # both bounds exclusive
    assert [o.id for o in middle] == [opened[2].id, opened[1].id]


async def test_clock_and_calendar_are_tz_aware(harness: Harness) -> None:
    clock = await harness.broker.get_clock()
    assert clock.is_open and clock.timestamp == START
    assert clock.next_close == datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
    assert clock.next_open == datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
    assert_utc(clock.timestamp, clock.next_open, clock.next_close)

    days = await harness.broker.get_calendar(date(2026, 11, 24), date(2026, 11, 30))
    assert [d.date for d in days] == [date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 27), date(2026, 11, 30)]
    black_friday = days[2]
    assert black_friday.close == datetime(2026, 11, 27, 18, 0, tzinfo=UTC)  # early close 13:00 New York
    summer = await harness.broker.get_calendar(date(2026, 7, 1), date(2026, 7, 1))
    assert summer[0].open == datetime(2026, 7, 1, 13, 30, tzinfo=UTC)  # daylight saving time
    assert_utc(*(d.open for d in days), *(d.close for d in days))


async def test_latest_quotes_batched(harness: Harness) -> None:
    symbols = ["AAPL", "MSFT", "SPY", "UNKNOWNX"]
    quotes = await harness.broker.latest_quotes(symbols)
    assert set(quotes) == {"AAPL", "MSFT", "SPY"}
    for symbol, quote in quotes.items():
        assert quote == harness.market.quote(symbol, START)
        assert quote.bid_price < quote.ask_price and isinstance(quote.bid_price, Decimal)
        assert_utc(quote.timestamp)
    if harness.fake is not None:
        assert harness.fake.calls["GET /v2/stocks/quotes/latest"] == 1  # one request for all symbols


async def test_bars(harness: Harness) -> None:
    await harness.advance(timedelta(minutes=10))
    bars = await harness.broker.get_bars(["AAPL", "SPY"], START, START + timedelta(minutes=5), "1Min")
    assert set(bars) == {"AAPL", "SPY"}
    assert [b.timestamp for b in bars["AAPL"]] == [START + timedelta(minutes=i) for i in range(5)]
    for bar in bars["AAPL"]:
        assert bar == harness.market.bar("AAPL", bar.timestamp)
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
    latest = await harness.broker.latest_bars(["AAPL"])
    assert latest["AAPL"].timestamp == START + timedelta(minutes=9)
    daily = await harness.broker.get_bars(["AAPL"], START - timedelta(days=7), START, "1Day")
    # 11-17 is stamped before START - 7 days; 11-24 has not closed yet.
    assert [b.timestamp.day for b in daily["AAPL"]] == [18, 19, 20, 23]
    assert all(isinstance(b.close, Decimal) for b in daily["AAPL"])


async def test_trade_updates_stream_reports_cumulative_fills(harness: Harness) -> None:
    received: list[TradeUpdate] = []
    stream = harness.broker.trade_updates()

    async def consume() -> None:
        async for update in stream:
            received.append(update)
            if update.event is TradeUpdateEvent.FILL:
                return

    consumer = asyncio.create_task(consume())
    if harness.fake is not None:
        # alpaca-py does not wait for the listen acknowledgement: wait until the server has us.
        fake = harness.fake
        await until(lambda: fake.listeners(), 4, "the fake Alpaca to have our trade-updates listener", interval=0.02)
        assert fake.listeners() == 1
    await asyncio.sleep(0)
    order = await harness.broker.submit_order(market("contract-stream-1", "9"))
    await harness.advance(timedelta(seconds=5))
    await asyncio.wait_for(consumer, 10)
    await stream.aclose()  # type: ignore[attr-defined]

    assert [u.event for u in received] == [TradeUpdateEvent.NEW, TradeUpdateEvent.PARTIAL_FILL, TradeUpdateEvent.FILL]
    assert all(u.order.id == order.id for u in received)
    assert [u.order.filled_qty for u in received] == [Decimal(0), Decimal(4), Decimal(9)]
    assert [u.qty for u in received[1:]] == [Decimal(4), Decimal(5)]
    assert received[-1].position_qty == Decimal(9)
    assert_utc(*(u.timestamp for u in received))


def test_order_request_validation() -> None:
    with pytest.raises(ValueError, match="client_order_id"):
        OrderRequest(client_order_id="x" * 49, symbol="AAPL", side=OrderSide.BUY, qty=Decimal(1))
    with pytest.raises(ValueError, match="limit_price"):
        OrderRequest(client_order_id="a", symbol="AAPL", side=OrderSide.BUY, qty=Decimal(1), type=OrderType.LIMIT)
    with pytest.raises(ValueError, match="positive"):
        OrderRequest(client_order_id="a", symbol="AAPL", side=OrderSide.BUY, qty=Decimal(0))
    request = OrderRequest(
        client_order_id="a", symbol="AAPL", side=OrderSide.BUY, qty=Decimal(1), time_in_force=TimeInForce.GTC
    )
    assert request.type is OrderType.MARKET
