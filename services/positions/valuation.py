"""Valuation from quotes (price_update and portfolio_snapshot).

A missing or stale quote is reported, never turned into a price of 0: a position without a price has
no market value (None), and a portfolio with such a position has no total until it is priced.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal

import msgspec

from eventstore import NewEvent
from services.core.events import new_event
from services.model.accounting import ZERO, Book, Position
from services.model.events.positions import ObservedQuote, PortfolioSnapshotTaken, QuotesObserved
from services.model.market import QuoteCheck


class PositionValuation(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    qty: Decimal
    avg_cost: Decimal | None
    price: Decimal | None  # None: not priced (never 0)
    market_value: Decimal | None
    unrealized_pnl: Decimal | None


def value_position(position: Position, price: Decimal | None) -> PositionValuation:
    if price is not None and price <= 0:
        raise ValueError(f"price of {position.symbol} must be positive, got {price}")
    return PositionValuation(
        symbol=position.symbol,
        qty=position.qty,
        avg_cost=position.avg_cost,
        price=price,
        market_value=None if price is None else position.market_value(price),
        unrealized_pnl=None if price is None else position.unrealized_pnl(price),
    )


class PortfolioValuation(msgspec.Struct, frozen=True, kw_only=True):
    """The numbers of a portfolio snapshot. Totals are None while any open position is unpriced."""

    cash_balance: Decimal
    positions: tuple[PositionValuation, ...]
    realized_pnl: Decimal
    unpriced_symbols: tuple[str, ...]
    positions_value: Decimal | None
    unrealized_pnl: Decimal | None
    total_value: Decimal | None

    @property
    def complete(self) -> bool:
        return not self.unpriced_symbols


def value_portfolio(book: Book, prices: Mapping[str, Decimal]) -> PortfolioValuation:
    """Value a portfolio's open positions at ``prices`` (latest known price per symbol)."""
    valuations = tuple(
        value_position(position, prices.get(symbol))
        for symbol, position in sorted(book.positions.items())
        if not position.is_flat
    )
    unpriced = tuple(v.symbol for v in valuations if v.price is None)
    positions_value = unrealized = total = None
    if not unpriced:
        positions_value = sum((v.market_value or ZERO for v in valuations), ZERO)
        unrealized = sum((v.unrealized_pnl or ZERO for v in valuations), ZERO)
        total = book.cash + positions_value
    return PortfolioValuation(
        cash_balance=book.cash,
        positions=valuations,
        realized_pnl=book.realized_pnl,
        unpriced_symbols=unpriced,
        positions_value=positions_value,
        unrealized_pnl=unrealized,
        total_value=total,
    )


# ------------------------------------------------------------------------------------------ events


def quotes_observed(tick_id: str, check: QuoteCheck, at: datetime) -> NewEvent:
    """The one QuotesObserved event of a price_update tick (its id is the tick's)."""
    quotes = {
        symbol: ObservedQuote(
            bid=quote.bid, ask=quote.ask, last=quote.last, price=check.prices[symbol], timestamp=quote.timestamp
        )
        for symbol, quote in check.fresh.items()
    }
    problems = {symbol: problem.value for symbol, problem in check.problems.items()}
    return new_event(QuotesObserved(tick_id=tick_id, quotes=quotes, problems=problems, at=at), tick_id)


class MissingPrices(ValueError):
    """A snapshot was asked for while some open positions have no price at all."""

    def __init__(self, portfolio_id: str, symbols: tuple[str, ...]) -> None:
        super().__init__(f"portfolio {portfolio_id}: no price for {', '.join(symbols)}; snapshot not taken")
        self.symbols = symbols


def portfolio_snapshot(portfolio_id: str, trading_day: date, valuation: PortfolioValuation, at: datetime) -> NewEvent:
    """The day's PortfolioSnapshotTaken. Its id derives from the portfolio and the trading day only, so
    whatever ticks, redeliveries or restarts ask again, a day has one snapshot.

    Raises MissingPrices rather than value an unpriced position at 0.
    """
    if not valuation.complete:
        raise MissingPrices(portfolio_id, valuation.unpriced_symbols)
    assert valuation.total_value is not None and valuation.positions_value is not None
    assert valuation.unrealized_pnl is not None
    snapshot = PortfolioSnapshotTaken(
        portfolio_id=portfolio_id,
        trading_day=trading_day,
        total_value=valuation.total_value,
        cash_balance=valuation.cash_balance,
        positions_value=valuation.positions_value,
        realized_pnl=valuation.realized_pnl,
        unrealized_pnl=valuation.unrealized_pnl,
        at=at,
    )
    return new_event(snapshot, portfolio_id, trading_day.isoformat())
