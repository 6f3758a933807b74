"""Builders of plain values shared by the pure tests of every service (no servers): a fixed time, decimals,
bars from closing prices, an order's state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.model.market import Bar
from services.model.vocabulary import OrderType, Side
from services.orders.lifecycle import OrderState, OrderStatus

T0 = datetime(2025, 3, 3, 14, 30, tzinfo=UTC)


def D(value: str | int) -> Decimal:
    return Decimal(str(value))


def bars_from_closes(closes: list[Decimal] | list[str] | list[int], start: datetime = T0) -> tuple[Bar, ...]:
    return tuple(
        Bar(
            timestamp=start + timedelta(minutes=15 * i),
            open=D(c),
            high=D(c),
            low=D(c),
            close=D(c),
            volume=D(1000),
        )
        for i, c in enumerate(closes)
    )


def order_state(
    qty: str = "10", status: OrderStatus = OrderStatus.SUBMITTED, side: Side = Side.BUY, **changes: object
) -> OrderState:
    fields: dict[str, object] = {
        "portfolio_id": "growth",
        "client_order_id": "ob-" + "a" * 40,
        "symbol": "AAPL",
        "side": side,
        "qty": D(qty),
        "order_type": OrderType.MARKET,
        "limit_price": None,
        "status": status,
        "requested_at": T0,
        "broker_order_id": None if status in (OrderStatus.REQUESTED, OrderStatus.UNKNOWN) else "broker-1",
    }
    fields.update(changes)
    return OrderState(**fields)  # type: ignore[arg-type]
