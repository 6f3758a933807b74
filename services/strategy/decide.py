"""The decision of the strategy_execution job for ONE portfolio at one tick.

    decisions = decide_portfolio(portfolio, market, tick, controls)

For every enabled strategy and every symbol of its universe the strategy gives a signal; each non-HOLD
signal is sized and risk-checked, and becomes either an order (``OrderRequested``) or a refusal
(``OrderRejectedByRisk``). The shell appends ``decisions.events``; every event id derives from the
portfolio, the tick and the symbol (through the client order id), so deciding the same tick again
produces the same ids and adds nothing.

Orders are checked in a fixed order (strategies by name, symbols in universe order), and each check sees
the orders accepted before it in the same tick (cash committed, position, order count), so the result
never depends on timing. One order per symbol per tick: the client order id is made of the portfolio,
the tick, the symbol and the side, and two strategies trading one symbol in one tick would cancel out
or double up.

The steps, each a function below: ``daily_loss_halt``; ``commitments_before_tick`` (what earlier ticks'
orders still commit); ``strategy_signals`` (every strategy on its universe); for each non-HOLD signal
``signal_event`` and ``order_or_refusal`` (``size_signal``, ``check_signal_order``, then ``order_event``
or ``refusal_event``), an accepted order counted by ``commit_order``; last ``failure_notification``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

import msgspec

from eventstore import NewEvent
from services.core.events import new_event
from services.model.accounting import ZERO, Position
from services.model.events.alerts import NotificationRaised
from services.model.events.strategy import OrderRejectedByRisk, OrderRequested, PortfolioHalted, SignalGenerated
from services.model.ids import client_order_id
from services.model.market import Bar
from services.model.reads import CommittedOrder
from services.model.text import one_line
from services.model.vocabulary import OrderType, Side, require_aware
from services.strategy import risk
from services.strategy.config import StrategySpec
from services.strategy.plugins import resolve_strategy
from services.strategy.risk import EQUITY_UNKNOWN, ProposedOrder, RiskContext, RiskDecision, RiskLimits, check_order
from services.strategy.sizing import PercentOfEquity, size_order
from services.strategy.strategies import Action, Signal, StrategyFunction, StrategyInput

ONE_ORDER_PER_SYMBOL = "one_order_per_symbol"
NO_PRICE = "no_price"
ZERO_QUANTITY = "zero_quantity"
MAX_SIGNAL_REASON = 500  # characters of a strategy's reason kept in the events
MAX_STRATEGY_ERROR = 300  # characters of a strategy's failure kept in the events and the notification


class StrategyFailure(ValueError):
    """One evaluation of a strategy (one symbol) failed: the strategy raised, or gave no valid signal."""


def _describe_exception(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a user exception's __str__ may fail too
        text = ""
    return one_line(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, MAX_STRATEGY_ERROR)


def call_strategy(function: StrategyFunction, data: StrategyInput) -> Signal:
    """The strategy's signal, or StrategyFailure: whatever it raises (SystemExit and KeyboardInterrupt
    included; only a cancellation goes through) and whatever it returns that is not a valid signal fail
    this one evaluation, never the tick or the process."""
    try:
        signal = function(data)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001 - user code: recorded in the evaluation, never raised on
        raise StrategyFailure(_describe_exception(exc)) from None
    if not isinstance(signal, Signal):
        raise StrategyFailure(f"returned {type(signal).__name__}, not a Signal")
    if not isinstance(signal.action, Action) or not isinstance(signal.reason, str):
        raise StrategyFailure("returned a Signal whose action is not an Action or whose reason is not a string")
    strength = signal.strength
    # adjusted(): the exponent of the leading digit, cheap (as_tuple() would cost more than the call).
    if strength is not None and (
        not isinstance(strength, Decimal) or not strength.is_finite()
        or (strength and not -12 <= strength.adjusted() <= 12)
        or len(str(strength)) > 40
    ):
        raise StrategyFailure("returned a Signal whose strength is not a finite Decimal between 1e-12 and 1e12")
    if len(signal.reason) > MAX_SIGNAL_REASON or not signal.reason.isprintable():
        signal = msgspec.structs.replace(signal, reason=one_line(signal.reason, MAX_SIGNAL_REASON))
    return signal


class Tick(msgspec.Struct, frozen=True, kw_only=True):
    tick_id: str
    scheduled_at: datetime

    def __post_init__(self) -> None:
        require_aware(self.scheduled_at, "Tick.scheduled_at")


class PendingOrder(msgspec.Struct, frozen=True, kw_only=True):
    """What orders of earlier ticks still commit beyond the books, in one symbol and side: the unfilled
    rest of open orders, or filled quantity not booked into the books yet (the books would show it as
    still free)."""

    symbol: str
    side: Side
    qty: Decimal
    notional: Decimal | None  # at their limit or fill prices; None (market orders): at the current price


def pending_by_portfolio(committed: Iterable[CommittedOrder]) -> dict[str, tuple[PendingOrder, ...]]:
    """What the orders service says earlier orders commit, per portfolio (the risk checks' input)."""
    pending: dict[str, list[PendingOrder]] = {}
    for order in committed:
        pending.setdefault(order.portfolio_id, []).append(
            PendingOrder(symbol=order.symbol, side=order.side, qty=order.qty, notional=order.notional)
        )
    return {portfolio_id: tuple(orders) for portfolio_id, orders in pending.items()}


class PortfolioState(msgspec.Struct, frozen=True, kw_only=True):
    portfolio_id: str
    cash: Decimal
    positions: Mapping[str, Position]
    risk_limits: RiskLimits
    strategies: tuple[StrategySpec, ...]
    halted: bool = False
    day_start_equity: Decimal | None = None  # equity at the day's start, for the daily loss limit
    # Cash promised to pending buys is not available; shares promised to pending sales are not held.
    pending: tuple[PendingOrder, ...] = ()


class MarketData(msgspec.Struct, frozen=True, kw_only=True):
    bars: Mapping[str, tuple[Bar, ...]]  # per symbol, oldest first
    prices: Mapping[str, Decimal]  # latest price per symbol (the reference for sizing and risk)


class TradingControls(msgspec.Struct, frozen=True, kw_only=True):
    """Switches that are not the portfolio's own: the global halt and position_sync's quarantine."""

    global_halt: bool = False
    quarantined_symbols: frozenset[str] = frozenset()


NO_CONTROLS = TradingControls()


class PortfolioDecisions(msgspec.Struct, frozen=True, kw_only=True):
    """One portfolio's decision at one tick: the events to append and the counters of its evaluation."""

    portfolio_id: str
    events: tuple[NewEvent, ...]  # to append, in this order
    halted_by_daily_loss: bool
    equity: Decimal | None  # None when a holding has no price
    signals_generated: int  # non-HOLD signals
    trades_requested: int
    orders_refused: int
    strategy_errors: int  # evaluations where the strategy raised (recorded as HOLD with the error)
    # One line per failed evaluation: "<strategy> on <symbol>: <error>" (in PortfolioEvaluated, and notified).
    strategy_failures: tuple[str, ...] = ()


def portfolio_equity(cash: Decimal, positions: Mapping[str, Position], prices: Mapping[str, Decimal]) -> Decimal | None:
    """Cash plus the market value of every open position; None if any open position has no price."""
    total = cash
    for symbol, position in positions.items():
        if position.is_flat:
            continue
        price = prices.get(symbol)
        if price is None:
            return None
        total += position.market_value(price)
    return total


def limit_price_for(side: Side, reference: Decimal, offset: Decimal) -> Decimal:
    """A marketable limit ``offset`` away from the reference, in the broker's price increments
    (cents from $1, hundredths of a cent below)."""
    raw = reference * (1 + offset) if side is Side.BUY else reference * (1 - offset)
    quantum = Decimal("0.01") if raw >= 1 else Decimal("0.0001")
    return raw.quantize(quantum, rounding=ROUND_HALF_UP)


def decide_portfolio(
    portfolio: PortfolioState,
    market: MarketData,
    tick: Tick,
    controls: TradingControls = NO_CONTROLS,
) -> PortfolioDecisions:
    """The portfolio's events at this tick, in the order to append them: a daily-loss halt, then for each
    non-HOLD signal its SignalGenerated and its order or refusal, then a notification of the strategies
    that failed; and the counters of its PortfolioEvaluated."""
    equity = portfolio_equity(portfolio.cash, portfolio.positions, market.prices)
    halt = daily_loss_halt(portfolio, equity, tick)
    events: list[NewEvent] = [] if halt is None else [halt]
    context = DecisionContext(
        portfolio=portfolio,
        market=market,
        tick=tick,
        controls=controls,
        equity=equity,
        halted=portfolio.halted or halt is not None,
    )
    commitments = commitments_before_tick(portfolio, market.prices)
    failures: list[str] = []
    signals = refused = 0
    for found in strategy_signals(portfolio, market, tick.scheduled_at):
        if found.failure is not None:
            failures.append(found.failure)
        if found.signal.action is Action.HOLD:
            continue
        signals += 1
        events.append(signal_event(context, found))
        outcome = order_or_refusal(context, found, commitments)
        events.append(outcome)
        if isinstance(outcome.data, OrderRequested):
            commit_order(commitments, outcome.data, market.prices[found.symbol])
        else:
            refused += 1
    notification = failure_notification(portfolio.portfolio_id, tick, failures)
    if notification is not None:
        events.append(notification)
    return PortfolioDecisions(
        portfolio_id=portfolio.portfolio_id,
        events=tuple(events),
        halted_by_daily_loss=halt is not None,
        equity=equity,
        signals_generated=signals,
        trades_requested=commitments.orders_this_tick,
        orders_refused=refused,
        strategy_errors=len(failures),
        strategy_failures=tuple(failures),
    )


class DecisionContext(msgspec.Struct, frozen=True, kw_only=True):
    """What every signal of one portfolio's decision at one tick is sized and checked against."""

    portfolio: PortfolioState
    market: MarketData
    tick: Tick
    controls: TradingControls
    equity: Decimal | None  # None when a holding has no price
    halted: bool  # halted before this tick, or by its daily loss limit


class StrategySignal(msgspec.Struct, frozen=True, kw_only=True):
    """One strategy's signal for one symbol of its universe."""

    strategy: StrategySpec
    symbol: str
    signal: Signal
    failure: str | None = None  # "<strategy> on <symbol>: <error>" when it failed (the signal is then HOLD)


@dataclass
class Commitments:
    """What the portfolio has promised when the next order of the tick is checked; local to one decision
    and updated by each accepted order, so that each check sees the orders accepted before it."""

    available_cash: Decimal  # less what earlier ticks' buys and this tick's accepted buys spend
    position_qty: dict[str, Decimal]  # less what pending sales sell, plus this tick's orders
    pending_buy_qty: dict[str, Decimal]  # shares earlier ticks' buys will add: the weight counts them
    ordered_symbols: set[str] = field(default_factory=set)  # one order per symbol per tick
    orders_this_tick: int = 0


def daily_loss_halt(portfolio: PortfolioState, equity: Decimal | None, tick: Tick) -> NewEvent | None:
    """A PortfolioHalted when this tick's equity breaches the daily loss limit of a portfolio not halted
    yet; None otherwise (no equity without a price for every holding, no check without a day start)."""
    if (
        portfolio.halted
        or equity is None
        or portfolio.day_start_equity is None
        or not risk.daily_loss_breached(portfolio.day_start_equity, equity, portfolio.risk_limits)
    ):
        return None
    pid = portfolio.portfolio_id
    reason = f"daily loss limit: equity {equity:.2f} against {portfolio.day_start_equity:.2f} at the day's start"
    halt = PortfolioHalted(portfolio_id=pid, reason=reason, rule=risk.DAILY_LOSS_LIMIT, at=tick.scheduled_at)
    return new_event(halt, pid, tick.tick_id)


def commitments_before_tick(portfolio: PortfolioState, prices: Mapping[str, Decimal]) -> Commitments:
    """What earlier ticks' orders still commit: a buy cannot spend cash that an open buy will (market
    orders valued at the current price), a sale cannot sell shares that a pending sale will."""
    available_cash = portfolio.cash
    position_qty = {symbol: p.qty for symbol, p in portfolio.positions.items()}
    pending_buy_qty: dict[str, Decimal] = {}
    for pending in portfolio.pending:
        if pending.side is Side.BUY:
            pending_buy_qty[pending.symbol] = pending_buy_qty.get(pending.symbol, ZERO) + pending.qty
            if pending.notional is not None:
                available_cash -= pending.notional
            else:
                available_cash -= pending.qty * prices.get(pending.symbol, ZERO)
        else:
            position_qty[pending.symbol] = position_qty.get(pending.symbol, ZERO) - pending.qty
    return Commitments(available_cash=available_cash, position_qty=position_qty, pending_buy_qty=pending_buy_qty)


def strategy_signals(portfolio: PortfolioState, market: MarketData, at: datetime) -> Iterator[StrategySignal]:
    """Every enabled strategy's signal for every symbol of its universe, strategies by name and symbols in
    universe order. A strategy that fails, or whose kind is no longer allowed or installed, holds with its
    failure: it fails that evaluation, not the tick."""
    for strategy in sorted((s for s in portfolio.strategies if s.enabled), key=lambda s: s.name):
        try:
            function: StrategyFunction | None = resolve_strategy(strategy.kind).function
            unavailable = ""
        except ValueError as exc:  # a kind no longer allowed or installed: this strategy fails, not the tick
            function, unavailable = None, one_line(str(exc), MAX_STRATEGY_ERROR)
        for symbol in strategy.universe:
            position = portfolio.positions.get(symbol) or Position(symbol=symbol)
            data = StrategyInput(
                symbol=symbol,
                bars=market.bars.get(symbol, ()),
                position_qty=position.qty,
                avg_cost=position.avg_cost,
                cash=portfolio.cash,
                parameters=strategy.parameters,
                tick_time=at,
            )
            failure = None
            try:
                if function is None:
                    raise StrategyFailure(unavailable)
                signal = call_strategy(function, data)
            except StrategyFailure as exc:  # recorded in the evaluation and notified, never hidden
                failure = f"{strategy.name} on {symbol}: {exc}"
                signal = Signal.hold(f"strategy {strategy.kind} failed: {exc}")
            yield StrategySignal(strategy=strategy, symbol=symbol, signal=signal, failure=failure)


def signal_event(context: DecisionContext, found: StrategySignal) -> NewEvent:
    """The SignalGenerated of a non-HOLD signal."""
    pid, tick = context.portfolio.portfolio_id, context.tick
    generated = SignalGenerated(
        portfolio_id=pid,
        tick_id=tick.tick_id,
        strategy=found.strategy.name,
        symbol=found.symbol,
        action=found.signal.action.value,
        reason=found.signal.reason,
        strength=found.signal.strength,
        at=tick.scheduled_at,
    )
    return new_event(generated, pid, tick.tick_id, found.strategy.name, found.symbol)


def order_or_refusal(context: DecisionContext, found: StrategySignal, commitments: Commitments) -> NewEvent:
    """A non-HOLD signal sized and checked: its OrderRequested, or an OrderRejectedByRisk naming the rule."""
    side = Side.BUY if found.signal.action is Action.BUY else Side.SELL
    price = context.market.prices.get(found.symbol)
    if side is Side.BUY and isinstance(found.strategy.sizing, PercentOfEquity) and context.equity is None:
        # A share of an equity nobody can value (a holding has no price): refused, never a failed tick.
        unknown = RiskDecision.refuse(EQUITY_UNKNOWN, "equity unknown (a holding has no price): cannot size the order")
        return refusal_event(context, found, side, ZERO, unknown)
    qty = size_signal(found, side, price, context.equity, commitments)
    verdict = check_signal_order(context, found.symbol, side, qty, price, commitments)
    if not verdict.allowed:
        return refusal_event(context, found, side, qty, verdict)
    assert price is not None
    return order_event(context, found, side, qty, price)


def size_signal(
    found: StrategySignal, side: Side, price: Decimal | None, equity: Decimal | None, commitments: Commitments
) -> Decimal:
    """The order's quantity by the strategy's sizing; 0 without a usable price (refused as NO_PRICE)."""
    if price is None or price <= 0:
        return ZERO
    position_qty = commitments.position_qty.get(found.symbol, ZERO)
    return size_order(found.strategy.sizing, side, price=price, equity=equity, position_qty=position_qty)


def check_signal_order(
    context: DecisionContext, symbol: str, side: Side, qty: Decimal, price: Decimal | None, commitments: Commitments
) -> RiskDecision:
    """Whether the sized order may go: a price, a quantity, one order per symbol and tick, then the
    portfolio's risk checks against what is committed so far."""
    if price is None or price <= 0:
        return RiskDecision.refuse(NO_PRICE, f"no price for {symbol}: cannot size or check the order")
    if qty == 0:
        return RiskDecision.refuse(ZERO_QUANTITY, f"sizing gives 0 shares of {symbol} at {price}")
    if symbol in commitments.ordered_symbols:
        return RiskDecision.refuse(ONE_ORDER_PER_SYMBOL, f"an order for {symbol} is requested already")
    risk_context = RiskContext(
        global_halt=context.controls.global_halt,
        portfolio_halted=context.halted,
        quarantined_symbols=context.controls.quarantined_symbols,
        orders_this_tick=commitments.orders_this_tick,
        available_cash=commitments.available_cash,
        equity=context.equity,
        position_qty=commitments.position_qty.get(symbol, ZERO),
        pending_buy_qty=commitments.pending_buy_qty.get(symbol, ZERO),
    )
    order = ProposedOrder(symbol=symbol, side=side, qty=qty, price=price)
    return check_order(order, risk_context, context.portfolio.risk_limits)


def refusal_event(
    context: DecisionContext, found: StrategySignal, side: Side, qty: Decimal, verdict: RiskDecision
) -> NewEvent:
    """The OrderRejectedByRisk of a refused order, under the client order id it would have had."""
    assert verdict.rule is not None
    pid, tick = context.portfolio.portfolio_id, context.tick
    coid = client_order_id(pid, tick.tick_id, found.symbol, side)
    rejected = OrderRejectedByRisk(
        portfolio_id=pid,
        client_order_id=coid,
        tick_id=tick.tick_id,
        strategy=found.strategy.name,
        symbol=found.symbol,
        side=side,
        qty=qty,
        rule=verdict.rule,
        detail=verdict.detail,
        at=tick.scheduled_at,
    )
    return new_event(rejected, coid, found.strategy.name)


def order_event(context: DecisionContext, found: StrategySignal, side: Side, qty: Decimal, price: Decimal) -> NewEvent:
    """The OrderRequested of an accepted order: at the market, or at a marketable limit off ``price``."""
    strategy = found.strategy
    pid, tick = context.portfolio.portfolio_id, context.tick
    coid = client_order_id(pid, tick.tick_id, found.symbol, side)
    limit_price = None
    if strategy.order_type is OrderType.LIMIT:
        limit_price = limit_price_for(side, price, strategy.limit_offset)
    requested = OrderRequested(
        portfolio_id=pid,
        client_order_id=coid,
        symbol=found.symbol,
        side=side,
        qty=qty,
        order_type=strategy.order_type,
        limit_price=limit_price,
        tick_id=tick.tick_id,
        strategy=strategy.name,
        reason=found.signal.reason,
        at=tick.scheduled_at,
    )
    return new_event(requested, coid)


def commit_order(commitments: Commitments, order: OrderRequested, price: Decimal) -> None:
    """Count an accepted order against what the tick's later orders may use (a buy's cash at its limit,
    or at ``price`` for a market order)."""
    commitments.orders_this_tick += 1
    commitments.ordered_symbols.add(order.symbol)
    held = commitments.position_qty.get(order.symbol, ZERO)
    commitments.position_qty[order.symbol] = held + order.side.sign * order.qty
    if order.side is Side.BUY:
        commitments.available_cash -= order.qty * (order.limit_price or price)


def failure_notification(portfolio_id: str, tick: Tick, failures: list[str]) -> NewEvent | None:
    """One strategy_error notification of the tick's failed evaluations (the first five named); None if
    none failed."""
    if not failures:
        return None
    shown_failures = failures[:5] + ([f"and {len(failures) - 5} more"] if len(failures) > 5 else [])
    notification = NotificationRaised(
        kind="strategy_error",
        portfolio_id=portfolio_id,
        title=f"{portfolio_id}: {len(failures)} strategy evaluation(s) failed at {tick.tick_id}",
        body="; ".join(shown_failures),
        ref=tick.tick_id,
        at=tick.scheduled_at,
    )
    return new_event(notification, "strategy_error", portfolio_id, tick.tick_id)
