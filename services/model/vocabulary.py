"""The small vocabulary shared by strategies, orders and positions: order sides and types, and the
boundary check that keeps naive datetimes out of every decision.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum


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
