from datetime import timedelta
from decimal import Decimal

import pytest

from services.strategy.strategies import (
    Action,
    InvalidParameters,
    SeriesMemo,
    StrategyInput,
    momentum,
    moving_average_crossover,
    relative_strength_index,
    rsi_mean_reversion,
)
from tests.builders import T0, D, bars_from_closes


def inputs(closes: list[int] | list[str] | list[Decimal], qty: str = "0", **parameters: object) -> StrategyInput:
    bars = bars_from_closes(closes)
    return StrategyInput(
        symbol="AAPL",
        bars=bars,
        position_qty=D(qty),
        avg_cost=None,
        cash=D(10_000),
        parameters=parameters,
        tick_time=(bars[-1].timestamp if bars else T0) + timedelta(minutes=15),
    )


def walk(closes: list[int], qty: str, **parameters: object) -> list[tuple[int, Action]]:
    """Run a strategy bar by bar as the ticks would, holding ``qty`` while long."""
    signals = []
    held = "0"
    for end in range(1, len(closes) + 1):
        signal = moving_average_crossover(inputs(closes[:end], held, **parameters))
        if signal.action is Action.BUY:
            held = qty
        elif signal.action is Action.SELL:
            held = "0"
        if signal.action is not Action.HOLD:
            signals.append((end - 1, signal.action))
    return signals


def test_crossover_buys_on_the_way_up_then_sells_on_the_way_down() -> None:
    closes = [100] * 6 + [101, 103, 106, 110, 115, 118, 119] + [117, 112, 105, 98, 92, 90]
    assert walk(closes, "10", fast_window=2, slow_window=5) == [(6, Action.BUY), (14, Action.SELL)]


def test_crossover_does_not_sell_what_it_does_not_hold() -> None:
    closes = [110, 110, 110, 110, 110, 100]
    signal = moving_average_crossover(inputs(closes, "0", fast_window=2, slow_window=5))
    assert signal.action is Action.HOLD
    assert "no long position" in signal.reason


def test_not_enough_history_is_a_hold_with_the_reason() -> None:
    signal = moving_average_crossover(inputs([1, 2, 3], fast_window=2, slow_window=5))
    assert signal.action is Action.HOLD
    assert signal.reason == "not enough history: 3 bars, need 6"
    assert momentum(inputs([], lookback=3)).reason == "not enough history: 0 bars, need 4"


def test_bad_parameters_are_a_clear_error() -> None:
    with pytest.raises(InvalidParameters, match=r"fast_window \(30\) must be smaller than slow_window \(10\)"):
        moving_average_crossover(inputs([1] * 40, fast_window=30, slow_window=10))
    with pytest.raises(InvalidParameters, match="slow_windo"):
        moving_average_crossover(inputs([1] * 40, slow_windo=10))
    with pytest.raises(InvalidParameters, match="oversold"):
        rsi_mean_reversion(inputs([1] * 40, oversold=80, overbought=70))


def test_rsi_of_known_series() -> None:
    assert relative_strength_index([D(x) for x in [1, 2, 3, 4, 5]], 4) == 100
    assert relative_strength_index([D(x) for x in [5, 4, 3, 2, 1]], 4) == 0
    assert relative_strength_index([D(x) for x in [5, 5, 5, 5, 5]], 4) == 50
    # Gains 2 + 2, losses 1 + 1 over 4 changes: RS = 2, RSI = 100 - 100 / 3.
    rsi = relative_strength_index([D(x) for x in [10, 12, 11, 13, 12]], 4)
    assert abs(rsi - (100 - Decimal(100) / 3)) < Decimal("1e-20")


def test_rsi_buys_oversold_and_sells_overbought_only_when_held() -> None:
    falling = [100 - 2 * i for i in range(20)]
    rising = [100 + 2 * i for i in range(20)]
    assert rsi_mean_reversion(inputs(falling, period=14)).action is Action.BUY
    assert rsi_mean_reversion(inputs(rising, "5", period=14)).action is Action.SELL
    assert rsi_mean_reversion(inputs(rising, "0", period=14)).action is Action.HOLD
    flat_ish = [100, 101] * 10
    assert rsi_mean_reversion(inputs(flat_ish, "5", period=14)).action is Action.HOLD


