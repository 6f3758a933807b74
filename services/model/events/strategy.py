"""Domain events of portfolios, strategies and the strategy_execution job.

Configuration (risk limits, strategy parameters, sizing) is validated by the pydantic models of
``services.strategy.config`` before any event is made, and stored here as the plain JSON mapping of the
validated model (``model.model_dump(mode="json")``): the event keeps exactly what was accepted, and a
fold re-reads it with ``Model.model_validate``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from services.model.registry import domain_event
from services.model.vocabulary import OrderType, Side, TimedEvent

# ------------------------------------------------------------------------------------------ portfolios


@domain_event
class PortfolioOpened(TimedEvent, frozen=True, kw_only=True):
    portfolio_id: str
    starting_cash: Decimal
    trading_mode: str  # "paper" | "live"
    risk_limits: dict[str, Any]


@domain_event
class PortfolioRiskLimitsChanged(TimedEvent, frozen=True, kw_only=True):
    portfolio_id: str
    risk_limits: dict[str, Any]


@domain_event
class PortfolioHalted(TimedEvent, frozen=True, kw_only=True):
    """No new orders for this portfolio until resumed. ``rule`` names the automatic cause (e.g.
    ``daily_loss_limit``, ``position_sync``), None for an operator's halt."""

    portfolio_id: str
    reason: str
    rule: str | None = None


@domain_event
class PortfolioResumed(TimedEvent, frozen=True, kw_only=True):
    portfolio_id: str
    reason: str = ""


# ------------------------------------------------------------------------------------------ strategies


@domain_event
class StrategyAttached(TimedEvent, frozen=True, kw_only=True):
    portfolio_id: str
    strategy: str  # the strategy's name, unique within the portfolio
    kind: str
    universe: tuple[str, ...]
    parameters: dict[str, Any]
    sizing: dict[str, Any]
    enabled: bool = True
    # How orders are placed: market, or a marketable limit ``limit_offset`` away from the reference.
    order_type: OrderType = OrderType.MARKET
    limit_offset: Decimal = Decimal("0.002")


@domain_event
class StrategyReconfigured(TimedEvent, frozen=True, kw_only=True):
    """A declarative apply changed an attached strategy's kind, universe, parameters or sizing."""

    portfolio_id: str
    strategy: str
    kind: str
    universe: tuple[str, ...]
    parameters: dict[str, Any]
    sizing: dict[str, Any]
    order_type: OrderType = OrderType.MARKET
    limit_offset: Decimal = Decimal("0.002")


@domain_event
class PortfolioEvaluated(TimedEvent, frozen=True, kw_only=True):
    """The strategy_execution of one portfolio at one tick is done (the last event of its evaluation
    stream, which is created once: a portfolio is evaluated once per tick)."""

    portfolio_id: str
    tick_id: str
    strategies_evaluated: int
    signals_generated: int
    trades_requested: int
    orders_refused: int
    strategy_errors: int
    halted: bool
    # Each failed strategy evaluation: "<strategy> on <symbol>: <error>" (at most 20 kept).
    strategy_failures: tuple[str, ...] = ()


@domain_event
class StrategyEnabled(TimedEvent, frozen=True, kw_only=True):
    portfolio_id: str
    strategy: str


@domain_event
class StrategyDisabled(TimedEvent, frozen=True, kw_only=True):
    portfolio_id: str
    strategy: str


# ------------------------------------------------------------------------------------------ global halt


@domain_event
class TradingHalted(TimedEvent, frozen=True, kw_only=True):
    """The global kill switch (``openbell halt``): no portfolio places orders until resumed."""

    reason: str


@domain_event
class TradingResumed(TimedEvent, frozen=True, kw_only=True):
    reason: str = ""


# ------------------------------------------------------------------------------------------ decisions


@domain_event
class SignalGenerated(TimedEvent, frozen=True, kw_only=True):
    portfolio_id: str
    tick_id: str
    strategy: str
    symbol: str
    action: str  # "buy" | "sell" | "hold"
    reason: str
    strength: Decimal | None = None


@domain_event
class OrderRequested(TimedEvent, frozen=True, kw_only=True):
    """A sized, risk-checked order the orders service must submit with exactly this client order id."""

    portfolio_id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType
    limit_price: Decimal | None
    tick_id: str
    strategy: str
    reason: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.qty <= 0:
            raise ValueError(f"OrderRequested.qty must be positive, got {self.qty}")
        if (self.order_type is OrderType.LIMIT) != (self.limit_price is not None):
            raise ValueError("OrderRequested.limit_price is required for limit orders and only for them")


@domain_event
class OrderRejectedByRisk(TimedEvent, frozen=True, kw_only=True):
    """A signal that did not become an order: ``rule`` is the risk rule that refused it."""

    portfolio_id: str
    client_order_id: str  # the id the order would have had (the cause of this refusal)
    tick_id: str
    strategy: str
    symbol: str
    side: Side
    qty: Decimal
    rule: str
    detail: str
