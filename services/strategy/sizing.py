"""Position sizing: how many shares a BUY or SELL signal becomes.

Quantities are whole shares, rounded down (never up: sizing must not exceed its budget), and never
negative; 0 means "too small to trade". A SELL closes the long position, or a configured fraction of it.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.core.limits import fraction, money
from services.core.limits import quantity as share_quantity
from services.model.vocabulary import Side

ZERO = Decimal(0)
_WHOLE = Decimal(1)


class _Sizing(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Share of the long position a SELL signal sells (1 = close it).
    sell_fraction: Decimal = fraction(default=Decimal(1), gt=0, le=1)


class FixedQuantity(_Sizing):
    method: Literal["fixed_quantity"] = "fixed_quantity"
    quantity: Decimal = share_quantity(gt=0)


class FixedNotional(_Sizing):
    method: Literal["fixed_notional"] = "fixed_notional"
    notional: Decimal = money(gt=0)  # money per buy


class PercentOfEquity(_Sizing):
    method: Literal["percent_of_equity"] = "percent_of_equity"
    percent: Decimal = fraction(gt=0, le=100)  # 10 = 10 % of the portfolio's equity per buy


SizingSpec = Annotated[FixedQuantity | FixedNotional | PercentOfEquity, Field(discriminator="method")]


def whole_shares(quantity: Decimal) -> Decimal:
    return max(quantity.to_integral_value(rounding=ROUND_FLOOR), ZERO)


def size_order(
    sizing: FixedQuantity | FixedNotional | PercentOfEquity,
    side: Side,
    *,
    price: Decimal,
    equity: Decimal | None,
    position_qty: Decimal,
) -> Decimal:
    """The order quantity for a signal on ``side`` at ``price``. ``equity`` is only needed (and may be
    None only) for a buy with ``percent_of_equity``."""
    if price <= 0:
        raise ValueError(f"price must be positive to size an order, got {price}")
    if side is Side.SELL:
        if position_qty <= 0:
            return ZERO  # nothing long to sell; going short is not a sizing decision
        if sizing.sell_fraction == 1:
            return position_qty
        return whole_shares(position_qty * sizing.sell_fraction)
    match sizing:
        case FixedQuantity():
            return whole_shares(sizing.quantity)
        case FixedNotional():
            return whole_shares(sizing.notional / price)
        case PercentOfEquity():
            if equity is None:
                raise ValueError("percent_of_equity sizing needs the portfolio's equity")
            return whole_shares(equity * sizing.percent / 100 / price)
