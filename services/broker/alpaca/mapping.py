"""Conversions between alpaca-py's models and openbell's broker models (pure): an Alpaca order, position,
account, calendar day, quote, bar or trade update as services.broker.models, and an openbell order request
or timeframe as alpaca-py's.

Kept apart from the adapter so that what Alpaca's answers mean is read in one place, without the calls.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
from alpaca.trading.enums import OrderSide as AlpacaOrderSide
from alpaca.trading.enums import TimeInForce as AlpacaTimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

from services.broker.models import (
    Account,
    Bar,
    CalendarDay,
    Clock,
    Order,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
    Quote,
    TimeInForce,
    TradeUpdate,
    TradeUpdateEvent,
    to_decimal,
)
from services.clock.calendar import NEW_YORK


def _enum_value(value: Any) -> str:
    return str(getattr(value, "value", value))


def _dt(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _dec(value: Any) -> Any:
    return None if value is None or value == "" else to_decimal(value)


def order_from_alpaca(raw: Any) -> Order:
    submitted = _dt(raw.submitted_at) or _dt(raw.created_at)
    assert submitted is not None
    return Order(
        id=str(raw.id),
        client_order_id=raw.client_order_id,
        symbol=raw.symbol or "",
        side=OrderSide(_enum_value(raw.side)),
        type=OrderType(_enum_value(raw.type or raw.order_type)),
        qty=_dec(raw.qty) if raw.qty is not None else to_decimal(0),
        limit_price=_dec(raw.limit_price),
        time_in_force=TimeInForce(_enum_value(raw.time_in_force)),
        status=OrderStatus(_enum_value(raw.status)),
        filled_qty=_dec(raw.filled_qty) or to_decimal(0),
        filled_avg_price=_dec(raw.filled_avg_price),
        submitted_at=submitted,
        updated_at=_dt(raw.updated_at) or submitted,
        filled_at=_dt(raw.filled_at),
        canceled_at=_dt(raw.canceled_at),
        expired_at=_dt(raw.expired_at),
        failed_at=_dt(raw.failed_at),
    )


def position_from_alpaca(raw: Any) -> Position:
    return Position(
        symbol=raw.symbol,
        qty=to_decimal(raw.qty),
        avg_entry_price=to_decimal(raw.avg_entry_price),
        cost_basis=to_decimal(raw.cost_basis),
        market_value=_dec(raw.market_value),
        current_price=_dec(raw.current_price),
        unrealized_pl=_dec(raw.unrealized_pl),
    )


def account_from_alpaca(raw: Any) -> Account:
    return Account(
        id=str(raw.id),
        status=_enum_value(raw.status),
        currency=raw.currency or "USD",
        cash=to_decimal(raw.cash),
        buying_power=to_decimal(raw.buying_power),
        equity=to_decimal(raw.equity),
        portfolio_value=to_decimal(raw.portfolio_value),
        trading_blocked=bool(raw.trading_blocked),
    )


def calendar_day_from_alpaca(raw: Any) -> CalendarDay:
    # alpaca-py parses "09:30" into a naive datetime: that is New York wall time.
    return CalendarDay(
        date=raw.date,
        open=raw.open.replace(tzinfo=NEW_YORK).astimezone(UTC),
        close=raw.close.replace(tzinfo=NEW_YORK).astimezone(UTC),
    )


def quote_from_alpaca(symbol: str, raw: Any) -> Quote:
    return Quote(
        symbol=symbol,
        bid_price=to_decimal(raw.bid_price),
        ask_price=to_decimal(raw.ask_price),
        bid_size=to_decimal(raw.bid_size),
        ask_size=to_decimal(raw.ask_size),
        timestamp=_dt(raw.timestamp) or datetime.now(UTC),
    )


def bar_from_alpaca(symbol: str, raw: Any) -> Bar:
    return Bar(
        symbol=symbol,
        timestamp=_dt(raw.timestamp) or datetime.now(UTC),
        open=to_decimal(raw.open),
        high=to_decimal(raw.high),
        low=to_decimal(raw.low),
        close=to_decimal(raw.close),
        volume=to_decimal(raw.volume),
        trade_count=int(raw.trade_count) if raw.trade_count is not None else None,
        vwap=_dec(raw.vwap),
    )


def trade_update_from_alpaca(raw: Any) -> TradeUpdate:
    event = _enum_value(raw.event)
    return TradeUpdate(
        event=TradeUpdateEvent(event) if event in TradeUpdateEvent._value2member_map_ else TradeUpdateEvent.OTHER,
        order=order_from_alpaca(raw.order),
        timestamp=_dt(raw.timestamp) or datetime.now(UTC),
        qty=_dec(raw.qty),
        price=_dec(raw.price),
        position_qty=_dec(raw.position_qty),
    )


TIMEFRAMES: dict[str, TimeFrame] = {
    "1Min": TimeFrame(1, TimeFrameUnit.Minute),
    "5Min": TimeFrame(5, TimeFrameUnit.Minute),
    "15Min": TimeFrame(15, TimeFrameUnit.Minute),
    "1Hour": TimeFrame(1, TimeFrameUnit.Hour),
    "1Day": TimeFrame(1, TimeFrameUnit.Day),
}


def clock_from_alpaca(raw: Any) -> Clock:
    return Clock(
        timestamp=_dt(raw.timestamp),  # type: ignore[arg-type]
        is_open=raw.is_open,
        next_open=_dt(raw.next_open),  # type: ignore[arg-type]
        next_close=_dt(raw.next_close),  # type: ignore[arg-type]
    )


def order_request_to_alpaca(request: OrderRequest) -> MarketOrderRequest | LimitOrderRequest:
    common: dict[str, Any] = {
        "symbol": request.symbol,
        "qty": float(request.qty),
        "side": AlpacaOrderSide(str(request.side)),
        "time_in_force": AlpacaTimeInForce(str(request.time_in_force)),
        "client_order_id": request.client_order_id,
    }
    if request.type is OrderType.LIMIT:
        return LimitOrderRequest(limit_price=float(request.limit_price or 0), **common)
    return MarketOrderRequest(**common)
