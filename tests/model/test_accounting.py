from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.model.accounting import Book, Fill, Position, apply_fill, book_fill
from services.model.vocabulary import Side
from tests.builders import D


def buy(qty: str, price: str, fees: str = "0") -> Fill:
    return Fill.at_price("AAPL", Side.BUY, D(qty), D(price), D(fees))


def sell(qty: str, price: str, fees: str = "0") -> Fill:
    return Fill.at_price("AAPL", Side.SELL, D(qty), D(price), D(fees))


def run(*fills: Fill, cash: str = "10000") -> Book:
    book = Book(portfolio_id="p", cash=D(cash))
    for fill in fills:
        book, _ = book_fill(book, fill)
    return book


def test_buys_average_the_cost() -> None:
    book = run(buy("10", "100"), buy("30", "120"))
    position = book.position("AAPL")
    assert position.qty == D(40)
    assert position.avg_cost == D(115)
    assert book.cash == D(10000) - D(1000) - D(3600)


def test_selling_part_of_a_long_realizes_against_the_average_cost() -> None:
    book = run(buy("10", "100"), sell("4", "130"))
    position = book.position("AAPL")
    assert position.realized_pnl == D(120)  # (130 - 100) x 4
    assert (position.qty, position.avg_cost) == (D(6), D(100))
    assert book.cash == D(10000) - D(1000) + D(520)


def test_going_flat_leaves_no_basis_behind_even_with_a_non_terminating_average() -> None:
    book = run(buy("1", "100"), buy("2", "101"), sell("1", "90"), sell("2", "95"))
    position = book.position("AAPL")
    assert position.is_flat
    assert position.cost_basis == 0
    assert position.avg_cost is None
    assert position.realized_pnl == D(280) - D(302)  # 90 + 190 - (100 + 202)
    assert book.cash == D(10000) - D(302) + D(280)


def test_a_sale_larger_than_the_long_flips_to_a_short_at_the_fill_price() -> None:
    book = run(buy("10", "100"), sell("15", "110"))
    position = book.position("AAPL")
    assert position.qty == D(-5)
    assert position.avg_cost == D(110)
    assert position.realized_pnl == D(100)


def test_covering_a_short_below_its_price_is_a_gain() -> None:
    book = run(sell("10", "50"), buy("4", "40"))
    position = book.position("AAPL")
    assert position.realized_pnl == D(40)  # (50 - 40) x 4
    assert (position.qty, position.avg_cost) == (D(-6), D(50))
    assert position.unrealized_pnl(D(45)) == D(30)
    assert position.market_value(D(45)) == D(-270)


def test_fees_are_paid_from_cash_and_charged_to_realized_pnl() -> None:
    result = apply_fill(Position(symbol="AAPL"), buy("10", "10", fees="1.50"))
    assert result.cash_change == D("-101.50")
    assert result.realized_pnl == D("-1.50")
    assert result.position.avg_cost == D(10)


def test_a_zero_quantity_fill_changes_nothing() -> None:
    position = Position(symbol="AAPL", qty=D(5), cost_basis=D(50))
    result = apply_fill(position, Fill(symbol="AAPL", side=Side.BUY, qty=D(0), notional=D(0)))
    assert result.position == position
    assert result.cash_change == 0


def test_a_fill_of_another_symbol_is_refused() -> None:
    with pytest.raises(ValueError, match="MSFT"):
        apply_fill(Position(symbol="AAPL"), Fill.at_price("MSFT", Side.BUY, D(1), D(1)))


def test_negative_amounts_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        Fill(symbol="AAPL", side=Side.BUY, qty=D(-1), notional=D(1))


fills = st.builds(
    lambda side, qty, cents, fee_cents: Fill.at_price(
        "AAPL", side, Decimal(qty), Decimal(cents) / 100, Decimal(fee_cents) / 100
    ),
    st.sampled_from(Side),
    st.integers(min_value=1, max_value=1000),
    st.integers(min_value=1, max_value=100_000),
    st.integers(min_value=0, max_value=500),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(fills, max_size=30))
def test_books_always_balance(sequence: list[Fill]) -> None:
    start = D(1_000_000)
    book = run(*sequence, cash=str(start))
    position = book.position("AAPL")
    # Conservation: every unit of money is in cash, in the basis of what is held, or realized.
    assert book.cash + position.cost_basis - position.realized_pnl == start
    assert position.qty == sum(f.side.sign * f.qty for f in sequence)
    if position.qty == 0:
        assert position.cost_basis == 0
    else:
        # The basis has the sign of the position: the average cost is a positive price.
        assert position.avg_cost is not None and position.avg_cost > 0


@settings(max_examples=200, deadline=None)
@given(
    lots=st.lists(st.tuples(st.integers(1, 500), st.integers(100, 100_000)), min_size=1, max_size=10),
    exit_cents=st.integers(100, 100_000),
)
def test_a_round_trip_realizes_proceeds_minus_cost(lots: list[tuple[int, int]], exit_cents: int) -> None:
    buys = [Fill.at_price("AAPL", Side.BUY, Decimal(q), Decimal(c) / 100) for q, c in lots]
    total_qty = sum(Decimal(q) for q, _ in lots)
    cost = sum(f.notional for f in buys)
    exit_price = Decimal(exit_cents) / 100
    book = run(*buys, Fill.at_price("AAPL", Side.SELL, total_qty, exit_price), cash="100000000")
    position = book.position("AAPL")
    assert position.is_flat
    assert position.realized_pnl == total_qty * exit_price - cost
    assert book.cash == D(100000000) + position.realized_pnl
