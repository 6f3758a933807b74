"""Broker results, independent of alpaca-py: Decimal for every quantity and price, tz-aware UTC times.

msgspec Structs (frozen) so they are cheap, hashable, and encode straight into events.
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from decimal import Decimal

import msgspec


class OrderSide(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(enum.StrEnum):
    """openbell submits market and limit orders; the others can exist on an Alpaca account."""

    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"
    TRAILING_STOP = "trailing_stop"


class TimeInForce(enum.StrEnum):
    DAY = "day"
    GTC = "gtc"
    OPG = "opg"
    CLS = "cls"
    IOC = "ioc"
    FOK = "fok"


class OrderStatus(enum.StrEnum):
    """Alpaca's order statuses (the simulator uses the subset it can reach)."""

    NEW = "new"
    ACCEPTED = "accepted"
    PENDING_NEW = "pending_new"
    ACCEPTED_FOR_BIDDING = "accepted_for_bidding"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    DONE_FOR_DAY = "done_for_day"
    CANCELED = "canceled"
    PENDING_CANCEL = "pending_cancel"
    EXPIRED = "expired"
    REPLACED = "replaced"
    PENDING_REPLACE = "pending_replace"
    STOPPED = "stopped"
    REJECTED = "rejected"
    SUSPENDED = "suspended"
    CALCULATED = "calculated"
    HELD = "held"

    @property
    def is_open(self) -> bool:
        return self not in TERMINAL_STATUSES


TERMINAL_STATUSES: frozenset[OrderStatus] = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REPLACED, OrderStatus.REJECTED}
)


class OrderRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What we ask the broker to do. ``client_order_id`` is ours and deterministic (at most 48 chars)."""

    client_order_id: str
    symbol: str
    side: OrderSide
    qty: Decimal
    type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.DAY

    def __post_init__(self) -> None:
        if not self.client_order_id or len(self.client_order_id) > 48:
            raise ValueError("client_order_id must be 1..48 characters")
        if self.qty <= 0:
            raise ValueError("qty must be positive")
        if self.type not in (OrderType.MARKET, OrderType.LIMIT):
            raise ValueError("openbell submits market and limit orders only")
        if self.type is OrderType.LIMIT and (self.limit_price is None or self.limit_price <= 0):
            raise ValueError("a limit order needs a positive limit_price")
        if self.type is OrderType.MARKET and self.limit_price is not None:
            raise ValueError("a market order has no limit_price")


class Order(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    client_order_id: str
    symbol: str
    side: OrderSide
    type: OrderType
    qty: Decimal
    limit_price: Decimal | None
    time_in_force: TimeInForce
    status: OrderStatus
    filled_qty: Decimal
    filled_avg_price: Decimal | None
    submitted_at: datetime
    updated_at: datetime
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    failed_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.status.is_open


class Position(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    qty: Decimal  # negative for a short position
    avg_entry_price: Decimal
    cost_basis: Decimal
    market_value: Decimal | None
    current_price: Decimal | None
    unrealized_pl: Decimal | None


class Account(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    status: str
    currency: str
    cash: Decimal
    buying_power: Decimal
    equity: Decimal
    portfolio_value: Decimal
    trading_blocked: bool


class Clock(msgspec.Struct, frozen=True, kw_only=True):
    timestamp: datetime
    is_open: bool
    next_open: datetime
    next_close: datetime


class CalendarDay(msgspec.Struct, frozen=True, kw_only=True):
    """One trading day; ``open``/``close`` are tz-aware UTC (Alpaca gives naive New York HH:MM)."""

    date: date
    open: datetime
    close: datetime


class Quote(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    bid_price: Decimal
    ask_price: Decimal
    bid_size: Decimal
    ask_size: Decimal
    timestamp: datetime

    @property
    def mid(self) -> Decimal:
        return (self.bid_price + self.ask_price) / 2


class Bar(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    timestamp: datetime  # start of the bar
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trade_count: int | None = None
    vwap: Decimal | None = None


class TradeUpdateEvent(enum.StrEnum):
    NEW = "new"
    FILL = "fill"
    PARTIAL_FILL = "partial_fill"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REJECTED = "rejected"
    DONE_FOR_DAY = "done_for_day"
    PENDING_NEW = "pending_new"
    REPLACED = "replaced"
    OTHER = "other"


class TradeUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """One event of the fill stream. ``order.filled_qty`` is cumulative: apply fills by it, not by ``qty``."""

    event: TradeUpdateEvent
    order: Order
    timestamp: datetime
    qty: Decimal | None = None
    price: Decimal | None = None
    position_qty: Decimal | None = None


def utc(moment: datetime) -> datetime:
    """Normalise a tz-aware datetime to UTC; refuse naive ones (their zone is a guess)."""
    if moment.tzinfo is None or moment.tzinfo.utcoffset(moment) is None:
        raise ValueError(f"naive datetime {moment.isoformat()} (need tz-aware)")
    return moment.astimezone(UTC)


def to_decimal(value: object) -> Decimal:
    """Decimal from a JSON number or string; floats go through str() so 161.1 stays 161.1."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        # JSON numbers arrive as floats: an integral one is a whole count (3, not 3.0).
        return Decimal(int(value)) if value.is_integer() else Decimal(repr(value))
    return Decimal(str(value))
