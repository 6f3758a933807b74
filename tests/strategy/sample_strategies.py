"""User strategies for the plugin tests (loaded by ``module:function`` path and as entry points)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from services.strategy.strategies import Action, Signal, StrategyInput


class AlwaysParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Action = Action.BUY
    strength: int = Field(default=1, ge=1)


def always(data: StrategyInput) -> Signal:
    params = AlwaysParams.model_validate(dict(data.parameters))
    return Signal(action=params.action, reason=f"always {params.action}")


always.params_model = AlwaysParams  # type: ignore[attr-defined]


def broken(data: StrategyInput) -> Signal:
    raise RuntimeError(f"no data for {data.symbol}")


NOT_A_FUNCTION = 42


def returns_none(data: StrategyInput) -> Signal:
    return None  # type: ignore[return-value]  # a broken user strategy


def exits(data: StrategyInput) -> Signal:
    raise SystemExit(3)


def interrupts(data: StrategyInput) -> Signal:
    raise KeyboardInterrupt


def nan_strength(data: StrategyInput) -> Signal:
    from decimal import Decimal

    return Signal(action=Action.BUY, reason="\x1b[2Jbuy" + "!" * 10_000, strength=Decimal("NaN"))


def loud(data: StrategyInput) -> Signal:
    return Signal(action=Action.BUY, reason="\x1b[31mbuy\x1b[0m\n" + "!" * 10_000)
