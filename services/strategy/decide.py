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
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
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
from services.model.text import one_line
from services.model.vocabulary import OrderType, Side, require_aware
from services.strategy import risk
from services.strategy.config import StrategySpec
from services.strategy.plugins import resolve_strategy
from services.strategy.risk import ProposedOrder, RiskContext, RiskDecision, RiskLimits, check_order
from services.strategy.sizing import size_order
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


class OrderIntent(msgspec.Struct, frozen=True, kw_only=True):
    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType
    limit_price: Decimal | None
    reference_price: Decimal


class RiskRefusal(msgspec.Struct, frozen=True, kw_only=True):
    client_order_id: str
    side: Side
    qty: Decimal
    rule: str
    detail: str


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    strategy: str
    symbol: str
    signal: Signal
    order: OrderIntent | None = None
    refusal: RiskRefusal | None = None


class PortfolioDecisions(msgspec.Struct, frozen=True, kw_only=True):
    portfolio_id: str
    decisions: tuple[Decision, ...]
    events: tuple[NewEvent, ...]  # to append, in this order
    halted_by_daily_loss: bool
    equity: Decimal | None  # None when a holding has no price
    signals_generated: int  # non-HOLD signals
    trades_requested: int
    orders_refused: int
    strategy_errors: int  # evaluations where the strategy raised (recorded as HOLD with the error)
    # One line per failed evaluation: "<strategy> on <symbol>: <error>" (in PortfolioEvaluated, and notified).
    strategy_failures: tuple[str, ...] = ()

    @property
    def orders(self) -> tuple[OrderIntent, ...]:
        return tuple(d.order for d in self.decisions if d.order is not None)


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
    at = tick.scheduled_at
    pid = portfolio.portfolio_id
    events: list[NewEvent] = []
    equity = portfolio_equity(portfolio.cash, portfolio.positions, market.prices)

    halted = portfolio.halted
    halted_by_daily_loss = False
    if (
        not halted
        and equity is not None
        and portfolio.day_start_equity is not None
        and risk.daily_loss_breached(portfolio.day_start_equity, equity, portfolio.risk_limits)
    ):
        halted = halted_by_daily_loss = True
        reason = f"daily loss limit: equity {equity:.2f} against {portfolio.day_start_equity:.2f} at the day's start"
        halt = PortfolioHalted(portfolio_id=pid, reason=reason, rule=risk.DAILY_LOSS_LIMIT, at=at)
        events.append(new_event(halt, pid, tick.tick_id))

    # What earlier ticks' orders still commit, and this tick's accepted orders so far (checks of later
    # orders see them): a buy cannot spend cash that an open buy will, a sale cannot sell shares twice.
    available_cash = portfolio.cash
    position_qty = {symbol: p.qty for symbol, p in portfolio.positions.items()}
    # Shares that earlier ticks' buys will add (open, or filled and not booked): the weight counts them.
    pending_buy_qty: dict[str, Decimal] = {}
    for pending in portfolio.pending:
        if pending.side is Side.BUY:
            pending_buy_qty[pending.symbol] = pending_buy_qty.get(pending.symbol, ZERO) + pending.qty
            if pending.notional is not None:
                available_cash -= pending.notional
            else:
                available_cash -= pending.qty * market.prices.get(pending.symbol, ZERO)
        else:
            position_qty[pending.symbol] = position_qty.get(pending.symbol, ZERO) - pending.qty
    ordered_symbols: set[str] = set()

    decisions: list[Decision] = []
    failures: list[str] = []
    signals = trades = refused = errors = 0
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
            try:
                if function is None:
                    raise StrategyFailure(unavailable)
                signal = call_strategy(function, data)
            except StrategyFailure as exc:  # recorded in the evaluation and notified, never hidden
                errors += 1
                failures.append(f"{strategy.name} on {symbol}: {exc}")
                signal = Signal.hold(f"strategy {strategy.kind} failed: {exc}")
            if signal.action is Action.HOLD:
                decisions.append(Decision(strategy=strategy.name, symbol=symbol, signal=signal))
                continue

            signals += 1
            side = Side.BUY if signal.action is Action.BUY else Side.SELL
            coid = client_order_id(pid, tick.tick_id, symbol, side)
            generated = SignalGenerated(
                portfolio_id=pid,
                tick_id=tick.tick_id,
                strategy=strategy.name,
                symbol=symbol,
                action=signal.action.value,
                reason=signal.reason,
                strength=signal.strength,
                at=at,
            )
            events.append(new_event(generated, pid, tick.tick_id, strategy.name, symbol))

            price = market.prices.get(symbol)
            qty = ZERO
            if price is None or price <= 0:
                verdict = RiskDecision.refuse(NO_PRICE, f"no price for {symbol}: cannot size or check the order")
            else:
                qty = size_order(
                    strategy.sizing, side, price=price, equity=equity, position_qty=position_qty.get(symbol, ZERO)
                )
                if qty == 0:
                    verdict = RiskDecision.refuse(ZERO_QUANTITY, f"sizing gives 0 shares of {symbol} at {price}")
                elif symbol in ordered_symbols:
                    verdict = RiskDecision.refuse(ONE_ORDER_PER_SYMBOL, f"an order for {symbol} is requested already")
                else:
                    context = RiskContext(
                        global_halt=controls.global_halt,
                        portfolio_halted=halted,
                        quarantined_symbols=controls.quarantined_symbols,
                        orders_this_tick=trades,
                        available_cash=available_cash,
                        equity=equity,
                        position_qty=position_qty.get(symbol, ZERO),
                        pending_buy_qty=pending_buy_qty.get(symbol, ZERO),
                    )
                    order = ProposedOrder(symbol=symbol, side=side, qty=qty, price=price)
                    verdict = check_order(order, context, portfolio.risk_limits)

            if not verdict.allowed:
                assert verdict.rule is not None
                refused += 1
                refusal = RiskRefusal(
                    client_order_id=coid, side=side, qty=qty, rule=verdict.rule, detail=verdict.detail
                )
                decisions.append(Decision(strategy=strategy.name, symbol=symbol, signal=signal, refusal=refusal))
                rejected = OrderRejectedByRisk(
                    portfolio_id=pid,
                    client_order_id=coid,
                    tick_id=tick.tick_id,
                    strategy=strategy.name,
                    symbol=symbol,
                    side=side,
                    qty=qty,
                    rule=verdict.rule,
                    detail=verdict.detail,
                    at=at,
                )
                events.append(new_event(rejected, coid, strategy.name))
                continue

            assert price is not None
            limit_price = None
            if strategy.order_type is OrderType.LIMIT:
                limit_price = limit_price_for(side, price, strategy.limit_offset)
            intent = OrderIntent(
                client_order_id=coid,
                symbol=symbol,
                side=side,
                qty=qty,
                order_type=strategy.order_type,
                limit_price=limit_price,
                reference_price=price,
            )
            decisions.append(Decision(strategy=strategy.name, symbol=symbol, signal=signal, order=intent))
            requested = OrderRequested(
                portfolio_id=pid,
                client_order_id=coid,
                symbol=symbol,
                side=side,
                qty=qty,
                order_type=strategy.order_type,
                limit_price=limit_price,
                tick_id=tick.tick_id,
                strategy=strategy.name,
                reason=signal.reason,
                at=at,
            )
            events.append(new_event(requested, coid))
            trades += 1
            ordered_symbols.add(symbol)
            position_qty[symbol] = position_qty.get(symbol, ZERO) + side.sign * qty
            if side is Side.BUY:
                available_cash -= qty * (limit_price or price)

    if failures:
        shown_failures = failures[:5] + ([f"and {len(failures) - 5} more"] if len(failures) > 5 else [])
        notification = NotificationRaised(
            kind="strategy_error",
            portfolio_id=pid,
            title=f"{pid}: {len(failures)} strategy evaluation(s) failed at {tick.tick_id}",
            body="; ".join(shown_failures),
            ref=tick.tick_id,
            at=at,
        )
        events.append(new_event(notification, "strategy_error", pid, tick.tick_id))

    return PortfolioDecisions(
        portfolio_id=pid,
        decisions=tuple(decisions),
        events=tuple(events),
        halted_by_daily_loss=halted_by_daily_loss,
        equity=equity,
        signals_generated=signals,
        trades_requested=trades,
        orders_refused=refused,
        strategy_errors=errors,
        strategy_failures=tuple(failures),
    )
