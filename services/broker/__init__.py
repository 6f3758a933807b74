"""The broker layer: one async Broker protocol, an Alpaca adapter and a persisted simulator.

``create_broker()`` picks the implementation from ``OPENBELL_BROKER`` (``sim`` by default, or ``alpaca``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.broker.errors import BrokerConfigError
from services.broker.protocol import Broker
from services.broker.simulator import SimBroker, SimConfig, SimFaults, wall_clock
from services.broker.simulator.engine import FillPolicy

__all__ = ["Broker", "BrokerSettings", "check_trading_configuration", "create_broker"]


class BrokerSettings(BaseSettings):
    """Which broker, and the simulator's knobs (``OPENBELL_SIM_*``). Alpaca's own settings: AlpacaSettings."""

    model_config = SettingsConfigDict(env_prefix="OPENBELL_", extra="ignore", frozen=True)

    broker: Literal["sim", "alpaca"] = "sim"
    database_url: SecretStr | None = None
    sim_seed: int = 1
    sim_starting_cash: Decimal = Field(default=Decimal("100000"), ge=0)
    sim_fill_latency_seconds: float = Field(default=2.0, gt=0)
    sim_partial_fill_steps: int = Field(default=1, ge=1)
    # Fault injection, per operation name or "*" (JSON in the environment, e.g. '{"submit_order": 0.1}').
    sim_fault_error_rate: dict[str, float] = Field(default_factory=dict)
    sim_fault_rate_limit_rate: dict[str, float] = Field(default_factory=dict)
    sim_fault_latency_seconds: dict[str, float] = Field(default_factory=dict)
    sim_fault_hang: frozenset[str] = frozenset()
    sim_fault_hang_seconds: float = Field(default=30.0, gt=0)
    sim_fault_lost_submit_rate: float = Field(default=0.0, ge=0, le=1)


def sim_config_from(settings: BrokerSettings) -> SimConfig:
    return SimConfig(
        seed=settings.sim_seed,
        starting_cash=settings.sim_starting_cash,
        fill_policy=FillPolicy(
            fill_latency=timedelta(seconds=settings.sim_fill_latency_seconds),
            partial_fill_steps=settings.sim_partial_fill_steps,
        ),
        faults=SimFaults(
            error_rate=settings.sim_fault_error_rate,
            rate_limit_rate=settings.sim_fault_rate_limit_rate,
            latency_seconds=settings.sim_fault_latency_seconds,
            hang=settings.sim_fault_hang,
            hang_seconds=settings.sim_fault_hang_seconds,
            lost_submit_response_rate=settings.sim_fault_lost_submit_rate,
        ),
    )


def check_trading_configuration() -> None:
    """What a process that may trade checks at start, before anything runs: the live gate (live mode
    needs OPENBELL_LIVE_TRADING=yes; any broker host but Alpaca's paper host needs both; https beyond
    this machine) and, for Alpaca, its keys. BrokerConfigError with one line, never a value."""
    try:
        settings = BrokerSettings()
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "?"
        raise BrokerConfigError(f"invalid OPENBELL_{field.upper()}: {error['msg']}") from None
    from services.broker.alpaca import check_live_gate, check_settings, load_alpaca_settings

    alpaca = load_alpaca_settings()
    check_live_gate(alpaca)  # OPENBELL_TRADING_MODE / OPENBELL_LIVE_TRADING, whichever the broker
    if settings.broker == "alpaca":
        check_settings(alpaca)


def reports_exchange_calendar(broker: str) -> bool:
    """Whether the configured broker has an exchange calendar of its own to cross-check ours against
    (Alpaca's; the simulator's calendar is ours). ``broker`` is the OPENBELL_BROKER setting."""
    return broker == "alpaca"


async def create_broker(
    settings: BrokerSettings | None = None,
    *,
    dsn: str | None = None,
    now: Callable[[], datetime] | None = None,
) -> Broker:
    """Build the configured broker. The simulator needs a PostgreSQL DSN (``dsn`` or
    ``OPENBELL_DATABASE_URL``) and takes ``now`` (simulated time; the wall clock if omitted)."""
    try:
        settings = settings or BrokerSettings()
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "?"
        raise BrokerConfigError(f"invalid OPENBELL_{field.upper()}: {error['msg']}") from None
    if settings.broker == "alpaca":
        from services.broker.alpaca import AlpacaBroker, load_alpaca_settings

        return AlpacaBroker(load_alpaca_settings())
    dsn = dsn or (settings.database_url.get_secret_value() if settings.database_url else None)
    if dsn is None:
        raise BrokerConfigError("the simulator broker needs a database (OPENBELL_DATABASE_URL)")
    return await SimBroker.connect(dsn, sim_config_from(settings), now or wall_clock)
