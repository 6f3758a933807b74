"""Position and cash accounting of one portfolio, from fills.

Quantities are signed (a short is negative). A position keeps its ``cost_basis`` — the signed money
paid for the shares still held (qty x average cost) — rather than the average cost itself, because
the basis is exact in Decimal while an average (basis / qty) may not be. The books balance by
construction::

    cash + sum(cost_basis) - realized_pnl == starting cash

A buy moves money from cash into the basis; a sale releases the sold shares' share of the basis
against the proceeds, and the difference is realized P&L. Fees are paid from cash and charged to
realized P&L at once. The only divisions (a partial close releasing part of the basis, a fill split
across zero) are rounded to ``AMOUNT_QUANTUM``, so every later addition is exact and the identity
above holds to the last digit.

A fill is a fact (the broker has traded): it is always applied, even one that turns a long into a
short. Refusing short orders is the job of the pre-trade risk checks, not of the books.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import msgspec

from services.model.decimals import ZERO
from services.model.vocabulary import Side

# Far below a cent, and few enough digits that sums of amounts stay exact in a 28-digit context.
AMOUNT_QUANTUM = Decimal("1e-10")


class Position(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    qty: Decimal = ZERO  # signed: negative is short
    cost_basis: Decimal = ZERO  # signed like qty: qty x average cost
    realized_pnl: Decimal = ZERO  # net of fees

    @property
    def avg_cost(self) -> Decimal | None:
        """Average cost per share of the open quantity (positive for longs and shorts); None when flat."""
        return None if self.qty == 0 else self.cost_basis / self.qty

    @property
    def is_flat(self) -> bool:
        return self.qty == 0

    def market_value(self, price: Decimal) -> Decimal:
        """Signed value at ``price`` (a short is a liability)."""
        return self.qty * price

    def unrealized_pnl(self, price: Decimal) -> Decimal:
        return self.qty * price - self.cost_basis


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    """One execution: ``notional`` is the exact money of the trade (qty x price, or the broker's exact
    cumulative difference, see ``services.model.events.orders``)."""

    symbol: str
    side: Side
    qty: Decimal
    notional: Decimal
    fees: Decimal = ZERO

    def __post_init__(self) -> None:
        if self.qty < 0 or self.notional < 0 or self.fees < 0:
            raise ValueError(f"fill quantities, amounts and fees must not be negative: {self!r}")

    @classmethod
    def at_price(cls, symbol: str, side: Side, qty: Decimal, price: Decimal, fees: Decimal = ZERO) -> Fill:
        return cls(symbol=symbol, side=side, qty=qty, notional=qty * price, fees=fees)

    @property
    def price(self) -> Decimal | None:
        return None if self.qty == 0 else self.notional / self.qty


class FillResult(msgspec.Struct, frozen=True, kw_only=True):
    position: Position  # the position after the fill
    cash_change: Decimal  # negative for a buy
    realized_pnl: Decimal  # realized by this fill (net of its fees)


def apply_fill(position: Position, fill: Fill) -> FillResult:
    """The position after ``fill``, the change of cash and the P&L it realized.

    The part of the fill that reduces the open quantity closes shares (realizing P&L against their
    basis); any remainder opens or extends a position at the fill's price.
    """
    if fill.symbol != position.symbol:
        raise ValueError(f"fill of {fill.symbol} applied to the position in {position.symbol}")
    if fill.qty == 0:
        # The broker confirming the completion of an order whose quantity is counted already.
        return FillResult(position=position, cash_change=-fill.fees, realized_pnl=-fill.fees)

    signed_qty = fill.side.sign * fill.qty
    signed_value = fill.side.sign * fill.notional  # money put into the position (negative for a sale)

    closing_qty = ZERO
    if position.qty != 0 and (position.qty > 0) != (signed_qty > 0):
        closing_qty = min(abs(position.qty), fill.qty)

    realized = -fill.fees
    basis = position.cost_basis
    if closing_qty > 0:
        if closing_qty == fill.qty:
            closing_value = signed_value
        else:
            closing_value = (signed_value * closing_qty / fill.qty).quantize(AMOUNT_QUANTUM)
        if closing_qty == abs(position.qty):
            released_basis = basis  # exactly: going flat leaves no rounding crumbs behind
        else:
            released_basis = (basis * closing_qty / abs(position.qty)).quantize(AMOUNT_QUANTUM)
        # Long sold: proceeds (-closing_value) minus the basis released. Short covered: the basis
        # released (negative) is the money received, the closing value the money paid.
        realized += -(closing_value + released_basis)
        basis = basis - released_basis + (signed_value - closing_value)
    else:
        basis = basis + signed_value

    new_qty = position.qty + signed_qty
    new_position = msgspec.structs.replace(
        position, qty=new_qty, cost_basis=basis, realized_pnl=position.realized_pnl + realized
    )
    return FillResult(position=new_position, cash_change=-signed_value - fill.fees, realized_pnl=realized)


class Book(msgspec.Struct, frozen=True, kw_only=True):
    """One portfolio's cash and positions (several portfolios share one broker account, so the books
    are per portfolio)."""

    portfolio_id: str
    cash: Decimal
    positions: Mapping[str, Position] = msgspec.field(default_factory=dict)

    def position(self, symbol: str) -> Position:
        return self.positions.get(symbol) or Position(symbol=symbol)

    @property
    def cost_basis(self) -> Decimal:
        return sum((p.cost_basis for p in self.positions.values()), ZERO)

    @property
    def realized_pnl(self) -> Decimal:
        return sum((p.realized_pnl for p in self.positions.values()), ZERO)


def book_fill(book: Book, fill: Fill) -> tuple[Book, FillResult]:
    """The portfolio's books after a fill, and what the fill did."""
    result = apply_fill(book.position(fill.symbol), fill)
    positions = dict(book.positions)
    positions[fill.symbol] = result.position
    return msgspec.structs.replace(book, cash=book.cash + result.cash_change, positions=positions), result
