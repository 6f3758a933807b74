"""Strategies: pure functions of (bars, position, cash, parameters, tick time) -> BUY / SELL / HOLD.

A strategy never reads a clock, a file or the network: everything it may use is in ``StrategyInput``,
which makes a replay or a simulation give the same signals as the live run.

Indicators are computed in Decimal under a fixed context (28 digits, half-even), whatever the calling
thread's decimal context is, so results are identical on every machine.

Each built-in validates its parameters with a pydantic model (``params_model``); a bad value is a
``ValueError`` naming the parameter. Not enough history is not an error: it is HOLD with the reason.

Every portfolio of one tick reads the same bars tuple per symbol (the strategy service's market data
cache), so what depends on the bars alone (their order check, the closes, an indicator) is computed once
per tuple and reused through ``series_memo``: the results are the same, a 1,000-portfolio tick just
does not compute them 1,000 times.
"""

from __future__ import annotations

import decimal
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from itertools import pairwise
from typing import Any, TypeVar, cast

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.core.limits import fraction
from services.model.market import Bar
from services.model.vocabulary import require_aware

ZERO = Decimal(0)
_CONTEXT = decimal.Context(prec=28, rounding=decimal.ROUND_HALF_EVEN)
_STRENGTH_QUANTUM = Decimal("0.000001")


class Action(StrEnum):
    BUY = "buy"
    SELL = "sell"
    HOLD = "hold"


class Signal(msgspec.Struct, frozen=True, kw_only=True):
    action: Action
    reason: str
    strength: Decimal | None = None  # how far past its threshold the indicator is (strategy-specific)

    @classmethod
    def hold(cls, reason: str) -> Signal:
        return cls(action=Action.HOLD, reason=reason)


R = TypeVar("R")


class SeriesMemo:
    """Results of pure functions of one bars tuple, remembered by the tuple's identity.

    An entry keeps its tuple referenced, so the tuple's id cannot be reused by another object while the
    entry exists; the oldest entries go first once ``size`` tuples are remembered. A tuple is immutable
    and so are Bars: a result computed from it stays right for as long as the tuple lives."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._entries: OrderedDict[int, tuple[tuple[Bar, ...], dict[Hashable, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, bars: tuple[Bar, ...], key: Hashable, compute: Callable[[], R]) -> R:
        with self._lock:
            entry = self._entries.get(id(bars))
            if entry is None or entry[0] is not bars:
                entry = self._entries[id(bars)] = (bars, {})
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
            results = entry[1]
            if key in results:
                return cast(R, results[key])
        value = compute()  # outside the lock: a pure function, at worst computed twice
        with self._lock:
            results[key] = value
        return value


series_memo = SeriesMemo()


def _check_order(symbol: str, bars: Sequence[Bar]) -> bool:
    for earlier, later in pairwise(bars):
        if later.timestamp <= earlier.timestamp:
            raise ValueError(f"bars of {symbol} must be in increasing time order")
    return True


class StrategyInput(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    bars: tuple[Bar, ...]  # oldest first, completed bars only
    position_qty: Decimal  # signed
    avg_cost: Decimal | None
    cash: Decimal
    parameters: Mapping[str, Any]
    tick_time: datetime

    def __post_init__(self) -> None:
        require_aware(self.tick_time, "StrategyInput.tick_time")
        bars = self.bars if isinstance(self.bars, tuple) else tuple(self.bars)
        if bars is not self.bars:
            msgspec.structs.force_setattr(self, "bars", bars)
        # A failed check raises and so is never remembered.
        series_memo.get(bars, "ordered", lambda: _check_order(self.symbol, bars))

    @property
    def closes(self) -> tuple[Decimal, ...]:
        return series_memo.get(self.bars, "closes", lambda: tuple(bar.close for bar in self.bars))


StrategyFunction = Callable[[StrategyInput], Signal]


class StrategyParameters(BaseModel):
    """Base of the built-in parameter models: unknown parameters are refused (typos are errors)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


P = TypeVar("P", bound=StrategyParameters)


class InvalidParameters(ValueError):
    pass


def parse_parameters(model: type[P], parameters: Mapping[str, Any], kind: str) -> P:
    """Validate ``parameters`` with ``model``; the error is one line naming each bad parameter."""
    try:
        return model.model_validate(dict(parameters))
    except ValidationError as exc:
        raise InvalidParameters(f"invalid parameters for strategy {kind!r}: {describe_errors(exc)}") from None


