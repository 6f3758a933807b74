from datetime import timedelta
from decimal import Decimal

import pytest

from services.model.accounting import Position
from services.model.events.alerts import NotificationRaised
from services.model.events.strategy import OrderRejectedByRisk, OrderRequested, PortfolioHalted, SignalGenerated
from services.model.ids import client_order_id
from services.model.vocabulary import OrderType, Side
from services.strategy import risk
from services.strategy.config import StrategySpec, parse_strategy_spec
from services.strategy.decide import (
    NO_PRICE,
    ONE_ORDER_PER_SYMBOL,
    ZERO_QUANTITY,
    MarketData,
    PendingOrder,
    PortfolioDecisions,
    PortfolioState,
    Tick,
    TradingControls,
    decide_portfolio,
    limit_price_for,
)
from services.strategy.risk import RiskLimits
from tests.builders import T0, D, bars_from_closes

ALWAYS = "tests.strategy.sample_strategies:always"
TICK = Tick(tick_id="strategy_execution@2025-03-03T15:00:00Z", scheduled_at=T0 + timedelta(minutes=30))
PRICES = {"AAPL": D(100), "MSFT": D(200), "NVDA": D(50)}


def always(name: str, universe: list[str], action: str = "buy", **changes: object) -> StrategySpec:
    return parse_strategy_spec(
        {
            "name": name,
            "kind": ALWAYS,
            "universe": universe,
            "parameters": {"action": action},
            "sizing": {"method": "fixed_quantity", "quantity": "10"},
            **changes,
        }
    )


def state(*strategies: StrategySpec, **changes: object) -> PortfolioState:
    values: dict[str, object] = {
        "portfolio_id": "growth",
        "cash": D(100_000),
        "positions": {},
        "risk_limits": RiskLimits(),
        "strategies": strategies,
    }
    values.update(changes)
    return PortfolioState(**values)  # type: ignore[arg-type]


def decide(portfolio: PortfolioState, prices: dict[str, Decimal] = PRICES, **controls: object) -> PortfolioDecisions:
    return decide_portfolio(portfolio, MarketData(bars={}, prices=prices), TICK, TradingControls(**controls))  # type: ignore[arg-type]


def of_type(result: PortfolioDecisions, event_type: type) -> list:  # type: ignore[type-arg]
    return [e.data for e in result.events if isinstance(e.data, event_type)]


def ordered(result: PortfolioDecisions) -> list[str]:
    """The symbols of the orders requested, in the order of the events."""
    return [o.symbol for o in of_type(result, OrderRequested)]


def test_a_crossover_on_real_bars_requests_a_sized_order() -> None:
    closes = [100] * 6 + [101]
    strategy = parse_strategy_spec(
        {
            "kind": "ma_crossover",
            "universe": ["AAPL"],
            "parameters": {"fast_window": 2, "slow_window": 5},
            "sizing": {"method": "fixed_notional", "notional": "1000"},
        }
    )
    market = MarketData(bars={"AAPL": bars_from_closes(closes)}, prices={"AAPL": D(101)})
    result = decide_portfolio(state(strategy), market, TICK)
    (requested,) = of_type(result, OrderRequested)
    assert requested.client_order_id == client_order_id("growth", TICK.tick_id, "AAPL", Side.BUY)
    assert (requested.side, requested.qty, requested.order_type, requested.limit_price) == (
        Side.BUY,
        D(9),
        OrderType.MARKET,
        None,
    )
    assert requested.at == TICK.scheduled_at
    assert "crossed above" in requested.reason
    assert (result.signals_generated, result.trades_requested, result.orders_refused) == (1, 1, 0)
    assert [type(e.data) for e in result.events] == [SignalGenerated, OrderRequested]


def test_hold_signals_make_no_events() -> None:
    result = decide(state(always("quiet", ["AAPL", "MSFT"], action="hold")))
    assert result.events == ()
    assert (result.signals_generated, result.strategy_errors) == (0, 0)


