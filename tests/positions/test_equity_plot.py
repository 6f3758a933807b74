"""The equity plot's series: trading days as positions (a weekend is no gap), the starting cash as the
baseline, ``--percent`` as the change from it; and the PNG it draws."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

from services.positions.cli import draw_equity_curve, equity_series

ROWS = [
    {"portfolio_id": "a", "trading_day": date(2026, 11, 27), "total_value": Decimal("101000"),
     "starting_cash": Decimal("100000")},
    {"portfolio_id": "a", "trading_day": date(2026, 11, 30), "total_value": Decimal("99500"),
     "starting_cash": Decimal("100000")},
    {"portfolio_id": "b", "trading_day": date(2026, 11, 30), "total_value": Decimal("50500"),
     "starting_cash": Decimal("50000")},
]


def test_days_are_positions_and_the_starting_cash_is_the_baseline() -> None:
    series = equity_series(ROWS)
    assert series.days == [date(2026, 11, 27), date(2026, 11, 30)]  # Friday then Monday: adjacent
    assert series.curves == {"a": [101000.0, 99500.0], "b": [None, 50500.0]}
    assert series.baselines == {"a": 100000.0, "b": 50000.0}


def test_percent_is_the_change_from_the_starting_cash() -> None:
    series = equity_series(ROWS, percent=True)
    assert series.curves == {"a": [1.0, -0.5], "b": [None, 1.0]}
    assert series.baselines == {"a": 0.0, "b": 0.0}


def test_one_day_draws(tmp_path: Path) -> None:
    for percent in (False, True):
        path = tmp_path / f"curve-{percent}.png"
        draw_equity_curve(ROWS[:1], path, percent=percent)
        assert path.read_bytes().startswith(b"\x89PNG")
