"""What the Alpaca adapter needs from the settings, and the checks that refuse a dangerous or incomplete
configuration before any client is built.

Separate from the adapter so that a process that may trade can run the live-trading gate at start
(``services.broker.check_trading_configuration``) whichever broker it uses.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.broker.errors import BrokerConfigError

PAPER_URL = "https://paper-api.alpaca.markets"
LIVE_URL = "https://api.alpaca.markets"


class AlpacaSettings(BaseSettings):
    """Alpaca's conventional APCA_* names for keys and URLs; OPENBELL_* for the rest."""

    model_config = SettingsConfigDict(env_prefix="OPENBELL_", extra="ignore", frozen=True)

    api_key_id: SecretStr | None = Field(default=None, validation_alias=AliasChoices("APCA_API_KEY_ID", "api_key_id"))
    api_secret_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("APCA_API_SECRET_KEY", "api_secret_key")
    )
    trading_mode: Literal["paper", "live"] = "paper"
    live_trading: Literal["yes", "no"] = "no"
    api_base_url: str | None = Field(default=None, validation_alias=AliasChoices("APCA_API_BASE_URL", "api_base_url"))
    api_data_url: str | None = Field(default=None, validation_alias=AliasChoices("APCA_API_DATA_URL", "api_data_url"))
    api_stream_url: str | None = Field(
        default=None, validation_alias=AliasChoices("APCA_API_STREAM_URL", "api_stream_url")
    )
    alpaca_connect_timeout: float = Field(default=5.0, gt=0)
    alpaca_read_timeout: float = Field(default=15.0, gt=0)
    alpaca_data_feed: Literal["iex", "sip"] = "iex"
    alpaca_rate_limit_per_minute: int = Field(default=200, gt=0)
    # How often a 429 is waited out and retried before RateLimited reaches the caller.
    alpaca_max_rate_limit_retries: int = Field(default=3, ge=0)
    # Delays before each by-client-order-id lookup after an ambiguous submit.
    alpaca_submit_lookup_delays: tuple[float, ...] = (0.0, 0.5, 2.0)
    alpaca_threads: int = Field(default=8, gt=0)

    def secrets(self) -> tuple[str, ...]:
        return tuple(s.get_secret_value() for s in (self.api_key_id, self.api_secret_key) if s is not None)


def load_alpaca_settings(**overrides: Any) -> AlpacaSettings:
    """Settings from the environment; a bad value is one BrokerConfigError line that never echoes it."""
    try:
        return AlpacaSettings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "?"
        raise BrokerConfigError(f"invalid Alpaca setting {field}: {error['msg']}") from None


PAPER_HOST = "paper-api.alpaca.markets"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_live_gate(settings: AlpacaSettings) -> None:
    """The one gate before real money: trading against any host but Alpaca's paper host (the live host, a
    proxy, a local server alike) needs OPENBELL_TRADING_MODE=live AND OPENBELL_LIVE_TRADING=yes; every
    broker URL beyond this machine is https (wss for the stream). BrokerConfigError otherwise (one line)."""
    live = settings.trading_mode == "live"
    if live and settings.live_trading != "yes":
        raise BrokerConfigError(
            "OPENBELL_TRADING_MODE=live needs OPENBELL_LIVE_TRADING=yes as well: refusing to trade real money"
        )
    for variable, url in (
        ("APCA_API_BASE_URL", settings.api_base_url),
        ("APCA_API_DATA_URL", settings.api_data_url),
        ("APCA_API_STREAM_URL", settings.api_stream_url),
    ):
        if url is None:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
            raise BrokerConfigError(f"{variable} must be an https:// (or wss://) URL")
        if parts.scheme in ("http", "ws") and not _is_loopback(parts.hostname):
            raise BrokerConfigError(
                f"{variable} must use https:// (or wss://) beyond this machine, not {parts.scheme}://"
            )
    default_host = urlsplit(LIVE_URL if live else PAPER_URL).hostname
    trading_urls = (("APCA_API_BASE_URL", settings.api_base_url), ("APCA_API_STREAM_URL", settings.api_stream_url))
    for variable, url in trading_urls:
        host = urlsplit(url).hostname if url else default_host
        if host != PAPER_HOST and not (live and settings.live_trading == "yes"):
            raise BrokerConfigError(
                f"{variable} points at {host}, not Alpaca's paper host {PAPER_HOST}: trading there needs"
                " OPENBELL_TRADING_MODE=live and OPENBELL_LIVE_TRADING=yes"
            )


def check_settings(settings: AlpacaSettings) -> None:
    """Refuse to build a broker that could trade real money by accident, or that has no keys."""
    check_live_gate(settings)
    if settings.api_key_id is None or settings.api_secret_key is None:
        raise BrokerConfigError("APCA_API_KEY_ID and APCA_API_SECRET_KEY must both be set for the Alpaca broker")