def test_deciding_the_same_tick_again_gives_the_same_event_ids() -> None:
    portfolio = state(always("buyer", ["AAPL", "MSFT"]))
    first = [e.event_id for e in decide(portfolio).events]
    assert first == [e.event_id for e in decide(portfolio).events]
    assert len(set(first)) == len(first)


def test_a_refused_order_is_an_event_naming_the_rule() -> None:
    result = decide(state(always("buyer", ["AAPL"])), global_halt=True)
    (refused,) = of_type(result, OrderRejectedByRisk)
    assert refused.rule == risk.GLOBAL_HALT
    assert refused.client_order_id == client_order_id("growth", TICK.tick_id, "AAPL", Side.BUY)
    assert of_type(result, OrderRequested) == []
    assert (result.signals_generated, result.trades_requested, result.orders_refused) == (1, 0, 1)


def test_quarantined_symbols_are_refused_and_others_trade() -> None:
    result = decide(state(always("buyer", ["AAPL", "MSFT"])), quarantined_symbols=frozenset({"AAPL"}))
    assert [r.rule for r in of_type(result, OrderRejectedByRisk)] == [risk.SYMBOL_QUARANTINED]
    assert ordered(result) == ["MSFT"]


def test_the_daily_loss_limit_halts_the_portfolio_and_refuses_its_orders() -> None:
    portfolio = state(always("buyer", ["AAPL"]), cash=D(90_000), day_start_equity=D(100_000))
    result = decide(portfolio)
    assert result.halted_by_daily_loss
    (halt,) = of_type(result, PortfolioHalted)
    assert (halt.portfolio_id, halt.rule) == ("growth", risk.DAILY_LOSS_LIMIT)
    assert [r.rule for r in of_type(result, OrderRejectedByRisk)] == [risk.PORTFOLIO_HALTED]


def test_an_already_halted_portfolio_is_not_halted_again() -> None:
    result = decide(state(always("buyer", ["AAPL"]), cash=D(90_000), day_start_equity=D(100_000), halted=True))
    assert of_type(result, PortfolioHalted) == []
    assert [r.rule for r in of_type(result, OrderRejectedByRisk)] == [risk.PORTFOLIO_HALTED]


def test_one_order_per_symbol_per_tick_whatever_the_strategies_say() -> None:
    held = {"AAPL": Position(symbol="AAPL", qty=D(5), cost_basis=D(500))}
    result = decide(state(always("a_buyer", ["AAPL"]), always("b_seller", ["AAPL"], action="sell"), positions=held))
    assert [o.side for o in of_type(result, OrderRequested)] == [Side.BUY]  # strategies are evaluated by name
    assert [r.rule for r in of_type(result, OrderRejectedByRisk)] == [ONE_ORDER_PER_SYMBOL]


def test_orders_of_one_tick_see_each_other() -> None:
    strategy = always("buyer", ["AAPL", "MSFT", "NVDA"])
    # Each buy costs 10 x price; 1 500 of cash pays for AAPL (1 000) but not MSFT (2 000) after it.
    result = decide(state(strategy, cash=D(1_500), risk_limits=RiskLimits(max_position_weight=None)))
    assert ordered(result) == ["AAPL", "NVDA"]
    assert [r.rule for r in of_type(result, OrderRejectedByRisk)] == [risk.INSUFFICIENT_CASH]

    capped = decide(state(strategy, risk_limits=RiskLimits(max_orders_per_tick=2)))
    assert ordered(capped) == ["AAPL", "MSFT"]
    assert [r.rule for r in of_type(capped, OrderRejectedByRisk)] == [risk.MAX_ORDERS_PER_TICK]


def test_no_price_and_zero_quantity_are_refusals_not_orders() -> None:
    result = decide(state(always("buyer", ["AAPL", "TSLA"]), positions={}), prices={"AAPL": D(100)})
    assert [r.rule for r in of_type(result, OrderRejectedByRisk)] == [NO_PRICE]
    sell_flat = decide(state(always("seller", ["AAPL"], action="sell")))
    assert [r.rule for r in of_type(sell_flat, OrderRejectedByRisk)] == [ZERO_QUANTITY]


