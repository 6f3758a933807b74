"""The market as the decisions see it: bars, quotes and the broker's positions and orders, in plain
immutable types (the broker boundary, ``services.broker.views``, converts the broker's models into these).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

import msgspec

from services.model.vocabulary import require_aware


class Bar(msgspec.Struct, frozen=True, kw_only=True):
    timestamp: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal

    def __post_init__(self) -> None:
        require_aware(self.timestamp, "Bar.timestamp")


DEFAULT_MAX_QUOTE_AGE = timedelta(minutes=15)


class Quote(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    bid: Decimal | None = None
    ask: Decimal | None = None
    last: Decimal | None = None
    timestamp: datetime

    def __post_init__(self) -> None:
        require_aware(self.timestamp, f"quote timestamp of {self.symbol}")


class PriceBasis(StrEnum):
    MID = "mid"  # (bid + ask) / 2, falling back to last when the book is one-sided or crossed
    LAST = "last"  # last trade, falling back to mid


def quote_price(quote: Quote, basis: PriceBasis = PriceBasis.MID) -> Decimal | None:
    """The quote's price on ``basis``, or None when it has no usable price (0 is never a price)."""
    mid = None
    if quote.bid is not None and quote.ask is not None and 0 < quote.bid <= quote.ask:
        mid = (quote.bid + quote.ask) / 2
    last = quote.last if quote.last is not None and quote.last > 0 else None
    return (mid if mid is not None else last) if basis is PriceBasis.MID else (last if last is not None else mid)


class QuoteProblem(StrEnum):
    MISSING = "missing"  # no quote at all
    NO_PRICE = "no_price"  # a quote without a usable bid/ask or last
    STALE = "stale"  # older than the allowed age at the time of the check


class QuoteCheck(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a batch of quotes for the symbols we asked for."""

    prices: Mapping[str, Decimal]  # usable and fresh
    fresh: Mapping[str, Quote]
    problems: Mapping[str, QuoteProblem]  # every symbol asked for and not usable, with why

    @property
    def symbols_checked(self) -> int:
        return len(self.fresh) + len(self.problems)

    @property
    def symbols_updated(self) -> int:
        return len(self.fresh)


def check_quotes(
    symbols: Iterable[str],
    quotes: Mapping[str, Quote],
    as_of: datetime,
    max_age: timedelta = DEFAULT_MAX_QUOTE_AGE,
    basis: PriceBasis = PriceBasis.MID,
) -> QuoteCheck:
    """Sort a broker's quotes for ``symbols`` into usable prices and reported problems at ``as_of``."""
    require_aware(as_of, "as_of")
    prices: dict[str, Decimal] = {}
    fresh: dict[str, Quote] = {}
    problems: dict[str, QuoteProblem] = {}
    for symbol in sorted(set(symbols)):
        quote = quotes.get(symbol)
        if quote is None:
            problems[symbol] = QuoteProblem.MISSING
            continue
        price = quote_price(quote, basis)
        if price is None:
            problems[symbol] = QuoteProblem.NO_PRICE
        elif as_of - quote.timestamp > max_age:
            problems[symbol] = QuoteProblem.STALE
        else:
            prices[symbol] = price
            fresh[symbol] = quote
    return QuoteCheck(prices=prices, fresh=fresh, problems=problems)



class BrokerPosition(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    qty: Decimal  # signed
    avg_entry_price: Decimal


class BrokerStatus(StrEnum):
    """What a broker's order status means for us (Alpaca has ~17 statuses; most just mean "open")."""

    OPEN = "open"
    FILLED = "filled"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REJECTED = "rejected"


class BrokerOrderView(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one order at the broker, from polling or from the trade_updates stream."""

    client_order_id: str
    broker_order_id: str
    status: BrokerStatus
    filled_qty: Decimal  # cumulative
    filled_avg_price: Decimal | None  # average over the cumulative quantity; None while nothing filled
    updated_at: datetime  # the broker's time of this state (fill time for fills)
    reason: str = ""  # the broker's words for a rejection / cancel, when it gives any

    def __post_init__(self) -> None:
        require_aware(self.updated_at, "BrokerOrderView.updated_at")
        if self.filled_qty < 0:
            raise ValueError(f"BrokerOrderView.filled_qty must not be negative, got {self.filled_qty}")
        if self.filled_qty > 0 and self.filled_avg_price is None:
            raise ValueError("BrokerOrderView.filled_avg_price is required once something is filled")


