"""Portfolios and strategies as declared by commands and by ``portfolios.toml``, validated.

Everything a user types goes through these models before any event is made; a refusal is a
``ConfigError`` whose message is one line per problem, each naming the field, e.g.::

    portfolio[0].strategy[1].universe[2]: 'aapl' is not a symbol (1-10 upper-case letters or dots, e.g. 'BRK.B')

The file format (see ``examples/portfolios.toml``)::

    [[portfolio]]
    name = "growth"
    starting_cash = "100000"
    trading_mode = "paper"
    risk = { max_order_notional = "10000" }

    [[portfolio.strategy]]
    kind = "ma_crossover"
    universe = ["AAPL", "MSFT"]
    parameters = { fast_window = 10, slow_window = 30 }
    sizing = { method = "fixed_notional", notional = "5000" }
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from typing import Any, Self

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from services.core.limits import MAX_ITEMS, InputRejected, check_json_value, fraction, money
from services.model.events.positions import UNASSIGNED_PORTFOLIO
from services.model.symbols import ConfigError, validate_name, validate_symbol
from services.model.vocabulary import OrderType
from services.strategy.plugins import resolve_strategy
from services.strategy.risk import RiskLimits
from services.strategy.sizing import PercentOfEquity, SizingSpec

MAX_UNIVERSE = 500  # symbols of one strategy
MAX_STRATEGIES = 50  # strategies of one portfolio
MAX_PARAMETERS_BYTES = 4096  # a strategy's parameters, as JSON
# Whether a model is read back from the log (already validated when it was accepted): a stored strategy
# kind is not resolved (nothing is imported while folding), its parameters are taken as stored.
STORED = "stored"


class TradingMode(StrEnum):
    PAPER = "paper"
    LIVE = "live"


class StrategySpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Unique within the portfolio; defaults to the kind (so one strategy of each kind needs no name).
    name: str
    kind: str
    universe: tuple[str, ...] = Field(min_length=1, max_length=MAX_UNIVERSE)
    # Stored normalized (defaults filled in by the strategy's model) so equal configurations are equal.
    parameters: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    sizing: SizingSpec = Field(default_factory=lambda: PercentOfEquity(percent=Decimal(10)))
    enabled: bool = Field(default=True, strict=True)
    order_type: OrderType = OrderType.MARKET
    # For limit orders: how far from the reference price, as a fraction (0.002 = 0.2 %): a buy limit
    # above, a sell limit below, so the order is marketable but bounded.
    limit_offset: Decimal = fraction(default=Decimal("0.002"), ge=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _name_defaults_to_kind(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("name") is None and isinstance(data.get("kind"), str):
            return {**data, "name": data["kind"]}
        return data

    @field_validator("name")
    @classmethod
    def _slug(cls, name: str) -> str:
        return validate_name(name, "strategy")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str, info: ValidationInfo) -> str:
        if not _stored(info):
            resolve_strategy(kind)  # raises UnknownStrategy (a ValueError) listing the known kinds
        return kind

    @field_validator("universe", mode="before")
    @classmethod
    def _symbols(cls, universe: Any) -> Any:
        if isinstance(universe, list | tuple):
            if len(universe) > MAX_UNIVERSE:
                raise ValueError(f"at most {MAX_UNIVERSE} symbols")
            for symbol in universe:
                validate_symbol(symbol)
            duplicates = sorted({s for s in universe if universe.count(s) > 1})
            if duplicates:
                raise ValueError(f"duplicate symbols {', '.join(duplicates)}")
        return universe

    @field_validator("parameters")
    @classmethod
    def _parameters_of_kind(cls, parameters: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind = info.data.get("kind")
        if kind is None or _stored(info):
            return parameters  # the kind itself is invalid (that error is reported instead), or stored
        try:
            check_json_value(parameters, "parameters")
        except InputRejected as exc:
            raise ValueError(str(exc).removeprefix("parameters: ")) from None
        if len(msgspec.json.encode(parameters)) > MAX_PARAMETERS_BYTES:
            raise ValueError(f"at most {MAX_PARAMETERS_BYTES} bytes of JSON")
        return resolve_strategy(kind).validate_parameters(parameters)


def _stored(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get(STORED))


class PortfolioSpec(BaseModel):
    # The file says [[portfolio.strategy]] (one table per strategy); code says .strategies.
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str
    starting_cash: Decimal = money(gt=0)
    trading_mode: TradingMode = TradingMode.PAPER
    risk: RiskLimits = Field(default_factory=RiskLimits)
    strategies: tuple[StrategySpec, ...] = Field(default=(), alias="strategy", max_length=MAX_STRATEGIES)

    @field_validator("name")
    @classmethod
    def _slug(cls, name: str) -> str:
        validate_name(name, "portfolio")
        if name == UNASSIGNED_PORTFOLIO:
            raise ValueError(f"{name!r} is reserved for positions no portfolio owns")
        return name

    @field_validator("starting_cash", mode="before")
    @classmethod
    def _no_float_cash(cls, value: Any) -> Any:
        # A TOML float like 1e5 is fine, but keep its decimal text, not the binary float's digits.
        return Decimal(repr(value)) if isinstance(value, float) else value

    @model_validator(mode="after")
    def _unique_strategy_names(self) -> Self:
        names = [s.name for s in self.strategies]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"strategy names must be unique in a portfolio: {', '.join(duplicates)} (set 'name')")
        return self


class PortfoliosFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    portfolios: tuple[PortfolioSpec, ...] = Field(alias="portfolio", min_length=1, max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _unique_portfolio_names(self) -> Self:
        names = [p.name for p in self.portfolios]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"portfolio names must be unique: {', '.join(duplicates)}")
        return self


def _validate(model: type[BaseModel], data: Mapping[str, Any], what: str) -> Any:
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(f"invalid {what}: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    """Like ``describe_errors``, with list indices written ``[i]`` so a path reads like the file."""
    parts = []
    for error in exc.errors():
        path = ""
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{path}: {message}" if path else message)
    return "; ".join(parts)


def parse_portfolio_spec(data: Mapping[str, Any]) -> PortfolioSpec:
    """A portfolio from a command's payload, or ConfigError."""
    return _validate(PortfolioSpec, data, "portfolio")


def parse_strategy_spec(data: Mapping[str, Any]) -> StrategySpec:
    """A strategy from a command's payload, or ConfigError."""
    return _validate(StrategySpec, data, "strategy")


def load_portfolios_toml(text: str, source: str = "portfolios.toml") -> tuple[PortfolioSpec, ...]:
    """Every portfolio of a ``portfolios.toml``, or ConfigError naming the file and the field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return PortfoliosFile.model_validate(data).portfolios
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None
