"""Pre-trade risk checks. Every order passes ``check_order`` before it is requested; the first rule
that refuses names itself in the decision (and in the OrderRejectedByRisk event).

The rules, in the order they are checked:

- ``global_halt``: trading is halted for everyone (``openbell halt``);
- ``portfolio_halted``: this portfolio is halted (operator, daily loss limit, position_sync);
- ``symbol_quarantined``: position_sync found a discrepancy in this symbol (issue 6);
- ``max_orders_per_tick``: this portfolio already requested its maximum this tick;
- ``short_selling``: the sale would leave the portfolio short, and shorting is not allowed;
- ``max_order_notional``: qty x price above the limit;
- ``insufficient_cash``: a buy costs more than the cash not yet committed (no margin): committed are
  this tick's accepted buys and what earlier ticks' orders still promise beyond the books;
- ``max_position_weight``: after the order the position would be a larger fraction of equity than
  allowed (only for orders that increase the exposure; reducing an oversized position is always fine);
  with unknown equity (an unpriced holding) such orders are refused as ``equity_unknown``. The position
  counts what is committed as the cash check does: earlier ticks' open buys and filled buys not booked
  yet are shares the portfolio will hold.

The daily loss limit is not a per-order rule: ``daily_loss_breached`` decides, once per tick, whether
the portfolio must be halted.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from services.core.limits import fraction, money
from services.model.vocabulary import Side

ZERO = Decimal(0)

GLOBAL_HALT = "global_halt"
PORTFOLIO_HALTED = "portfolio_halted"
SYMBOL_QUARANTINED = "symbol_quarantined"
MAX_ORDERS_PER_TICK = "max_orders_per_tick"
SHORT_SELLING = "short_selling"
MAX_ORDER_NOTIONAL = "max_order_notional"
INSUFFICIENT_CASH = "insufficient_cash"
MAX_POSITION_WEIGHT = "max_position_weight"
EQUITY_UNKNOWN = "equity_unknown"
DAILY_LOSS_LIMIT = "daily_loss_limit"


class RiskLimits(BaseModel):
    """Per-portfolio limits. Fractions are of equity (0.25 = 25 %); None disables a limit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_order_notional: Decimal | None = money(default=Decimal(25_000), gt=0)
    max_position_weight: Decimal | None = fraction(default=Decimal("0.25"), gt=0, le=1)
    max_orders_per_tick: int = Field(default=20, ge=1, le=10_000, strict=True)
    allow_short: bool = Field(default=False, strict=True)
    # Loss (realized + unrealized) since the day's starting equity, as a fraction of that equity.
    daily_loss_limit: Decimal | None = fraction(default=Decimal("0.05"), gt=0, le=1)


class ProposedOrder(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal  # the reference price used to value the order


class RiskContext(msgspec.Struct, frozen=True, kw_only=True):
    """The portfolio as it stands when this order is checked (after the orders accepted before it in
    the same tick: their cash is committed and their quantities count)."""

    global_halt: bool
    portfolio_halted: bool
    quarantined_symbols: frozenset[str]
    orders_this_tick: int
    available_cash: Decimal
    equity: Decimal | None  # None when some holding has no price
    position_qty: Decimal  # in the order's symbol, signed, including this tick's accepted orders
    # Shares of earlier ticks' buys in the order's symbol that the books do not show yet: the unfilled
    # rest of open buys, and filled quantity not booked. Counted for the weight (they will be held).
    pending_buy_qty: Decimal = ZERO


class RiskDecision(msgspec.Struct, frozen=True, kw_only=True):
    allowed: bool
    rule: str | None
    detail: str

    @classmethod
    def allow(cls) -> RiskDecision:
        return cls(allowed=True, rule=None, detail="within limits")

    @classmethod
    def refuse(cls, rule: str, detail: str) -> RiskDecision:
        return cls(allowed=False, rule=rule, detail=detail)


def check_order(order: ProposedOrder, context: RiskContext, limits: RiskLimits) -> RiskDecision:
    if context.global_halt:
        return RiskDecision.refuse(GLOBAL_HALT, "trading is halted for all portfolios")
    if context.portfolio_halted:
        return RiskDecision.refuse(PORTFOLIO_HALTED, "the portfolio is halted")
    if order.symbol in context.quarantined_symbols:
        return RiskDecision.refuse(SYMBOL_QUARANTINED, f"{order.symbol} is quarantined by position_sync")
    if context.orders_this_tick >= limits.max_orders_per_tick:
        return RiskDecision.refuse(
            MAX_ORDERS_PER_TICK,
            f"{context.orders_this_tick} orders already this tick (max {limits.max_orders_per_tick})",
        )

    qty_after = context.position_qty + order.side.sign * order.qty
    if qty_after < 0 and not limits.allow_short:
        return RiskDecision.refuse(
            SHORT_SELLING, f"selling {order.qty} of {context.position_qty} held would leave the position short"
        )

    notional = order.qty * order.price
    if limits.max_order_notional is not None and notional > limits.max_order_notional:
        return RiskDecision.refuse(
            MAX_ORDER_NOTIONAL, f"order notional {notional:.2f} above the limit {limits.max_order_notional}"
        )
    if order.side is Side.BUY and notional > context.available_cash:
        return RiskDecision.refuse(
            INSUFFICIENT_CASH, f"order notional {notional:.2f} above available cash {context.available_cash:.2f}"
        )

    increases_exposure = abs(qty_after) > abs(context.position_qty)
    if limits.max_position_weight is not None and increases_exposure:
        if context.equity is None:
            return RiskDecision.refuse(EQUITY_UNKNOWN, "equity unknown (a holding has no price): cannot check weight")
        if context.equity <= 0:
            return RiskDecision.refuse(MAX_POSITION_WEIGHT, f"equity {context.equity:.2f} leaves no room")
        # Equity does not change by trading (cash becomes shares), so it is also the equity after. The
        # exposure is the larger of the position with and without the pending buys (filled or not).
        exposure = max(abs(qty_after), abs(qty_after + context.pending_buy_qty))
        weight = exposure * order.price / context.equity
        if weight > limits.max_position_weight:
            return RiskDecision.refuse(
                MAX_POSITION_WEIGHT,
                f"{order.symbol} would be {weight:.2%} of equity (max {limits.max_position_weight:.2%})",
            )
    return RiskDecision.allow()


def daily_loss_breached(day_start_equity: Decimal, equity: Decimal, limits: RiskLimits) -> bool:
    """True when the loss since the day's start (realized + unrealized, i.e. the fall of equity) is
    beyond the limit."""
    if limits.daily_loss_limit is None or day_start_equity <= 0:
        return False
    return day_start_equity - equity > limits.daily_loss_limit * day_start_equity
