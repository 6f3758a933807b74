"""The positions ledger: order fills booked into a portfolio's books, and the fold that rebuilds the
books from the events (PortfolioOpened, FillApplied, PositionReconciled).

Booking is idempotent: the FillApplied id derives from the order and its cumulative filled quantity,
the same cause as the order's fill event, so a fill redelivered to the positions service is appended
once.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from eventstore import NewEvent
from services.model.accounting import ZERO, Book, Fill, book_fill
from services.model.decimals import canonical_decimal
from services.model.events.orders import FillEvent
from services.model.events.positions import UNASSIGNED_PORTFOLIO, FillApplied, PositionReconciled
from services.model.events.strategy import PortfolioOpened
from services.model.registry import new_event

BookEvent = PortfolioOpened | FillApplied | PositionReconciled


def record_fill(book: Book, fill: FillEvent, fees: Decimal = ZERO) -> tuple[Book, NewEvent]:
    """Book an order's fill (OrderPartiallyFilled / OrderFilled) into the portfolio's books."""
    if fill.portfolio_id != book.portfolio_id:
        raise ValueError(f"fill of portfolio {fill.portfolio_id} booked into {book.portfolio_id}")
    new_book, result = book_fill(
        book, Fill(symbol=fill.symbol, side=fill.side, qty=fill.fill_qty, notional=fill.fill_notional, fees=fees)
    )
    applied = FillApplied(
        portfolio_id=fill.portfolio_id,
        client_order_id=fill.client_order_id,
        cumulative_qty=fill.cumulative_qty,
        symbol=fill.symbol,
        side=fill.side,
        fill_qty=fill.fill_qty,
        fill_notional=fill.fill_notional,
        fees=fees,
        cash_change=result.cash_change,
        realized_pnl=result.realized_pnl,
        position_qty=result.position.qty,
        position_cost_basis=result.position.cost_basis,
        at=fill.filled_at,
    )
    # A zero-quantity completion (OrderFilled confirming what was counted) shares its cumulative qty
    # with the previous fill: its type is part of the cause so both are booked.
    cause = (fill.client_order_id, canonical_decimal(fill.cumulative_qty), type(fill).__name__)
    return new_book, new_event(applied, *cause)


def evolve_book(book: Book | None, event: BookEvent) -> Book:
    """The books after one event (``book`` is None before the portfolio's PortfolioOpened)."""
    if isinstance(event, PortfolioOpened):
        return Book(portfolio_id=event.portfolio_id, cash=event.starting_cash)
    if book is None:
        raise ValueError(f"{type(event).__name__} before the portfolio was opened")
    positions = dict(book.positions)
    previous = book.position(event.symbol)
    match event:
        case FillApplied():
            positions[event.symbol] = msgspec.structs.replace(
                previous,
                qty=event.position_qty,
                cost_basis=event.position_cost_basis,
                realized_pnl=previous.realized_pnl + event.realized_pnl,
            )
            return msgspec.structs.replace(book, cash=book.cash + event.cash_change, positions=positions)
        case PositionReconciled():
            positions[event.symbol] = msgspec.structs.replace(
                previous, qty=event.qty_after, cost_basis=event.cost_basis_after
            )
            return msgspec.structs.replace(book, positions=positions)
    raise TypeError(f"not a book event: {type(event).__name__}")


def unassigned_book() -> Book:
    """The books of positions nobody owns (see ``services.positions.reconcile``): no cash."""
    return Book(portfolio_id=UNASSIGNED_PORTFOLIO, cash=ZERO)
