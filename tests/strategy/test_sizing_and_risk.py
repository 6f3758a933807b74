from decimal import Decimal

import pytest

from services.model.vocabulary import Side
from services.strategy import risk
from services.strategy.risk import ProposedOrder, RiskContext, RiskLimits, check_order, daily_loss_breached
from services.strategy.sizing import FixedNotional, FixedQuantity, PercentOfEquity, size_order
from tests.builders import D


def size(sizing: FixedQuantity | FixedNotional | PercentOfEquity, side: Side, price: str, held: str = "0") -> Decimal:
    return size_order(sizing, side, price=D(price), equity=D(100_000), position_qty=D(held))


def test_buy_sizes_round_down_to_whole_shares() -> None:
    assert size(FixedQuantity(quantity=D("7.9")), Side.BUY, "10") == 7
    assert size(FixedNotional(notional=D(1000)), Side.BUY, "333") == 3
    assert size(PercentOfEquity(percent=D(10)), Side.BUY, "3000") == 3  # 10 000 / 3 000
    assert size(FixedNotional(notional=D(100)), Side.BUY, "101") == 0  # too small to trade


def test_sell_closes_the_position_or_a_fraction_and_never_goes_negative() -> None:
    assert size(FixedNotional(notional=D(1)), Side.SELL, "10", held="25") == 25
    assert size(FixedNotional(notional=D(1), sell_fraction=D("0.5")), Side.SELL, "10", held="25") == 12
    assert size(FixedQuantity(quantity=D(5)), Side.SELL, "10", held="0") == 0
    assert size(FixedQuantity(quantity=D(5)), Side.SELL, "10", held="-3") == 0


def test_sizing_refuses_bad_values() -> None:
    with pytest.raises(ValueError):
        PercentOfEquity(percent=D(150))
    with pytest.raises(ValueError):
        FixedNotional(notional=D(-1))
    with pytest.raises(ValueError, match="positive"):
        size(FixedQuantity(quantity=D(1)), Side.BUY, "0")


def context(**changes: object) -> RiskContext:
    values: dict[str, object] = {
        "global_halt": False,
        "portfolio_halted": False,
        "quarantined_symbols": frozenset(),
        "orders_this_tick": 0,
        "available_cash": D(100_000),
        "equity": D(100_000),
        "position_qty": D(0),
    }
    values.update(changes)
    return RiskContext(**values)  # type: ignore[arg-type]


def order(side: Side = Side.BUY, qty: str = "10", price: str = "100", symbol: str = "AAPL") -> ProposedOrder:
    return ProposedOrder(symbol=symbol, side=side, qty=D(qty), price=D(price))


LIMITS = RiskLimits()


@pytest.mark.parametrize(
    ("proposed", "ctx", "limits", "rule"),
    [
        (order(), context(global_halt=True), LIMITS, risk.GLOBAL_HALT),
        (order(), context(portfolio_halted=True), LIMITS, risk.PORTFOLIO_HALTED),
        (order(), context(quarantined_symbols=frozenset({"AAPL"})), LIMITS, risk.SYMBOL_QUARANTINED),
        (order(), context(orders_this_tick=3), RiskLimits(max_orders_per_tick=3), risk.MAX_ORDERS_PER_TICK),
        (order(Side.SELL, qty="5"), context(position_qty=D(3)), LIMITS, risk.SHORT_SELLING),
        (order(qty="300"), context(), LIMITS, risk.MAX_ORDER_NOTIONAL),  # 30 000 > 25 000
        (order(qty="100"), context(available_cash=D(5_000)), LIMITS, risk.INSUFFICIENT_CASH),
        (order(qty="200"), context(position_qty=D(100)), LIMITS, risk.MAX_POSITION_WEIGHT),  # 30 %
        (order(qty="10"), context(equity=None), LIMITS, risk.EQUITY_UNKNOWN),
    ],
)
def test_each_rule_refuses_with_its_name(
    proposed: ProposedOrder, ctx: RiskContext, limits: RiskLimits, rule: str
) -> None:
    decision = check_order(proposed, ctx, limits)
    assert (decision.allowed, decision.rule) == (False, rule)
    assert decision.detail


def test_an_order_within_every_limit_is_allowed() -> None:
    decision = check_order(order(qty="10"), context(), LIMITS)
    assert (decision.allowed, decision.rule) == (True, None)


def test_shorting_is_allowed_when_configured() -> None:
    assert check_order(order(Side.SELL, qty="5"), context(), RiskLimits(allow_short=True)).allowed


def test_reducing_an_oversized_position_is_always_allowed() -> None:
    # 600 shares at 100 = 60 % of equity, above the 25 % limit: selling some must still be possible.
    assert check_order(order(Side.SELL, qty="100"), context(position_qty=D(600), equity=None), LIMITS).allowed


def test_disabled_limits_do_not_refuse() -> None:
    limits = RiskLimits(max_order_notional=None, max_position_weight=None)
    assert check_order(order(qty="900"), context(), limits).allowed


def test_daily_loss_limit() -> None:
    limits = RiskLimits(daily_loss_limit=D("0.05"))
    assert not daily_loss_breached(D(100_000), D(95_000), limits)  # exactly at the limit
    assert daily_loss_breached(D(100_000), D("94999.99"), limits)
    assert not daily_loss_breached(D(100_000), D(50_000), RiskLimits(daily_loss_limit=None))


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="max_position_weight"):
        RiskLimits(max_position_weight=D(2))
    with pytest.raises(ValueError, match="max_orders_per_tick"):
        RiskLimits(max_orders_per_tick=0)
    with pytest.raises(ValueError, match="max_loss"):
        RiskLimits.model_validate({"max_loss": "1"})
