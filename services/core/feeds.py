"""The feed contract: the JSON body of every ``<prefix>.feed.<kind>.<key>`` message.

Every body has ``kind`` (the feed, as in the subject), ``version`` (of this contract: a change that could
break a reader gets a new one) and ``at`` (when the fact it reports happened: a tick's or an event's time,
never the wall clock of the publisher). Values are typed, one rule each:

- times: UTC, ISO-8601 with microseconds and ``Z`` (``2026-03-02T14:30:00.000000Z``);
- money (cash, values, P&L, notionals): a string with 2 decimals (``"100065.22"``);
- prices: a string with the instrument's tick precision: 2 decimals at or above $1, 4 below (``"0.5123"``);
- quantities: a string, whole shares without decimals, fractional shares with the decimals they have
  (``"10"``, ``"0.125"``), never an exponent.

Feeds are published on core NATS; the ``<PREFIX>_FEEDS`` JetStream stream keeps them, so a reader can resume
from a stream sequence (the web service does). Those derived from stored events (halts, order lifecycle,
risk refusals, discrepancies) are published with ``Nats-Msg-Id`` = ``feed:<event id>``: a repeat is dropped.
The AsyncAPI document (docs/asyncapi.json, ``python -m services.core.asyncapi``) is generated from the
Structs below."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Any, ClassVar, Literal

import msgspec

FEED_VERSION = 1

UtcTime = Annotated[str, msgspec.Meta(description="UTC, ISO-8601 with microseconds and Z", examples=[
    "2026-03-02T14:30:00.000000Z"])]
Money = Annotated[str, msgspec.Meta(description="money, 2 decimals", pattern=r"^-?\d+\.\d{2}$", examples=["1000.00"])]
Price = Annotated[str, msgspec.Meta(
    description="price, 2 decimals at or above 1, 4 below", pattern=r"^-?\d+\.(\d{2}|\d{4})$", examples=["187.25"]
)]
Quantity = Annotated[str, msgspec.Meta(description="quantity, whole or with its decimals", pattern=r"^-?\d+(\.\d+)?$",
                                       examples=["10"])]

_CENT = Decimal("0.01")
_SUB_CENT = Decimal("0.0001")


def utc(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("a feed time must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def money(value: Decimal) -> str:
    return f"{value.quantize(_CENT, ROUND_HALF_EVEN):f}"


def price(value: Decimal) -> str:
    step = _CENT if abs(value) >= 1 else _SUB_CENT
    return f"{value.quantize(step, ROUND_HALF_EVEN):f}"


def quantity(value: Decimal) -> str:
    text = f"{value.normalize():f}"
    return "0" if text in ("-0", "0E-0") else text


def optional_price(value: Decimal | None) -> str | None:
    return None if value is None else price(value)


def feed_key(symbol: str) -> str:
    """A symbol as a NATS subject token (``BRK.B`` -> ``BRK_B``: a dot separates tokens)."""
    return symbol.replace(".", "_")


class Feed(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """Fields of every feed body; ``kind`` is the Struct's tag."""

    subject_key: ClassVar[str]  # what the subject's last token is
    summary: ClassVar[str]
    version: int = FEED_VERSION
    at: UtcTime


class PriceFeed(Feed, frozen=True, kw_only=True, tag="price"):
    subject_key = "SYMBOL (a dot becomes _: BRK.B is BRK_B)"
    summary = "a fresh quote seen by price_update"
    symbol: str
    price: Price
    bid: Price | None
    ask: Price | None
    quote_at: UtcTime
    tick_id: str


class FillFeed(Feed, frozen=True, kw_only=True, tag="fill"):
    subject_key = "portfolio_id"
    summary = "a fill booked into a portfolio, with the position and cash after it"
    portfolio_id: str
    client_order_id: str
    symbol: str
    side: Literal["buy", "sell"]
    fill_qty: Quantity
    fill_price: Price | None  # None for a zero-quantity completion (it confirms what was counted)
    fill_notional: Money
    cash_change: Money
    realized_pnl: Money
    position_qty: Quantity
    position_cost_basis: Money
    cash: Money
    booked: bool  # False: a repeat of a fill booked before (published again after a redelivery)


