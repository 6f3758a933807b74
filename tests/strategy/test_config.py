from pathlib import Path

import pytest

from services.strategy.config import ConfigError, load_portfolios_toml, parse_portfolio_spec, parse_strategy_spec
from services.strategy.sizing import FixedNotional, PercentOfEquity
from tests.builders import D

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "portfolios.toml"


def test_the_example_file_parses() -> None:
    portfolios = load_portfolios_toml(EXAMPLE.read_text(), str(EXAMPLE))
    assert [p.name for p in portfolios] == ["trend", "contrarian"]
    trend = portfolios[0]
    assert trend.starting_cash == D(100_000)
    assert trend.risk.daily_loss_limit == D("0.03")
    assert [s.name for s in trend.strategies] == ["ma_crossover", "breakouts"]
    assert trend.strategies[0].parameters == {"fast_window": 10, "slow_window": 30}
    assert isinstance(trend.strategies[0].sizing, FixedNotional)
    assert trend.strategies[1].order_type == "limit"
    assert portfolios[1].strategies[0].enabled is False


def strategy(**changes: object) -> dict[str, object]:
    return {"kind": "ma_crossover", "universe": ["AAPL"], **changes}


def portfolio(**changes: object) -> dict[str, object]:
    return {"name": "growth", "starting_cash": "1000", **changes}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (portfolio(starting_cash="-5"), "starting_cash: Input should be greater than 0"),
        (portfolio(name="My Portfolio"), "name: portfolio name 'My Portfolio' must be"),
        (portfolio(name="unassigned"), "'unassigned' is reserved"),
        (portfolio(trading_mode="real"), "trading_mode: Input should be 'paper' or 'live'"),
        (
            portfolio(strategy=[strategy(kind="macd")]),
            "strategy[0].kind: unknown strategy kind 'macd': known kinds are",
        ),
        (portfolio(strategy=[strategy(universe=["AAPL", "aapl"])]), "'aapl' is not a symbol"),
        (
            portfolio(strategy=[strategy(universe=["TOOLONGSYMBOL"])]),
            "strategy[0].universe: 'TOOLONGSYMBOL' is not a symbol",
        ),
        (portfolio(strategy=[strategy(universe=["AAPL", "AAPL"])]), "duplicate symbols AAPL"),
        (portfolio(strategy=[strategy(universe=[])]), "strategy[0].universe"),
        (
            portfolio(strategy=[strategy(parameters={"fast_window": 30, "slow_window": 10})]),
            "strategy[0].parameters: invalid parameters for strategy 'ma_crossover': fast_window (30) must be smaller",
        ),
        (portfolio(strategy=[strategy(sizing={"method": "all_in"})]), "strategy[0].sizing"),
        (portfolio(strategy=[strategy(), strategy()]), "strategy names must be unique in a portfolio: ma_crossover"),
        (portfolio(risk={"max_position_weight": "1.5"}), "risk.max_position_weight"),
        (portfolio(cash="1"), "cash: Extra inputs are not permitted"),
    ],
)
def test_invalid_input_is_refused_with_one_line_naming_the_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_portfolio_spec(data)
    text = str(error.value)
    assert message in text
    assert "\n" not in text


def test_parameters_are_stored_normalized_with_defaults() -> None:
    spec = parse_strategy_spec({"kind": "rsi_mean_reversion", "universe": ["BRK.B"], "parameters": {"period": 7}})
    assert spec.parameters == {"period": 7, "oversold": "30", "overbought": "70"}
    assert spec.name == "rsi_mean_reversion"
    assert isinstance(spec.sizing, PercentOfEquity)


def test_toml_errors_name_the_file_and_the_field() -> None:
    text = '[[portfolio]]\nname = "x"\nstarting_cash = -1\n'
    with pytest.raises(ConfigError, match=r"^my\.toml: portfolio\[0\]\.starting_cash: Input should be greater than 0"):
        load_portfolios_toml(text, "my.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_portfolios_toml("[[portfolio]\n", "my.toml")
    with pytest.raises(ConfigError, match="portfolio"):
        load_portfolios_toml("", "my.toml")
    with pytest.raises(ConfigError, match="portfolio names must be unique: x"):
        load_portfolios_toml(
            '[[portfolio]]\nname = "x"\nstarting_cash = 1\n[[portfolio]]\nname = "x"\nstarting_cash = 2\n'
        )


def test_float_cash_keeps_its_decimal_text() -> None:
    assert parse_portfolio_spec(portfolio(starting_cash=1000.1)).starting_cash == D("1000.1")
