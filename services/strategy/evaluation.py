"""One portfolio's evaluation at one tick: read what its decision needs, decide, and record the result.

The shell around the pure ``decide_portfolio``: it folds the portfolio, takes the tick's controls and bars
from the process's caches, routes the decided events to their streams and appends them in one atomic
append that a second evaluation of the same portfolio and tick (a redelivery, another worker) cannot
repeat. The same functions serve the tick's own worker and the workers of the fan-out queue.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import msgspec

from eventstore import ANY, NO_STREAM, DuplicateEventId, NewEvent, WrongExpectedVersion
from services.core.events import new_event
from services.core.host import ServiceContext
from services.core.jobs.consumer import Reject
from services.core.jobs.types import WorkItem
from services.model.events.strategy import OrderRequested, PortfolioEvaluated, PortfolioHalted
from services.model.streams import evaluation_stream, order_stream, portfolio_stream
from services.strategy.decide import MarketData, PortfolioState, TradingControls, decide_portfolio
from services.strategy.decide import Tick as DecisionTick
from services.strategy.market_data import MarketDataCache
from services.strategy.portfolio import PortfolioView, PortfolioViewCache, load_portfolio
from services.strategy.tick_controls import TickControlsCache


@dataclass(frozen=True)
class Caches:
    """What one strategy process keeps across ticks: bar history, each tick's controls, portfolio views."""

    market: MarketDataCache = field(default_factory=MarketDataCache)
    controls: TickControlsCache = field(default_factory=TickControlsCache)
    views: PortfolioViewCache = field(default_factory=PortfolioViewCache)
    # The portfolios the last tick evaluated here: the next tick starts reading their views at once.
    last_portfolios: list[str] = field(default_factory=list)


def _route(
    pid: str, tick_id: str, events: list[NewEvent]
) -> tuple[list[tuple[str, NewEvent]], list[NewEvent], list[NewEvent]]:
    """Split a decision's events: orders to their own streams, halts to the portfolio, the rest to the
    evaluation stream."""
    orders: list[tuple[str, NewEvent]] = []
    portfolio: list[NewEvent] = []
    evaluation: list[NewEvent] = []
    for event in events:
        if isinstance(event.data, OrderRequested):
            orders.append((order_stream(event.data.client_order_id), event))
        elif isinstance(event.data, PortfolioHalted):
            portfolio.append(event)
        else:
            evaluation.append(event)
    return orders, portfolio, evaluation


class Evaluation(msgspec.Struct, frozen=True):
    """One portfolio's decision at one tick, ready to append: decided, nothing written yet."""

    evaluated: PortfolioEvaluated
    appends: list[tuple[str, list[NewEvent], int]]


async def evaluate_portfolio(ctx: ServiceContext, caches: Caches, item: WorkItem) -> PortfolioEvaluated | None:
    """Decide and record one work item's evaluation; None when it was evaluated already."""
    evaluation = await decide_evaluation(ctx, caches, item)
    return None if evaluation is None else await record_evaluation(ctx, evaluation)


async def decide_evaluation(
    ctx: ServiceContext, caches: Caches, item: WorkItem, view: PortfolioView | None = None
) -> Evaluation | None:
    """Read what the portfolio's decision needs and decide (no effect). ``view``: the portfolio as the
    tick's prefetch read it; otherwise it is read here, after checking whether the evaluation exists
    already (None: a redelivery, or another worker's)."""
    store = ctx.rt.store
    stream = evaluation_stream(item.portfolio_id, item.tick_id)
    if view is None:
        # Independent reads at once, each on its own connection.
        version, view, controls = await asyncio.gather(
            store.stream_version(stream),
            load_portfolio(store, item.portfolio_id, caches.views),
            caches.controls.get(ctx, item.tick_id, item.scheduled_at),
        )
        if version >= 0:
            return None  # evaluated already (a redelivery, or another worker)
    else:
        # The atomic NO_STREAM append below still refuses a second evaluation.
        controls = await caches.controls.get(ctx, item.tick_id, item.scheduled_at)
    if view is None:
        raise Reject(f"unknown portfolio {item.portfolio_id!r}")
    strategies = view.enabled_strategies
    symbols = {s for strategy in strategies for s in strategy.universe} | {
        s for s, p in view.book.positions.items() if not p.is_flat
    }
    bars = await caches.market.bars(ctx, item.tick_id, item.scheduled_at, symbols)
    prices = {s: b[-1].close for s, b in bars.items() if b}
    state = PortfolioState(
        portfolio_id=view.portfolio_id,
        cash=view.book.cash,
        positions=view.book.positions,
        risk_limits=view.risk_limits,
        strategies=strategies,
        halted=view.halted,
        # The last snapshot before this trading day; the starting cash before the first snapshot.
        day_start_equity=controls.day_start_equity.get(view.portfolio_id, view.starting_cash),
        pending=controls.pending.get(view.portfolio_id, ()),
    )
    decisions = decide_portfolio(
        state,
        MarketData(bars=bars, prices=prices),
        DecisionTick(tick_id=item.tick_id, scheduled_at=item.scheduled_at),
        TradingControls(global_halt=controls.global_halt, quarantined_symbols=controls.quarantined),
    )
    orders, portfolio_events, evaluation_events = _route(item.portfolio_id, item.tick_id, list(decisions.events))
    evaluated = PortfolioEvaluated(
        portfolio_id=item.portfolio_id,
        tick_id=item.tick_id,
        strategies_evaluated=len(strategies),
        signals_generated=decisions.signals_generated,
        trades_requested=decisions.trades_requested,
        orders_refused=decisions.orders_refused,
        strategy_errors=decisions.strategy_errors,
        strategy_failures=decisions.strategy_failures[:20],
        halted=view.halted or decisions.halted_by_daily_loss,
        at=item.scheduled_at,
    )
    # One atomic append (one commit): the orders, a halt, and the evaluation closed by PortfolioEvaluated
    # with NO_STREAM. A second evaluation of the same portfolio and tick (a redelivery, another worker)
    # writes nothing at all, not even orders its own view of the market would have made.
    appends: list[tuple[str, list[NewEvent], int]] = [(order_id, [event], ANY) for order_id, event in orders]
    if portfolio_events:
        appends.append((portfolio_stream(item.portfolio_id), portfolio_events, ANY))
    appends.append((stream, [*evaluation_events, new_event(evaluated, item.portfolio_id, item.tick_id)], NO_STREAM))
    return Evaluation(evaluated, appends)


async def record_evaluation(ctx: ServiceContext, evaluation: Evaluation) -> PortfolioEvaluated | None:
    try:
        await ctx.rt.store.append_many(evaluation.appends)
    except (WrongExpectedVersion, DuplicateEventId):
        return None  # another worker finished the same evaluation first
    return evaluation.evaluated