def describe_errors(exc: ValidationError) -> str:
    """A pydantic error as one line: ``field: message; other.field: message``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _sma(values: Sequence[Decimal]) -> Decimal:
    return sum(values, ZERO) / len(values)


def _strength(value: Decimal) -> Decimal:
    return value.quantize(_STRENGTH_QUANTUM)


# ------------------------------------------------------------------------------------------ MA crossover


class MovingAverageCrossoverParams(StrategyParameters):
    fast_window: int = Field(default=10, ge=1, le=500)
    slow_window: int = Field(default=30, ge=2, le=1000)

    @model_validator(mode="after")
    def _fast_below_slow(self) -> MovingAverageCrossoverParams:
        if self.fast_window >= self.slow_window:
            raise ValueError(f"fast_window ({self.fast_window}) must be smaller than slow_window ({self.slow_window})")
        return self


def moving_average_crossover(data: StrategyInput) -> Signal:
    """BUY when the fast simple moving average crosses above the slow one; SELL when it crosses below
    and we hold a long position."""
    params = parse_parameters(MovingAverageCrossoverParams, data.parameters, "ma_crossover")
    closes = data.closes
    needed = params.slow_window + 1  # the averages now and one bar earlier
    if len(closes) < needed:
        return Signal.hold(f"not enough history: {len(closes)} bars, need {needed}")
    with decimal.localcontext(_CONTEXT):
        fast_now = _sma(closes[-params.fast_window :])
        slow_now = _sma(closes[-params.slow_window :])
        fast_before = _sma(closes[-params.fast_window - 1 : -1])
        slow_before = _sma(closes[-params.slow_window - 1 : -1])
        spread = _strength((fast_now - slow_now) / slow_now) if slow_now else None
    if fast_before <= slow_before and fast_now > slow_now:
        return Signal(
            action=Action.BUY, reason=f"fast SMA {fast_now:.4f} crossed above slow {slow_now:.4f}", strength=spread
        )
    if fast_before >= slow_before and fast_now < slow_now:
        if data.position_qty > 0:
            return Signal(
                action=Action.SELL, reason=f"fast SMA {fast_now:.4f} crossed below slow {slow_now:.4f}", strength=spread
            )
        return Signal.hold("fast SMA crossed below slow, no long position to sell")
    side = "above" if fast_now > slow_now else "below" if fast_now < slow_now else "equal to"
    return Signal.hold(f"no crossover (fast SMA {side} slow)")


# ------------------------------------------------------------------------------------------ RSI


class RsiMeanReversionParams(StrategyParameters):
    period: int = Field(default=14, ge=2, le=500)
    oversold: Decimal = fraction(default=Decimal(30), gt=0, lt=100)
    overbought: Decimal = fraction(default=Decimal(70), gt=0, lt=100)

    @model_validator(mode="after")
    def _oversold_below_overbought(self) -> RsiMeanReversionParams:
        if self.oversold >= self.overbought:
            raise ValueError(f"oversold ({self.oversold}) must be below overbought ({self.overbought})")
        return self


def relative_strength_index(closes: Sequence[Decimal], period: int) -> Decimal:
    """Wilder's RSI (0..100) of the last close, smoothing over every close given. Needs period + 1."""
    if len(closes) < period + 1:
        raise ValueError(f"RSI({period}) needs {period + 1} closes, got {len(closes)}")
    with decimal.localcontext(_CONTEXT):
        changes = [later - earlier for earlier, later in pairwise(closes)]
        avg_gain = sum((c for c in changes[:period] if c > 0), ZERO) / period
        avg_loss = sum((-c for c in changes[:period] if c < 0), ZERO) / period
        kept = period - 1
        # Wilder's smoothing; a side without a move this bar only decays (x * kept + 0 is x * kept).
        for change in changes[period:]:
            if change > 0:
                avg_gain = (avg_gain * kept + change) / period
                avg_loss = avg_loss * kept / period
            else:
                avg_gain = avg_gain * kept / period
                avg_loss = (avg_loss * kept - change) / period
        if avg_loss == 0:
            return Decimal(50) if avg_gain == 0 else Decimal(100)
        return 100 - 100 / (1 + avg_gain / avg_loss)


def rsi_mean_reversion(data: StrategyInput) -> Signal:
    """BUY when the RSI is below ``oversold``; SELL when it is above ``overbought`` and we hold."""
    params = parse_parameters(RsiMeanReversionParams, data.parameters, "rsi_mean_reversion")
    closes = data.closes
    if len(closes) < params.period + 1:
        return Signal.hold(f"not enough history: {len(closes)} bars, need {params.period + 1}")
    rsi = series_memo.get(data.bars, ("rsi", params.period), lambda: relative_strength_index(closes, params.period))
    shown = f"{rsi:.2f}"
    if rsi < params.oversold:
        strength = _strength((params.oversold - rsi) / 100)
        return Signal(action=Action.BUY, reason=f"RSI {shown} below oversold {params.oversold}", strength=strength)
    if rsi > params.overbought:
        if data.position_qty > 0:
            strength = _strength((rsi - params.overbought) / 100)
            return Signal(
                action=Action.SELL, reason=f"RSI {shown} above overbought {params.overbought}", strength=strength
            )
        return Signal.hold(f"RSI {shown} above overbought, no long position to sell")
    return Signal.hold(f"RSI {shown} within [{params.oversold}, {params.overbought}]")


# ------------------------------------------------------------------------------------------ momentum


class MomentumParams(StrategyParameters):
    lookback: int = Field(default=20, ge=1, le=1000)
    threshold: Decimal = fraction(default=Decimal("0.05"), gt=0, lt=10)  # a fraction: 0.05 = 5 %


def momentum(data: StrategyInput) -> Signal:
    """BUY when the return over ``lookback`` bars exceeds ``threshold``; SELL when it is below
    ``-threshold`` and we hold."""
    params = parse_parameters(MomentumParams, data.parameters, "momentum")
    closes = data.closes
    if len(closes) < params.lookback + 1:
        return Signal.hold(f"not enough history: {len(closes)} bars, need {params.lookback + 1}")
    past = closes[-params.lookback - 1]
    if past <= 0:
        return Signal.hold(f"no usable price {params.lookback} bars ago")
    with decimal.localcontext(_CONTEXT):
        change = closes[-1] / past - 1
    shown = f"{change * 100:.2f}%"
    if change > params.threshold:
        return Signal(
            action=Action.BUY, reason=f"return {shown} over {params.lookback} bars", strength=_strength(change)
        )
    if change < -params.threshold:
        if data.position_qty > 0:
            return Signal(
                action=Action.SELL, reason=f"return {shown} over {params.lookback} bars", strength=_strength(-change)
            )
        return Signal.hold(f"return {shown} below -threshold, no long position to sell")
    return Signal.hold(f"return {shown} within +/-{params.threshold * 100}%")
