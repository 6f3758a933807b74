"""Every domain event of these packages is registered, round-trips through the store's JSON encoding
with Decimal and tz-aware times intact, and refuses naive times."""

from datetime import date, datetime

import msgspec
import pytest

from eventstore.codec import EventDecodeError, encode
from services.core.events import registry
from services.model.events import alerts as alert_events
from services.model.events import orders as order_events
from services.model.events import positions as position_events
from services.model.events import strategy as strategy_events
from services.model.events.strategy import OrderRequested
from services.model.vocabulary import OrderType, Side
from tests.builders import T0, D

EXPECTED = {
    "PortfolioOpened", "PortfolioRiskLimitsChanged", "PortfolioHalted", "PortfolioResumed", "StrategyAttached",
    "StrategyReconfigured", "StrategyEnabled", "StrategyDisabled", "TradingHalted", "TradingResumed",
    "SignalGenerated", "OrderRequested", "OrderRejectedByRisk", "OrderSubmitted", "OrderSubmitUnknown",
    "OrderRejected", "OrderPartiallyFilled", "OrderFilled", "OrderCanceled", "OrderExpired", "FillApplied",
    "PositionDiscrepancyDetected", "PositionReconciled", "PositionDiscrepancyResolved", "SymbolQuarantined",
    "SymbolQuarantineLifted", "QuotesObserved", "PortfolioSnapshotTaken", "AlertCreated", "AlertRemoved",
    "AlertTriggered", "NotificationRaised",
}  # fmt: skip


def test_all_event_types_are_registered() -> None:
    assert {strategy_events, order_events, position_events, alert_events}  # imported: registered
    assert EXPECTED <= set(registry.names())


def requested() -> OrderRequested:
    return OrderRequested(
        portfolio_id="growth",
        client_order_id="ob-" + "a" * 40,
        symbol="AAPL",
        side=Side.BUY,
        qty=D("10"),
        order_type=OrderType.LIMIT,
        limit_price=D("100.25"),
        tick_id="t",
        strategy="s",
        reason="r",
        at=T0,
    )


def test_round_trip_keeps_decimals_and_times() -> None:
    event = requested()
    decoded = registry.decode_data("OrderRequested", encode(event))
    assert decoded == event
    assert isinstance(decoded.qty, type(D(1))) and decoded.at.tzinfo is not None

    snapshot = position_events.PortfolioSnapshotTaken(
        portfolio_id="p",
        trading_day=date(2025, 3, 3),
        total_value=D("1.10"),
        cash_balance=D(1),
        positions_value=D("0.10"),
        realized_pnl=D(0),
        unrealized_pnl=D("-0.05"),
        at=T0,
    )
    assert registry.decode_data("PortfolioSnapshotTaken", encode(snapshot)) == snapshot


def test_naive_times_are_refused_on_construction_and_on_decode() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        msgspec.structs.replace(requested(), at=datetime(2025, 3, 3, 9, 30))
    naive = encode(requested()).replace(b"+00:00", b"").replace(b"Z", b"")
    with pytest.raises(EventDecodeError, match="timezone"):
        registry.decode_data("OrderRequested", naive)


def test_order_requested_checks_its_quantity_and_limit() -> None:
    with pytest.raises(ValueError, match="qty must be positive"):
        msgspec.structs.replace(requested(), qty=D(0))
    with pytest.raises(ValueError, match="limit_price"):
        msgspec.structs.replace(requested(), limit_price=None)
