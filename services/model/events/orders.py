"""Domain events of an order's life at the broker (the request itself is ``OrderRequested``, decided by
the strategy in ``services.model.events.strategy``).

Every event names its order by ``client_order_id`` and repeats the portfolio, symbol and side, so a
consumer (positions, notifications, the trades read model) never needs a join to act on it.
Money and quantities are Decimal; times are tz-aware (naive ones are refused on decode by
``msgspec.Meta(tz=True)`` and on construction by ``__post_init__``).
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from services.model.registry import domain_event
from services.model.vocabulary import AwareDatetime, Side, require_aware


class _OrderEvent(msgspec.Struct, frozen=True, kw_only=True):
    portfolio_id: str
    client_order_id: str
    symbol: str
    side: Side


@domain_event
class OrderSubmitted(_OrderEvent, frozen=True, kw_only=True):
    """The broker accepted the order and gave it an id."""

    broker_order_id: str
    submitted_at: AwareDatetime

    def __post_init__(self) -> None:
        require_aware(self.submitted_at, "submitted_at")


@domain_event
class OrderSubmitUnknown(_OrderEvent, frozen=True, kw_only=True):
    """The submit had no definite answer (timeout, dropped connection, 5xx, duplicate client id).

    Never resubmitted with a new id: the order is resolved later by looking up its client order id.
    """

    reason: str
    at: AwareDatetime

    def __post_init__(self) -> None:
        require_aware(self.at, "at")


@domain_event
class OrderRejected(_OrderEvent, frozen=True, kw_only=True):
    """The order will never trade. ``definite`` is True when the broker said so, False when we concluded
    it (an order still unknown to the broker after the grace period was never received)."""

    reason: str
    definite: bool
    at: AwareDatetime

    def __post_init__(self) -> None:
        require_aware(self.at, "at")


class _FillEvent(_OrderEvent, frozen=True, kw_only=True):
    """One increase of the order's cumulative filled quantity.

    ``fill_notional`` is the exact money amount of this increment (the change of cumulative
    qty x average price), so the sum of the fills' notionals is exactly the final
    ``cumulative_qty * avg_price`` however the snapshots were split; ``fill_price`` is that amount per
    share, for display and for position accounting.
    """

    fill_qty: Decimal
    fill_price: Decimal
    fill_notional: Decimal
    cumulative_qty: Decimal
    avg_price: Decimal
    filled_at: AwareDatetime

    def __post_init__(self) -> None:
        require_aware(self.filled_at, "filled_at")
        if self.fill_qty < 0 or self.cumulative_qty <= 0:
            raise ValueError("fill quantities must be positive")


@domain_event
class OrderPartiallyFilled(_FillEvent, frozen=True, kw_only=True):
    pass


@domain_event
class OrderFilled(_FillEvent, frozen=True, kw_only=True):
    """The order is completely filled (terminal). ``fill_qty`` is the last increment (possibly 0 when the
    broker only confirms the completion of quantities already counted)."""


@domain_event
class OrderCanceled(_OrderEvent, frozen=True, kw_only=True):
    filled_qty: Decimal  # cumulative quantity filled before the cancel (kept by the portfolio)
    at: AwareDatetime

    def __post_init__(self) -> None:
        require_aware(self.at, "at")


@domain_event
class OrderExpired(_OrderEvent, frozen=True, kw_only=True):
    filled_qty: Decimal
    at: AwareDatetime

    def __post_init__(self) -> None:
        require_aware(self.at, "at")


FillEvent = OrderPartiallyFilled | OrderFilled
OrderEvent = (
    OrderSubmitted
    | OrderSubmitUnknown
    | OrderRejected
    | OrderPartiallyFilled
    | OrderFilled
    | OrderCanceled
    | OrderExpired
)