def test_momentum_follows_the_return_over_the_lookback() -> None:
    up = momentum(inputs([100, 101, 103, 110], lookback=3, threshold="0.05"))
    assert up.action is Action.BUY
    assert up.strength == D("0.1")
    assert momentum(inputs([100, 99, 97, 90], "3", lookback=3, threshold="0.05")).action is Action.SELL
    assert momentum(inputs([100, 101, 102, 104], "3", lookback=3, threshold="0.05")).action is Action.HOLD


def test_results_do_not_depend_on_the_callers_decimal_context() -> None:
    import decimal

    series = [100 + (i * 7) % 13 for i in range(40)]
    expected = relative_strength_index([D(x) for x in series], 14)
    with decimal.localcontext(decimal.Context(prec=5, rounding=decimal.ROUND_DOWN)):
        assert relative_strength_index([D(x) for x in series], 14) == expected


def test_inputs_refuse_naive_times_and_unordered_bars() -> None:
    bars = bars_from_closes([1, 2])
    with pytest.raises(ValueError, match="timezone-aware"):
        StrategyInput(
            symbol="A",
            bars=bars,
            position_qty=D(0),
            avg_cost=None,
            cash=D(0),
            parameters={},
            tick_time=T0.replace(tzinfo=None),
        )
    with pytest.raises(ValueError, match="increasing time order"):
        StrategyInput(
            symbol="A", bars=bars[::-1], position_qty=D(0), avg_cost=None, cash=D(0), parameters={}, tick_time=T0
        )


def test_unordered_bars_are_refused_every_time_not_only_the_first() -> None:
    backwards = bars_from_closes([1, 2, 3])[::-1]
    for _ in range(2):
        with pytest.raises(ValueError, match="increasing time order"):
            StrategyInput(
                symbol="A", bars=backwards, position_qty=D(0), avg_cost=None, cash=D(0), parameters={}, tick_time=T0
            )


def test_series_memo_computes_once_per_tuple_and_never_confuses_two_tuples() -> None:
    memo = SeriesMemo(size=2)
    calls: list[str] = []

    def compute(name: str) -> str:
        calls.append(name)
        return name

    first, second, third = (bars_from_closes([i, i + 1]) for i in (1, 2, 3))
    assert memo.get(first, "k", lambda: compute("first")) == "first"
    assert memo.get(first, "k", lambda: compute("again")) == "first"  # remembered
    assert memo.get(first, "other", lambda: compute("other")) == "other"  # keys are separate
    assert memo.get(second, "k", lambda: compute("second")) == "second"
    assert memo.get(third, "k", lambda: compute("third")) == "third"  # evicts the oldest tuple
    assert memo.get(first, "k", lambda: compute("recomputed")) == "recomputed"
    # An equal tuple that is another object is another entry: identity, never a stale result.
    assert memo.get(bars_from_closes([3, 4]), "k", lambda: compute("equal")) == "equal"
    assert calls == ["first", "other", "second", "third", "recomputed", "equal"]


def test_signals_are_the_same_with_a_shared_bars_tuple_as_with_fresh_copies() -> None:
    closes = [100 + (i * 37) % 23 - (i // 10) for i in range(80)]
    shared = bars_from_closes(closes)
    for strategy, parameters in (
        (rsi_mean_reversion, {"period": 7, "oversold": "45", "overbought": "55"}),
        (moving_average_crossover, {"fast_window": 3, "slow_window": 8}),
        (momentum, {"lookback": 5, "threshold": "0.01"}),
    ):
        for end in range(2, len(closes)):
            fresh = inputs(closes[:end], "5", **parameters)
            reused = StrategyInput(
                symbol="AAPL", bars=shared[:end], position_qty=D(5), avg_cost=None, cash=D(10_000),
                parameters=parameters, tick_time=fresh.tick_time,
            )
            assert strategy(reused) == strategy(reused) == strategy(fresh)
