"""What one service reads from another's read model: the values it gets and the signatures of the owners'
query functions.

A read model's owner implements these in its ``queries.py`` (the only module that writes SQL against its
tables); the composition root (:mod:`services.stack`) hands them to the readers as ``ServiceContext.reads``.
So the strategy service sees the orders' and the positions' read models, and the positions and alerts
services each other's, without importing one another.
Connections are typed ``Any`` here: the model never loads a database driver.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import msgspec

from services.model.vocabulary import Side


class CommittedOrder(msgspec.Struct, frozen=True, kw_only=True):
    """What orders still commit beyond the books, in one portfolio, symbol and side: the unfilled rest of
    open orders, or filled quantity not booked yet."""

    portfolio_id: str
    symbol: str
    side: Side
    qty: Decimal
    notional: Decimal | None  # at limit or fill prices; None (market orders): valued at the current price


@dataclass(frozen=True)
class ReadModels:
    """The owners' query functions other services may call (each takes a database connection)."""

    # orders: open orders' rests and unbooked fills, and order requests its read model has not reached yet
    committed_orders: Callable[[Any], Awaitable[list[CommittedOrder]]]
    # positions: the symbols position_sync quarantined
    quarantined_symbols: Callable[[Any], Awaitable[frozenset[str]]]
    # positions: each portfolio's total value at its last snapshot before this trading day
    day_start_equity: Callable[[Any, date], Awaitable[dict[str, Decimal]]]
    # orders: the symbols of orders still open (position_sync does not judge a position an order may move)
    open_order_symbols: Callable[[Any], Awaitable[frozenset[str]]]
    # alerts: the symbols of active alerts (price_update quotes them too)
    active_alert_symbols: Callable[[Any], Awaitable[frozenset[str]]]
    # positions: the latest observed price of a symbol, if any (a percent_change alert's reference)
    latest_price: Callable[[Any, str], Awaitable[Decimal | None]]