def test_a_failing_strategy_is_counted_and_holds_without_stopping_the_others() -> None:
    broken = parse_strategy_spec(
        {"name": "broken", "kind": "tests.strategy.sample_strategies:broken", "universe": ["AAPL"]}
    )
    result = decide(state(broken, always("buyer", ["MSFT"])))
    assert result.strategy_errors == 1
    assert result.strategy_failures == ("broken on AAPL: RuntimeError: no data for AAPL",)
    assert ordered(result) == ["MSFT"]


def test_disabled_strategies_are_not_evaluated() -> None:
    result = decide(state(always("buyer", ["AAPL"], enabled=False)))
    assert result.events == ()
    assert (result.signals_generated, result.strategy_errors) == (0, 0)


def test_limit_orders_get_a_marketable_limit_in_price_increments() -> None:
    result = decide(state(always("buyer", ["AAPL"], order_type="limit", limit_offset="0.002")))
    (requested,) = of_type(result, OrderRequested)
    assert (requested.order_type, requested.limit_price) == (OrderType.LIMIT, D("100.20"))
    assert limit_price_for(Side.SELL, D("0.5"), D("0.01")) == D("0.4950")


def test_an_unpriced_holding_blocks_buys_that_need_the_equity() -> None:
    holdings = {"TSLA": Position(symbol="TSLA", qty=D(1), cost_basis=D(200))}
    result = decide(state(always("buyer", ["AAPL"]), positions=holdings))
    assert result.equity is None
    assert [r.rule for r in of_type(result, OrderRejectedByRisk)] == [risk.EQUITY_UNKNOWN]


def test_a_percent_of_equity_buy_with_an_unpriced_holding_is_refused_not_a_failed_tick() -> None:
    """Sizing a share of an equity nobody can value raised, and failed the whole strategy_execution."""
    holdings = {"TSLA": Position(symbol="TSLA", qty=D(1), cost_basis=D(200))}
    by_equity = always("buyer", ["AAPL"], sizing={"method": "percent_of_equity", "percent": "5"})
    result = decide(state(by_equity, always("other", ["MSFT"]), positions=holdings))
    refused = of_type(result, OrderRejectedByRisk)
    assert [(r.symbol, r.rule) for r in refused] == [("AAPL", risk.EQUITY_UNKNOWN), ("MSFT", risk.EQUITY_UNKNOWN)]
    assert "cannot size" in refused[0].detail


def test_cash_promised_to_earlier_open_buys_is_not_spent_again() -> None:
    # 100,000 cash in the books; an open buy of 950 AAPL at the market (100) and unbooked fills of 40
    # MSFT at 201 promise 95,000 + 8,040: a buy of 10 AAPL (1,000) no longer fits.
    pending = (
        PendingOrder(symbol="AAPL", side=Side.BUY, qty=D(950), notional=None),
        PendingOrder(symbol="MSFT", side=Side.BUY, qty=D(40), notional=D(8040)),
    )
    refused = of_type(decide(state(always("a", ["AAPL"]), pending=pending)), OrderRejectedByRisk)
    assert [r.rule for r in refused] == [risk.INSUFFICIENT_CASH]
    assert "above available cash -3040.00" in refused[0].detail
    # Without them the same buy goes through.
    assert len(of_type(decide(state(always("a", ["AAPL"]))), OrderRequested)) == 1


