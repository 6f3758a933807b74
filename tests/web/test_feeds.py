"""Feeds derived from events (pure): each becomes the body its contract Struct describes, under the
subject key the AsyncAPI document names; events with no feed give none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import msgspec
import pytest

from services.core import feeds
from services.core.event_feeds import feed_of
from services.model.events.orders import OrderCanceled, OrderFilled
from services.model.events.positions import PositionDiscrepancyDetected
from services.model.events.strategy import OrderRejectedByRisk, PortfolioHalted, PortfolioOpened, TradingResumed
from services.model.vocabulary import Side

AT = datetime(2026, 3, 2, 10, 30, tzinfo=timezone(timedelta(hours=-5)))  # New York: the feed says UTC


def roundtrip(feed: feeds.Feed) -> dict:
    body = msgspec.json.decode(feeds.encode(feed))
    assert feeds.decode(feeds.encode(feed)) == feed
    return body


def test_halts_risk_discrepancies_and_order_events_have_their_feed() -> None:
    key, halt = feed_of(PortfolioHalted(portfolio_id="p1", reason="daily loss", rule="daily_loss_limit", at=AT))
    assert key == "p1" and roundtrip(halt) == {
        "kind": "halt", "version": 1, "at": "2026-03-02T15:30:00.000000Z", "scope": "p1", "halted": True,
        "reason": "daily loss", "rule": "daily_loss_limit",
    }
    key, resumed = feed_of(TradingResumed(reason="", at=AT))
    assert key == "all" and isinstance(resumed, feeds.HaltFeed) and not resumed.halted

    key, risk = feed_of(OrderRejectedByRisk(
        portfolio_id="p1", client_order_id="c1", tick_id="t", strategy="s", symbol="AAPL", side=Side.BUY,
        qty=Decimal("10.000"), rule="max_order_notional", detail="too big", at=AT,
    ))
    assert key == "p1" and roundtrip(risk)["qty"] == "10" and roundtrip(risk)["rule"] == "max_order_notional"

    key, discrepancy = feed_of(PositionDiscrepancyDetected(
        tick_id="t", symbol="BRK.B", kind="quantity", ours_qty=Decimal("5"), ours_avg_cost=None,
        broker_qty=Decimal("4.50"), broker_avg_price=None, owners=("p1",), policy="fix", at=AT,
    ))
    assert key == "BRK_B"
    assert roundtrip(discrepancy) == {
        "kind": "discrepancy", "version": 1, "at": "2026-03-02T15:30:00.000000Z", "tick_id": "t",
        "symbol": "BRK.B", "discrepancy": "quantity", "ours_qty": "5", "broker_qty": "4.5", "policy": "fix",
    }

    key, filled = feed_of(OrderFilled(
        portfolio_id="p1", client_order_id="c1", symbol="AAPL", side=Side.SELL, fill_qty=Decimal("2"),
        fill_price=Decimal("187.2"), fill_notional=Decimal("374.4"), cumulative_qty=Decimal("10"),
        avg_price=Decimal("187.2"), filled_at=AT,
    ))
    body = roundtrip(filled)
    assert key == "p1" and body["event"] == "OrderFilled" and body["fill_price"] == "187.20"
    assert body["filled_qty"] == "10" and body["side"] == "sell"
    _, canceled = feed_of(OrderCanceled(
        portfolio_id="p1", client_order_id="c1", symbol="AAPL", side=Side.BUY, filled_qty=Decimal(0), at=AT
    ))
    assert roundtrip(canceled)["filled_qty"] == "0"

    opened = PortfolioOpened(portfolio_id="p1", starting_cash=Decimal(1), trading_mode="paper", risk_limits={}, at=AT)
    assert feed_of(opened) is None


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        feeds.utc(datetime(2026, 3, 2, 10, 30))
    assert feeds.utc(datetime(2026, 3, 2, 15, 30, tzinfo=UTC)) == "2026-03-02T15:30:00.000000Z"


def test_a_symbol_is_one_subject_token() -> None:
    assert feeds.feed_key("BRK.B") == "BRK_B" and feeds.feed_key("AAPL") == "AAPL"
