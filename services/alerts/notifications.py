"""The notifications of an order's life (executed trades, fills, cancellations and
rejections): one NotificationRaised per order event that a person wants to hear about, with an id
derived from that event's cause, so a redelivered order event notifies once."""

from __future__ import annotations

from datetime import datetime

from eventstore import NewEvent
from services.core.events import new_event
from services.model.decimals import canonical_decimal
from services.model.events.alerts import NotificationRaised
from services.model.events.orders import (
    OrderCanceled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
)
from services.model.events.strategy import OrderRejectedByRisk


def order_notification(event: OrderEvent | OrderRejectedByRisk) -> NewEvent | None:
    """The notification of an order event, or None for events nobody is told about (submitted)."""
    what = f"{event.side.value} {event.symbol}"
    match event:
        case OrderFilled():
            kind, title = "fill", f"Filled: {what} {event.cumulative_qty} @ {event.avg_price}"
            body, cause = (
                f"last fill {event.fill_qty} @ {event.fill_price:.4f}",
                canonical_decimal(event.cumulative_qty),
            )
        case OrderPartiallyFilled():
            kind, title = "partial_fill", f"Partial fill: {what} {event.fill_qty} @ {event.fill_price:.4f}"
            body, cause = f"{event.cumulative_qty} filled so far", canonical_decimal(event.cumulative_qty)
        case OrderCanceled():
            kind, title, body, cause = "canceled", f"Canceled: {what}", f"{event.filled_qty} filled before", ""
        case OrderExpired():
            kind, title, body, cause = "expired", f"Expired: {what}", f"{event.filled_qty} filled before", ""
        case OrderRejected():
            certainty = "" if event.definite else " (never reached the broker)"
            kind, title, body, cause = "rejected", f"Rejected: {what}{certainty}", event.reason, ""
        case OrderRejectedByRisk():
            kind, title = "risk_rejected", f"Refused by risk ({event.rule}): {what}"
            body, cause = event.detail, event.strategy
        case _:
            return None
    notification = NotificationRaised(
        kind=kind,
        portfolio_id=event.portfolio_id,
        title=title,
        body=body,
        ref=event.client_order_id,
        at=_time_of(event),
    )
    return new_event(notification, kind, event.client_order_id, cause)


def _time_of(event: OrderEvent | OrderRejectedByRisk) -> datetime:
    if isinstance(event, OrderFilled | OrderPartiallyFilled):
        return event.filled_at
    if isinstance(event, OrderSubmitted):
        return event.submitted_at
    return event.at
