from services.model.accounting import Book
from services.model.events.orders import OrderFilled, OrderPartiallyFilled
from services.model.events.positions import PositionReconciled
from services.model.events.strategy import PortfolioOpened
from services.model.ledger import evolve_book, record_fill
from services.model.vocabulary import Side
from tests.builders import T0, D

COID = "ob-" + "a" * 40


def fill(event_type: type, qty: str, notional: str, cumulative: str) -> OrderPartiallyFilled | OrderFilled:
    return event_type(
        portfolio_id="growth",
        client_order_id=COID,
        symbol="AAPL",
        side=Side.BUY,
        fill_qty=D(qty),
        fill_price=D(notional) / D(qty) if D(qty) else D(0),
        fill_notional=D(notional),
        cumulative_qty=D(cumulative),
        avg_price=D(1),
        filled_at=T0,
    )


def test_folding_the_fill_events_rebuilds_the_books_that_booking_produced() -> None:
    opened = PortfolioOpened(portfolio_id="growth", starting_cash=D(1000), trading_mode="paper", risk_limits={}, at=T0)
    book = evolve_book(None, opened)
    live = book
    fills = [fill(OrderPartiallyFilled, "4", "400", "4"), fill(OrderFilled, "6", "630", "10")]
    ids = []
    for order_fill in fills:
        live, event = record_fill(live, order_fill, fees=D(1))
        ids.append(event.event_id)
        book = evolve_book(book, event.data)
    assert book == live
    assert book.cash == D(1000) - D(1030) - D(2)
    assert len(set(ids)) == 2
    # The same fill booked again (a redelivery) has the same id: the store keeps one.
    assert record_fill(Book(portfolio_id="growth", cash=D(0)), fills[0], fees=D(1))[1].event_id == ids[0]


def test_a_reconciliation_sets_the_position_without_moving_cash() -> None:
    book = evolve_book(
        None, PortfolioOpened(portfolio_id="p", starting_cash=D(5), trading_mode="paper", risk_limits={}, at=T0)
    )
    fixed = PositionReconciled(
        tick_id="t",
        portfolio_id="p",
        symbol="AAPL",
        kind="missing",
        qty_before=D(0),
        qty_after=D(3),
        cost_basis_before=D(0),
        cost_basis_after=D(30),
        at=T0,
    )
    book = evolve_book(book, fixed)
    assert (book.cash, book.position("AAPL").qty, book.position("AAPL").avg_cost) == (D(5), D(3), D(10))