class AlertFeed(Feed, frozen=True, kw_only=True, tag="alert"):
    subject_key = "portfolio_id, or all for an alert of no portfolio"
    summary = "a price alert triggered"
    alert_id: str
    symbol: str
    price: Price
    condition: str
    threshold: str
    portfolio_id: str | None
    title: str


class SnapshotFeed(Feed, frozen=True, kw_only=True, tag="snapshot"):
    subject_key = "portfolio_id"
    summary = "a portfolio's end-of-day snapshot (a point of its equity curve)"
    portfolio_id: str
    trading_day: date
    total_value: Money
    cash_balance: Money
    positions_value: Money
    realized_pnl: Money
    unrealized_pnl: Money


class JobFeed(Feed, frozen=True, kw_only=True, tag="job"):
    subject_key = "job_type"
    summary = "the end of a job run: completed, failed or skipped"
    job_type: str
    tick_id: str
    status: Literal["completed", "failed", "skipped"]
    attempt: int
    duration_ms: float | None = None
    counters: dict[str, int] = {}
    error: str | None = None
    cause: str | None = None  # why a tick was skipped


class CircuitOpenedFeed(Feed, frozen=True, kw_only=True, tag="notification"):
    subject_key = "job_circuit_opened"
    summary = "a job's circuit breaker tripped (enable the job to close it)"
    job_type: str
    tick_id: str
    consecutive_failures: int
    last_error: str


class HaltFeed(Feed, frozen=True, kw_only=True, tag="halt"):
    subject_key = "portfolio_id, or all for the global switch"
    summary = "trading halted or resumed, for one portfolio or all"
    scope: str  # a portfolio id, or "all"
    halted: bool
    reason: str
    rule: str | None = None  # the automatic cause (daily_loss_limit, position_sync); None: an operator


class OrderFeed(Feed, frozen=True, kw_only=True, tag="order"):
    subject_key = "portfolio_id"
    summary = "an order's lifecycle: requested, submitted, unknown, (partially) filled, canceled, expired, rejected"
    event: Literal[
        "OrderRequested", "OrderSubmitted", "OrderSubmitUnknown", "OrderPartiallyFilled", "OrderFilled",
        "OrderCanceled", "OrderExpired", "OrderRejected",
    ]
    portfolio_id: str
    client_order_id: str
    symbol: str
    side: Literal["buy", "sell"]
    qty: Quantity | None = None  # requested quantity (OrderRequested)
    filled_qty: Quantity | None = None  # cumulative
    fill_price: Price | None = None
    broker_order_id: str | None = None
    reason: str | None = None


class RiskFeed(Feed, frozen=True, kw_only=True, tag="risk"):
    subject_key = "portfolio_id"
    summary = "a signal refused by a risk rule (it did not become an order)"
    portfolio_id: str
    client_order_id: str
    tick_id: str
    strategy: str
    symbol: str
    side: Literal["buy", "sell"]
    qty: Quantity
    rule: str
    detail: str


class DiscrepancyFeed(Feed, frozen=True, kw_only=True, tag="discrepancy"):
    subject_key = "SYMBOL (a dot becomes _)"
    summary = "position_sync found our books and the broker's apart, and what its policy does"
    tick_id: str
    symbol: str
    discrepancy: str  # missing | quantity | price | closed_at_broker | unknown_at_broker
    ours_qty: Quantity
    broker_qty: Quantity
    policy: str


FEEDS: tuple[type[Feed], ...] = (
    PriceFeed, FillFeed, AlertFeed, SnapshotFeed, JobFeed, CircuitOpenedFeed, HaltFeed, OrderFeed, RiskFeed,
    DiscrepancyFeed,
)


def kind_of(feed: type[Feed]) -> str:
    tag = feed.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


_encoder = msgspec.json.Encoder()


def encode(feed: Feed) -> bytes:
    return _encoder.encode(feed)


def decode(data: bytes) -> Feed:
    return msgspec.json.decode(data, type=FEED_UNION)  # type: ignore[no-any-return]


FEED_UNION: Any = PriceFeed | FillFeed | AlertFeed | SnapshotFeed | JobFeed | CircuitOpenedFeed | HaltFeed | \
    OrderFeed | RiskFeed | DiscrepancyFeed
