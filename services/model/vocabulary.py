"""The small vocabulary shared by every service: order sides, types and open statuses, and the boundary
check that keeps naive datetimes out of every decision and event.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

import msgspec


class Side(StrEnum):
    # The values are Alpaca's spelling, so they pass through to the broker unchanged.
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        """+1 for a buy (the position grows), -1 for a sell."""
        return 1 if self is Side.BUY else -1


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"


def require_aware(value: datetime, what: str) -> datetime:
    """Return ``value`` if it carries a timezone; a naive datetime is ambiguous, so refuse it loudly."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got naive {value.isoformat()}")
    return value


# A datetime that must carry a timezone: msgspec refuses a naive one when an event is decoded.
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class TimedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """The base of the events that happened at one instant ``at`` (refused naive on construction too)."""

    at: AwareDatetime

    def __post_init__(self) -> None:
        require_aware(self.at, f"{type(self).__name__}.at")


# The statuses of an order (as the trades read model spells them) that may still trade.
OPEN_ORDER_STATUSES = ("requested", "submitted", "unknown", "partially_filled")
