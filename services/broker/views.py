"""The broker boundary: the broker layer's models (``services.broker.models``) as the plain, neutral types
of the shared model, so a shell does ``apply_broker_order(state, order_view(order))`` and nothing more.
Every broker reports its order statuses in Alpaca's spelling (the simulator speaks it too); they become
neutral ``BrokerStatus`` values here and nowhere else."""

from __future__ import annotations

from services.broker import models as broker
from services.model.market import Bar, BrokerOrderView, BrokerPosition, BrokerStatus, Quote

_CLOSED_STATUSES = {
    "filled": BrokerStatus.FILLED,
    "canceled": BrokerStatus.CANCELED,
    "expired": BrokerStatus.EXPIRED,
    "rejected": BrokerStatus.REJECTED,
    # We never replace orders; a replaced order is closed without further fills.
    "replaced": BrokerStatus.CANCELED,
}


def broker_status(raw_status: str) -> BrokerStatus:
    """Classify a raw broker status. Anything not known to be closed is OPEN: an unfamiliar status must
    never make us believe an order is over (done_for_day, pending_cancel, held, ... are all still open)."""
    return _CLOSED_STATUSES.get(raw_status.strip().lower(), BrokerStatus.OPEN)


def order_view(order: broker.Order, reason: str = "") -> BrokerOrderView:
    """A broker order (from polling, a lookup by client id, or a trade_updates event's order)."""
    return BrokerOrderView(
        client_order_id=order.client_order_id,
        broker_order_id=order.id,
        status=broker_status(order.status.value),
        filled_qty=order.filled_qty,
        filled_avg_price=order.filled_avg_price if order.filled_qty > 0 else None,
        # The fill time when the broker gives one, else the time of this state.
        updated_at=order.filled_at if order.filled_at is not None and order.filled_qty > 0 else order.updated_at,
        reason=reason,
    )


def position_view(position: broker.Position) -> BrokerPosition:
    return BrokerPosition(symbol=position.symbol, qty=position.qty, avg_entry_price=position.avg_entry_price)


def quote_view(quote: broker.Quote) -> Quote:
    """A broker quote; a zero bid or ask (no one on that side) is no price, not a price of 0."""
    return Quote(
        symbol=quote.symbol,
        bid=quote.bid_price if quote.bid_price > 0 else None,
        ask=quote.ask_price if quote.ask_price > 0 else None,
        last=None,
        timestamp=quote.timestamp,
    )


def bar_view(bar: broker.Bar) -> Bar:
    return Bar(timestamp=bar.timestamp, open=bar.open, high=bar.high, low=bar.low, close=bar.close, volume=bar.volume)
