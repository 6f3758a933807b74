"""Domain events of price alerts, and NotificationRaised: the notifications of every service (fills,
cancels, rejections, alerts, tripped breakers) share this one neutral event type."""

from __future__ import annotations

from decimal import Decimal

from services.model.registry import domain_event
from services.model.vocabulary import TimedEvent


@domain_event
class AlertCreated(TimedEvent, frozen=True, kw_only=True):
    alert_id: str
    symbol: str
    condition: str  # above | below | percent_change
    threshold: Decimal
    reference_price: Decimal | None
    portfolio_id: str | None


@domain_event
class AlertRemoved(TimedEvent, frozen=True, kw_only=True):
    alert_id: str


@domain_event
class AlertTriggered(TimedEvent, frozen=True, kw_only=True):
    """The alert's condition held at a check: it is inactive from now on."""

    alert_id: str
    symbol: str
    price: Decimal


@domain_event
class NotificationRaised(TimedEvent, frozen=True, kw_only=True):
    kind: str  # fill | partial_fill | canceled | expired | rejected | risk_rejected | alert | breaker | halt
    portfolio_id: str | None  # None: for everyone
    title: str
    body: str
    ref: str  # what it is about: a client order id, an alert id, a job type...