def test_shares_promised_to_an_earlier_sale_are_not_sold_twice() -> None:
    held = {"AAPL": Position(symbol="AAPL", qty=D(10), cost_basis=D(900))}
    pending = (PendingOrder(symbol="AAPL", side=Side.SELL, qty=D(10), notional=D(990)),)
    result = decide(state(always("a", ["AAPL"], action="sell"), positions=held, pending=pending))
    assert of_type(result, OrderRequested) == []
    assert len(of_type(result, OrderRejectedByRisk)) == 1
    assert len(of_type(decide(state(always("a", ["AAPL"], action="sell"), positions=held)), OrderRequested)) == 1


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("returns_none", "returned NoneType, not a Signal"),
        ("exits", "SystemExit: 3"),
        ("interrupts", "KeyboardInterrupt"),
        ("nan_strength", "strength is not a finite Decimal"),
    ],
)
def test_a_strategy_that_exits_raises_anything_or_returns_no_signal_fails_only_its_evaluation(
    function: str, message: str
) -> None:
    broken = parse_strategy_spec(
        {"name": "broken", "kind": f"tests.strategy.sample_strategies:{function}", "universe": ["AAPL"]}
    )
    result = decide(state(broken, always("buyer", ["MSFT"])))
    assert result.strategy_errors == 1
    assert len(result.strategy_failures) == 1 and message in result.strategy_failures[0]
    assert result.strategy_failures[0].startswith("broken on AAPL: ")
    assert ordered(result) == ["MSFT"]
    (notification,) = of_type(result, NotificationRaised)
    assert notification.kind == "strategy_error" and message in notification.body


def test_a_strategy_reason_is_kept_to_one_bounded_printable_line() -> None:
    loud = parse_strategy_spec({"name": "loud", "kind": "tests.strategy.sample_strategies:loud", "universe": ["AAPL"]})
    (requested,) = of_type(decide(state(loud)), OrderRequested)
    assert len(requested.reason) <= 500 and "\x1b" not in requested.reason and "\n" not in requested.reason


def test_the_weight_counts_shares_of_open_buys_and_unbooked_fills_as_held() -> None:
    """30 % weight limit, equity 100,000, AAPL at 100: 300 shares already held, bought by an open order or
    filled but not booked, are the same 30 %; a buy of 50 more would make 35 % and is refused in all three."""
    buy_50 = always("a", ["AAPL"], sizing={"method": "fixed_quantity", "quantity": "50"})
    limits = RiskLimits(max_position_weight=D("0.30"))
    booked = state(
        buy_50, cash=D(70_000), positions={"AAPL": Position(symbol="AAPL", qty=D(300), cost_basis=D(30_000))},
        risk_limits=limits,
    )
    open_buy = state(
        buy_50, risk_limits=limits, pending=(PendingOrder(symbol="AAPL", side=Side.BUY, qty=D(300), notional=None),)
    )
    unbooked_fill = state(
        buy_50, risk_limits=limits,
        pending=(PendingOrder(symbol="AAPL", side=Side.BUY, qty=D(300), notional=D(30_000)),),
    )
    for portfolio in (booked, open_buy, unbooked_fill):
        result = decide(portfolio)
        assert of_type(result, OrderRequested) == []
        refused = of_type(result, OrderRejectedByRisk)
        assert [r.rule for r in refused] == [risk.MAX_POSITION_WEIGHT]
        assert "35.00% of equity (max 30.00%)" in refused[0].detail
    # An open buy in another symbol takes cash, not weight: the same buy of 50 AAPL (5 %) goes through.
    elsewhere = state(
        buy_50, risk_limits=limits, pending=(PendingOrder(symbol="MSFT", side=Side.BUY, qty=D(150), notional=None),)
    )
    assert len(of_type(decide(elsewhere), OrderRequested)) == 1


def test_a_sale_is_not_refused_for_weight_because_of_open_buys() -> None:
    """Reducing a position never increases the exposure, whatever is still to be bought."""
    limits = RiskLimits(max_position_weight=D("0.30"))
    held = {"AAPL": Position(symbol="AAPL", qty=D(100), cost_basis=D(10_000))}
    portfolio = state(
        always("a", ["AAPL"], action="sell"), cash=D(90_000), positions=held, risk_limits=limits,
        pending=(PendingOrder(symbol="AAPL", side=Side.BUY, qty=D(400), notional=None),),
    )
    assert len(of_type(decide(portfolio), OrderRequested)) == 1
