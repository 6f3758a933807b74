"""Portfolio and strategy commands: validate, decide the events (pure), append them.

The same functions serve the CLI (``openbell portfolio ...``, ``openbell apply``) and the strategy
service's NATS request/reply handlers (``<prefix>.cmd.portfolio.*``). Invalid input raises ConfigError or
CommandRefused with a clear message and appends nothing. Event ids derive from the portfolio, the stream
version the decision was made on, and what changed, so repeating a command (or a retried request) is a
no-op, and two concurrent commands cannot both apply to the same version.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventstore import NO_STREAM, EventStore, NewEvent, WrongExpectedVersion
from services.core.events import new_event
from services.core.limits import reason_text
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
    TradingResumed,
)
from services.model.streams import portfolio_stream
from services.strategy.config import ConfigError, PortfolioSpec, StrategySpec, parse_strategy_spec, validate_name
from services.strategy.portfolio import (
    GLOBAL_TRADING_STREAM,
    PortfolioView,
    global_halt,
    load_portfolio,
)


class CommandRefused(ValueError):
    """The command is valid but cannot apply to the current state (e.g. unknown portfolio)."""


@dataclass(frozen=True)
class CommandResult:
    portfolio_id: str | None
    changes: tuple[str, ...]  # human-readable, one per event appended (empty: nothing to do)


# ----------------------------------------------------------------------------------------- planning


def check_trading_mode(spec: PortfolioSpec, process_mode: str) -> None:
    """A portfolio's mode must be the mode of the processes that trade it (OPENBELL_TRADING_MODE): a
    "live" portfolio in a paper deployment (or the reverse) would claim what nothing does."""
    if spec.trading_mode.value != process_mode:
        raise ConfigError(
            f"portfolio {spec.name}: trading_mode {spec.trading_mode.value} does not agree with"
            f" OPENBELL_TRADING_MODE={process_mode} of this deployment"
        )


def _strategy_config(spec: StrategySpec) -> dict[str, Any]:
    return {
        "kind": spec.kind,
        "universe": tuple(spec.universe),
        "parameters": spec.parameters,
        "sizing": spec.sizing.model_dump(mode="json"),
        "order_type": spec.order_type,
        "limit_offset": spec.limit_offset,
    }


def _same_strategy(a: StrategySpec, b: StrategySpec) -> bool:
    return _strategy_config(a) == _strategy_config(b)


def plan_strategy(view: PortfolioView, spec: StrategySpec, at: datetime) -> list[tuple[Any, str]]:
    """Events that make the portfolio's strategy ``spec.name`` equal to ``spec``."""
    pid = view.portfolio_id
    current = view.strategies.get(spec.name)
    planned: list[tuple[Any, str]] = []
    if current is None:
        planned.append(
            (
                StrategyAttached(
                    portfolio_id=pid, strategy=spec.name, enabled=spec.enabled, at=at, **_strategy_config(spec)
                ),
                f"attach strategy {spec.name} ({spec.kind} on {', '.join(spec.universe)})",
            )
        )
        return planned
    if not _same_strategy(current, spec):
        planned.append(
            (
                StrategyReconfigured(portfolio_id=pid, strategy=spec.name, at=at, **_strategy_config(spec)),
                f"reconfigure strategy {spec.name}",
            )
        )
    if current.enabled != spec.enabled:
        event_type = StrategyEnabled if spec.enabled else StrategyDisabled
        planned.append(
            (
                event_type(portfolio_id=pid, strategy=spec.name, at=at),
                f"{'enable' if spec.enabled else 'disable'} strategy {spec.name}",
            )
        )
    return planned


def plan_apply(view: PortfolioView | None, spec: PortfolioSpec, at: datetime) -> list[tuple[Any, str]]:
    """Pure: the events that bring the portfolio to ``spec`` (create it, or update what changed).
    Strategies not in the spec are left alone (declarative files add and change; disabling is explicit)."""
    planned: list[tuple[Any, str]] = []
    if view is None:
        planned.append(
            (
                PortfolioOpened(
                    portfolio_id=spec.name,
                    starting_cash=spec.starting_cash,
                    trading_mode=spec.trading_mode.value,
                    risk_limits=spec.risk.model_dump(mode="json"),
                    at=at,
                ),
                f"open portfolio {spec.name} with {spec.starting_cash} cash ({spec.trading_mode.value})",
            )
        )
        for strategy in spec.strategies:
            planned.append(
                (
                    StrategyAttached(
                        portfolio_id=spec.name,
                        strategy=strategy.name,
                        enabled=strategy.enabled,
                        at=at,
                        **_strategy_config(strategy),
                    ),
                    f"attach strategy {strategy.name} ({strategy.kind} on {', '.join(strategy.universe)})",
                )
            )
        return planned
    if view.starting_cash != spec.starting_cash:
        raise CommandRefused(
            f"portfolio {spec.name}: starting_cash is {view.starting_cash}"
            f" and cannot be changed to {spec.starting_cash}"
        )
    if view.risk_limits != spec.risk:
        planned.append(
            (
                PortfolioRiskLimitsChanged(
                    portfolio_id=spec.name, risk_limits=spec.risk.model_dump(mode="json"), at=at
                ),
                f"change risk limits of {spec.name}",
            )
        )
    working = view
    for strategy in spec.strategies:
        planned.extend(plan_strategy(working, strategy, at))
    return planned


