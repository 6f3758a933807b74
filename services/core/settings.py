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
    # When unset, openbell starts (or reuses) its own nats-server / PostgreSQL under data_dir. Several NATS
    # URLs (comma-separated: the servers of a cluster) are all given to every connection, which fails over.
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
    # keeps extending it), and how long a job run started by a worker that died blocks its tick.
    ack_wait_seconds: float = Field(default=30.0, gt=0)
    job_takeover_seconds: float = Field(default=120.0, gt=0)
    # Copies of each JetStream stream in a NATS cluster (3 survives the loss of one server; 1: one server).
    stream_replicas: int = Field(default=1, ge=1, le=5)
    # An order request that reaches submission longer than this after its tick (by the wall clock, with a
    # broker that trades in real time: Alpaca) is not sent: it was decided on the prices of that tick.
    order_max_age_seconds: float = Field(default=300.0, gt=0)
    # `openbell serve` exposes Prometheus metrics on this port (unset: no metrics server).
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_address: str = "127.0.0.1"
    # `openbell serve web`: the dashboard and HTTP API. Read-only unless a token is set: operator actions
    # (halt, resume, enable a job) need it in the X-Openbell-Token header (or the dashboard's login).
    web_port: int = Field(default=8080, ge=0, le=65535)
    web_address: str = "127.0.0.1"
    web_token: SecretStr | None = None
    # `openbell serve` logs a heartbeat line (services, market, next ticks) at start and this often.
    heartbeat_seconds: float = Field(default=300.0, gt=0)

    @field_validator("nats_url")
    @classmethod
    def _nats_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        urls = split_nats_urls(value)
        if not urls or not all(url.startswith(("nats://", "tls://", "ws://", "wss://")) for url in urls):
            raise ValueError("must be URLs starting with nats://, tls://, ws:// or wss:// (comma-separated)")
        return ",".join(urls)

    @field_validator("web_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        return None if value == "" else value  # compose passes an unset token as ""

    @field_validator("web_token")
    @classmethod
    def _token_length(cls, value: SecretStr | None) -> SecretStr | None:
        # A guessable token would let anyone who reaches the port halt trading.
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("database_url")
    @classmethod
    def _pg_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("postgres://", "postgresql://")):
            raise ValueError("must start with postgresql:// or postgres://")
        return value


def split_nats_urls(value: str) -> list[str]:
    """``nats://a:4222, nats://b:4222`` -> the URLs, in order (the servers of one cluster)."""
    return [url.strip() for url in value.split(",") if url.strip()]


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
