"""Domain events of price alerts, and NotificationRaised: the notifications of every service (fills,
cancels, rejections, alerts, tripped breakers) share this one neutral event type."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import msgspec

from services.core.events import domain_event
from services.orders.types import require_aware

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class _Timed(msgspec.Struct, frozen=True, kw_only=True):
    at: AwareDatetime

    def __post_init__(self) -> None:
        require_aware(self.at, f"{type(self).__name__}.at")


@domain_event
class AlertCreated(_Timed, frozen=True, kw_only=True):
    alert_id: str
    symbol: str
    condition: str  # above | below | percent_change
    threshold: Decimal
    reference_price: Decimal | None
    portfolio_id: str | None


@domain_event
class AlertRemoved(_Timed, frozen=True, kw_only=True):
    alert_id: str


@domain_event
class AlertTriggered(_Timed, frozen=True, kw_only=True):
    """The alert's condition held at a check: it is inactive from now on."""

    alert_id: str
    symbol: str
    price: Decimal


@domain_event
class NotificationRaised(_Timed, frozen=True, kw_only=True):
    kind: str  # fill | partial_fill | canceled | expired | rejected | risk_rejected | alert | breaker | halt
    portfolio_id: str | None  # None: for everyone
    title: str
    body: str
    ref: str  # what it is about: a client order id, an alert id, a job type...