# -------------------------------------------------------------------------------------------- append


async def _append_planned(
    store: EventStore,
    portfolio_id: str,
    plan: Callable[[PortfolioView | None], list[tuple[Any, str]]],
) -> CommandResult:
    """Fold, plan, append with the folded version; on a concurrent change fold again and re-plan."""
    for _ in range(10):
        view = await load_portfolio(store, portfolio_id)
        planned = plan(view)
        if not planned:
            return CommandResult(portfolio_id, ())
        version = NO_STREAM if view is None else view.version
        events: list[NewEvent] = [
            new_event(event, portfolio_id, str(version), str(i)) for i, (event, _) in enumerate(planned)
        ]
        try:
            await store.append(portfolio_stream(portfolio_id), events, version)
        except WrongExpectedVersion:
            continue
        return CommandResult(portfolio_id, tuple(text for _, text in planned))
    raise CommandRefused(f"portfolio {portfolio_id} is changing too fast; try again")


def _existing(view: PortfolioView | None, portfolio_id: str) -> PortfolioView:
    if view is None:
        raise CommandRefused(f"no portfolio named {portfolio_id!r} (open it first: openbell portfolio open)")
    return view


async def apply_portfolio(store: EventStore, spec: PortfolioSpec, at: datetime) -> CommandResult:
    return await _append_planned(store, spec.name, lambda view: plan_apply(view, spec, at))


async def apply_all(store: EventStore, specs: Sequence[PortfolioSpec], at: datetime) -> list[CommandResult]:
    return [await apply_portfolio(store, spec, at) for spec in specs]


async def open_portfolio(store: EventStore, spec: PortfolioSpec, at: datetime) -> CommandResult:
    def plan(view: PortfolioView | None) -> list[tuple[Any, str]]:
        if view is not None:
            raise CommandRefused(f"portfolio {spec.name!r} already exists")
        return plan_apply(None, spec, at)

    return await _append_planned(store, spec.name, plan)


async def attach_strategy(store: EventStore, portfolio_id: str, data: dict[str, Any], at: datetime) -> CommandResult:
    validate_name(portfolio_id, "portfolio")
    spec = parse_strategy_spec(data)
    return await _append_planned(
        store, portfolio_id, lambda view: plan_strategy(_existing(view, portfolio_id), spec, at)
    )


async def set_strategy_enabled(
    store: EventStore, portfolio_id: str, strategy: str, enabled: bool, at: datetime
) -> CommandResult:
    validate_name(portfolio_id, "portfolio")
    validate_name(strategy, "strategy")

    def plan(view: PortfolioView | None) -> list[tuple[Any, str]]:
        current = _existing(view, portfolio_id).strategies.get(strategy)
        if current is None:
            raise CommandRefused(f"portfolio {portfolio_id} has no strategy named {strategy!r}")
        if current.enabled == enabled:
            return []
        event_type = StrategyEnabled if enabled else StrategyDisabled
        return [
            (
                event_type(portfolio_id=portfolio_id, strategy=strategy, at=at),
                f"{'enable' if enabled else 'disable'} strategy {strategy}",
            )
        ]

    return await _append_planned(store, portfolio_id, plan)


async def set_portfolio_halted(
    store: EventStore, portfolio_id: str, halted: bool, reason: str, at: datetime
) -> CommandResult:
    validate_name(portfolio_id, "portfolio")
    reason = reason_text(reason)

    def plan(view: PortfolioView | None) -> list[tuple[Any, str]]:
        if _existing(view, portfolio_id).halted == halted:
            return []
        if halted:
            return [
                (
                    PortfolioHalted(portfolio_id=portfolio_id, reason=reason or "operator", rule=None, at=at),
                    f"halt portfolio {portfolio_id}",
                )
            ]
        return [(PortfolioResumed(portfolio_id=portfolio_id, reason=reason, at=at), f"resume portfolio {portfolio_id}")]

    return await _append_planned(store, portfolio_id, plan)


async def set_global_halt(store: EventStore, halted: bool, reason: str, at: datetime) -> CommandResult:
    reason = reason_text(reason)
    for _ in range(10):
        current, version = await global_halt(store)
        if current == halted:
            return CommandResult(None, ())
        event: Any = (
            TradingHalted(reason=reason or "operator", at=at) if halted else TradingResumed(reason=reason, at=at)
        )
        try:
            await store.append(GLOBAL_TRADING_STREAM, [new_event(event, str(version))], version)
        except WrongExpectedVersion:
            continue
        return CommandResult(None, ("halt all trading" if halted else "resume trading",))
    raise CommandRefused("the global trading switch is changing too fast; try again")


__all__ = [
    "CommandRefused",
    "CommandResult",
    "ConfigError",
    "apply_all",
    "apply_portfolio",
    "attach_strategy",
    "check_trading_mode",
    "open_portfolio",
    "plan_apply",
    "set_global_halt",
    "set_portfolio_halted",
    "set_strategy_enabled",
]
