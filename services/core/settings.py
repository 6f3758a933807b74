"""Settings from the environment (prefix ``OPENBELL_``), validated by pydantic-settings.

A bad value must stop the program with one line that names the variable, never a traceback:
``load_settings()`` turns pydantic's ValidationError into :class:`SettingsError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "OPENBELL_"


class SettingsError(Exception):
    """A setting from the environment is invalid; the message is one line naming the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # Where the embedded servers keep their data (and the default for everything else local).
    data_dir: Path = Path(".openbell")
    # When unset, openbell starts (or reuses) its own nats-server / PostgreSQL under data_dir.
    nats_url: str | None = None
    database_url: SecretStr | None = None
    # Every subject and stream name derives from this, so two deployments (or two tests) can share a server.
    subject_prefix: str = Field(default="openbell", pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    broker: Literal["sim", "alpaca"] = "sim"
    trading_mode: Literal["paper", "live"] = "paper"
    live_trading: Literal["yes", "no"] = "no"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # How long JetStream remembers a Nats-Msg-Id: duplicates inside it are dropped by the server.
    dedupe_window_seconds: float = Field(default=900.0, gt=0)
    # How long a consumer has to acknowledge a message before JetStream redelivers it (a worker alive
    # keeps extending it): every durable consumer uses it.
    ack_wait_seconds: float = Field(default=30.0, gt=0)
    # How many times a message whose handler fails with an error of its own (not a server being down:
    # those are retried until the server is back) is delivered before it is dead-lettered.
    max_deliver: int = Field(default=5, ge=1)
    # A job run's lease: its worker renews it every third of this while the run goes on; a run whose
    # lease ran out (its worker was killed or is frozen) is taken over by the next delivery of its tick.
    job_takeover_seconds: float = Field(default=10.0, gt=0)
    # An order request that reaches submission longer than this after its tick (by the wall clock, with a
    # broker that trades in real time: Alpaca) is not sent: it was decided on the prices of that tick.
    order_max_age_seconds: float = Field(default=300.0, gt=0)
    # `openbell serve` exposes Prometheus metrics on this port (unset: no metrics server).
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_address: str = "127.0.0.1"

    @field_validator("nats_url")
    @classmethod
    def _nats_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("nats://", "tls://", "ws://", "wss://")):
            raise ValueError("must start with nats://, tls://, ws:// or wss://")
        return value

    @field_validator("database_url")
    @classmethod
    def _pg_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("postgres://", "postgresql://")):
            raise ValueError("must start with postgresql:// or postgres://")
        return value


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise SettingsError with a one-line message on a bad value."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "?"
        variable = f"{ENV_PREFIX}{field.upper()}"
        # Never echo the value: it may be a DSN with a password in it.
        raise SettingsError(f"invalid {variable}: {error['msg']}") from None
