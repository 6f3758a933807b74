from datetime import date, timedelta

import pytest

from services.model.accounting import Book, Position
from services.model.events.positions import PortfolioSnapshotTaken, QuotesObserved
from services.model.market import PriceBasis, Quote, QuoteProblem, check_quotes, quote_price
from services.positions.valuation import (
    MissingPrices,
    portfolio_snapshot,
    quotes_observed,
    value_portfolio,
)
from tests.builders import T0, D


def quote(symbol: str, bid: str | None, ask: str | None, last: str | None, age_minutes: int = 0) -> Quote:
    return Quote(
        symbol=symbol,
        bid=None if bid is None else D(bid),
        ask=None if ask is None else D(ask),
        last=None if last is None else D(last),
        timestamp=T0 - timedelta(minutes=age_minutes),
    )


def test_mid_falls_back_to_last_and_last_to_mid() -> None:
    assert quote_price(quote("A", "99", "101", "100.5")) == D(100)
    assert quote_price(quote("A", "99", "101", "100.5"), PriceBasis.LAST) == D("100.5")
    assert quote_price(quote("A", "0", "101", "100.5")) == D("100.5")  # one-sided book
    assert quote_price(quote("A", "102", "101", None)) is None  # crossed book, no last
    assert quote_price(quote("A", "99", "101", None), PriceBasis.LAST) == D(100)


def test_missing_stale_and_priceless_quotes_are_reported_never_zero() -> None:
    quotes = {
        "A": quote("A", "9", "11", None),
        "B": quote("B", "9", "11", None, age_minutes=30),
        "C": quote("C", None, None, None),
    }
    check = check_quotes(["A", "B", "C", "D"], quotes, as_of=T0, max_age=timedelta(minutes=15))
    assert check.prices == {"A": D(10)}
    assert check.problems == {"B": QuoteProblem.STALE, "C": QuoteProblem.NO_PRICE, "D": QuoteProblem.MISSING}
    assert (check.symbols_checked, check.symbols_updated) == (4, 1)

    event = quotes_observed("price_update@t", check, T0)
    observed = event.data
    assert isinstance(observed, QuotesObserved)
    assert set(observed.quotes) == {"A"}
    assert observed.problems == {"B": "stale", "C": "no_price", "D": "missing"}
    assert event.event_id == quotes_observed("price_update@t", check, T0).event_id


def test_quotes_refuse_naive_timestamps() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Quote(symbol="A", last=D(1), timestamp=T0.replace(tzinfo=None))


def book() -> Book:
    return Book(
        portfolio_id="p",
        cash=D(1000),
        positions={
            "A": Position(symbol="A", qty=D(10), cost_basis=D(500), realized_pnl=D(20)),
            "B": Position(symbol="B", qty=D(-2), cost_basis=D(-200)),
            "C": Position(symbol="C", qty=D(0), cost_basis=D(0), realized_pnl=D(-5)),
        },
    )


def test_portfolio_value_and_pnl() -> None:
    valuation = value_portfolio(book(), {"A": D(60), "B": D(90)})
    assert valuation.positions_value == D(600) - D(180)
    assert valuation.unrealized_pnl == D(100) + D(20)
    assert valuation.total_value == D(1000) + D(420)
    assert valuation.realized_pnl == D(15)
    assert [v.symbol for v in valuation.positions] == ["A", "B"]  # flat positions are not valued


def test_an_unpriced_position_leaves_the_total_unknown_and_blocks_the_snapshot() -> None:
    valuation = value_portfolio(book(), {"A": D(60)})
    assert valuation.unpriced_symbols == ("B",)
    assert valuation.total_value is None
    b = next(v for v in valuation.positions if v.symbol == "B")
    assert (b.price, b.market_value) == (None, None)
    with pytest.raises(MissingPrices, match="B"):
        portfolio_snapshot("p", date(2025, 3, 3), valuation, T0)


def test_one_snapshot_id_per_portfolio_and_trading_day() -> None:
    valuation = value_portfolio(book(), {"A": D(60), "B": D(90)})
    first = portfolio_snapshot("p", date(2025, 3, 3), valuation, T0)
    later = portfolio_snapshot("p", date(2025, 3, 3), valuation, T0 + timedelta(hours=1))
    assert first.event_id == later.event_id
    assert first.event_id != portfolio_snapshot("p", date(2025, 3, 4), valuation, T0).event_id
    snapshot = first.data
    assert isinstance(snapshot, PortfolioSnapshotTaken)
    assert (snapshot.total_value, snapshot.cash_balance, snapshot.unrealized_pnl) == (D(1420), D(1000), D(120))
