"""Settings from the environment (prefix ``OPENBELL_``), validated by pydantic-settings.

A bad value must stop the program with one line that names the variable, never a traceback:
``load_settings()`` turns pydantic's ValidationError into :class:`SettingsError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
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
    # Credentials for an external NATS (OPENBELL_NATS_URL), used by every connection of this process:
    # a user and password, a token, an nkey seed or a .creds file (JWT + seed); TLS with a CA and an
    # optional client certificate. The embedded server generates its own (README, "Security").
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_token: SecretStr | None = None
    nats_nkey_seed: SecretStr | None = None
    nats_creds_file: Path | None = None
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None
    # Pages (comma-separated scheme://host[:port]) whose scripts may use the embedded server's websocket
    # listener, as the read-only feed user.
    nats_websocket_origins: str = "http://127.0.0.1,http://localhost"
    # The service role's URL (may INSERT/SELECT events, write read models and checkpoints) and, to run
    # the migrations, the owner role's URL. Unset: the embedded PostgreSQL with generated passwords.
    database_url: SecretStr | None = None
    database_owner_url: SecretStr | None = None
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

    @field_validator("nats_websocket_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        origins = [origin.strip() for origin in value.split(",") if origin.strip()]
        if not origins:
            raise ValueError("must name at least one origin (an empty list would let every page in)")
        for origin in origins:
            if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
                raise ValueError("must be comma-separated http(s)://host[:port] origins, without a path")
        return ",".join(origins)

    @field_validator("nats_user")
    @classmethod
    def _nats_user(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("database_url", "database_owner_url")
    @classmethod
    def _pg_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("postgres://", "postgresql://")):
            raise ValueError("must start with postgresql:// or postgres://")
        return value

    @model_validator(mode="after")
    def _one_nats_identity(self) -> Settings:
        kinds = [name for name, value in (
            ("NATS_USER", self.nats_user), ("NATS_TOKEN", self.nats_token),
            ("NATS_NKEY_SEED", self.nats_nkey_seed), ("NATS_CREDS_FILE", self.nats_creds_file),
        ) if value is not None]
        if len(kinds) > 1:
            raise ValueError(f"give one NATS identity, not {' and '.join(ENV_PREFIX + k for k in kinds)}")
        if self.nats_password is not None and self.nats_user is None:
            raise ValueError(f"{ENV_PREFIX}NATS_PASSWORD needs {ENV_PREFIX}NATS_USER")
        if self.nats_tls_key is not None and self.nats_tls_cert is None:
            raise ValueError(f"{ENV_PREFIX}NATS_TLS_KEY needs {ENV_PREFIX}NATS_TLS_CERT")
        if (kinds or self.nats_tls_ca or self.nats_tls_cert) and self.nats_url is None:
            raise ValueError(f"NATS credentials are for an external server: set {ENV_PREFIX}NATS_URL")
        if self.database_owner_url is not None and self.database_url is None:
            raise ValueError(f"{ENV_PREFIX}DATABASE_OWNER_URL needs {ENV_PREFIX}DATABASE_URL")
        return self


def websocket_origins(settings: Settings) -> tuple[str, ...]:
    return tuple(settings.nats_websocket_origins.split(","))


def split_nats_urls(value: str) -> list[str]:
    """``nats://a:4222, nats://b:4222`` -> the URLs, in order (the servers of one cluster)."""
    return [url.strip() for url in value.split(",") if url.strip()]


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise SettingsError with a one-line message on a bad value."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        if not field:  # a rule across several settings: its message names them
            raise SettingsError(f"invalid settings: {str(error['msg']).removeprefix('Value error, ')}") from None
        variable = f"{ENV_PREFIX}{field.upper()}"
        # Never echo the value: it may be a DSN with a password in it.
        raise SettingsError(f"invalid {variable}: {error['msg']}") from None
