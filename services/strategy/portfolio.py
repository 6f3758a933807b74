"""A portfolio as the strategy service sees it: the fold of its stream ``portfolio-<portfolio_id>``.

The stream holds the portfolio's configuration (opened, strategies attached / reconfigured / enabled /
disabled, risk limits, halts) and its books (fills applied, reconciliations). Folding it gives one
consistent view, and its version is the expected version of the next append: commands, the strategy
service and the positions service all write to it without overwriting each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from eventstore import EventStore
from services.core.events import registry
from services.model.accounting import Book
from services.model.events.positions import FillApplied, PositionReconciled
from services.model.events.strategy import (
    PortfolioHalted,
    PortfolioOpened,
    PortfolioResumed,
    PortfolioRiskLimitsChanged,
    StrategyAttached,
    StrategyDisabled,
    StrategyEnabled,
    StrategyReconfigured,
    TradingHalted,
)
from services.model.ledger import evolve_book
from services.model.streams import portfolio_stream
from services.strategy.config import STORED, StrategySpec
from services.strategy.risk import RiskLimits

GLOBAL_TRADING_STREAM = "trading-global"


@dataclass(frozen=True)
class PortfolioView:
    portfolio_id: str
    version: int  # of the portfolio stream: the expected version of the next append
    starting_cash: Decimal
    trading_mode: str
    risk_limits: RiskLimits
    book: Book
    strategies: dict[str, StrategySpec] = field(default_factory=dict)
    halted: bool = False
    halt_reason: str | None = None

    @property
    def enabled_strategies(self) -> tuple[StrategySpec, ...]:
        return tuple(s for s in self.strategies.values() if s.enabled)


def _spec(event: StrategyAttached | StrategyReconfigured, enabled: bool) -> StrategySpec:
    return StrategySpec.model_validate(
        {
            "name": event.strategy,
            "kind": event.kind,
            "universe": list(event.universe),
            "parameters": event.parameters,
            "sizing": event.sizing,
            "enabled": enabled,
            "order_type": event.order_type,
            "limit_offset": event.limit_offset,
        },
        # Accepted when it was attached: not resolved again (nothing is imported while folding the log).
        context={STORED: True},
    )


def fold_portfolio(events: list[tuple[int, Any]], view: PortfolioView | None = None) -> PortfolioView | None:
    """The view after ``(version, event)`` pairs of one portfolio stream, from ``view`` (the view before
    them; None: from the stream's start); None before PortfolioOpened."""
    for version, event in events:
        if isinstance(event, PortfolioOpened):
            view = PortfolioView(
                portfolio_id=event.portfolio_id,
                version=version,
                starting_cash=event.starting_cash,
                trading_mode=event.trading_mode,
                risk_limits=RiskLimits.model_validate(event.risk_limits),
                book=evolve_book(None, event),
            )
            continue
        if view is None:
            continue
        match event:
            case FillApplied() | PositionReconciled():
                view = replace(view, book=evolve_book(view.book, event))
            case StrategyAttached():
                view = replace(view, strategies={**view.strategies, event.strategy: _spec(event, event.enabled)})
            case StrategyReconfigured():
                previous = view.strategies.get(event.strategy)
                enabled = previous.enabled if previous is not None else True
                view = replace(view, strategies={**view.strategies, event.strategy: _spec(event, enabled)})
            case StrategyEnabled() | StrategyDisabled():
                spec = view.strategies.get(event.strategy)
                if spec is not None:
                    updated = spec.model_copy(update={"enabled": isinstance(event, StrategyEnabled)})
                    view = replace(view, strategies={**view.strategies, event.strategy: updated})
            case PortfolioRiskLimitsChanged():
                view = replace(view, risk_limits=RiskLimits.model_validate(event.risk_limits))
            case PortfolioHalted():
                view = replace(view, halted=True, halt_reason=event.reason)
            case PortfolioResumed():
                view = replace(view, halted=False, halt_reason=None)
        view = replace(view, version=version)
    return view


async def load_portfolio(
    store: EventStore, portfolio_id: str, cache: PortfolioViewCache | None = None
) -> PortfolioView | None:
    """The portfolio's view from its stream; with ``cache``, only the events after the cached view are
    read and folded onto it (a portfolio stream grows with every fill: read whole at every tick, a
    year of trading would cost every evaluation thousands of events)."""
    known = cache.get(portfolio_id) if cache is not None else None
    start = known.version + 1 if known is not None else 0
    events = [
        (e.version, registry.decode(e))
        async for e in store.read_stream(portfolio_stream(portfolio_id), from_version=start)
    ]
    view = fold_portfolio(events, known) if events else known
    if cache is not None and view is not None:
        cache.put(view)
    return view


class PortfolioViewCache:
    """The latest view of each portfolio this process has read. A view is immutable and a stream only
    grows, so a cached view is always the stream's state at its version: the next load reads what came
    after it (written by any process) and nothing is ever stale for longer than that read."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._views: dict[str, PortfolioView] = {}

    def get(self, portfolio_id: str) -> PortfolioView | None:
        return self._views.get(portfolio_id)

    def put(self, view: PortfolioView) -> None:
        known = self._views.get(view.portfolio_id)
        if known is not None and known.version >= view.version:
            return  # a concurrent load that read less
        if known is None and len(self._views) >= self.size:
            self._views.pop(next(iter(self._views)))
        self._views[view.portfolio_id] = view


async def global_halt(store: EventStore) -> tuple[bool, int]:
    """Whether trading is halted for everyone (its last switch event), and that stream's version."""
    last = await store.read_last(GLOBAL_TRADING_STREAM)
    if last is None:
        return False, -1
    return isinstance(registry.decode(last), TradingHalted), last.version
