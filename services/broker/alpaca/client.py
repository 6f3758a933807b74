"""The alpaca-py REST clients as openbell runs them: a (connect, read) timeout on every request, alpaca-py's
blind retries off, and every response's X-Ratelimit-* headers fed to the process's rate limiter.

alpaca-py exposes neither its HTTP session nor its retry count: this module is the one place that reaches
into the clients for them.
"""

from __future__ import annotations

from typing import Any

import requests
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.trading.client import TradingClient

from services.broker.alpaca.settings import AlpacaSettings
from services.broker.errors import BrokerConfigError
from services.broker.ratelimit import RateLimiter


class TimeoutSession(requests.Session):
    """A requests session that gives every request a default (connect, read) timeout."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__()
        self.default_timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self.default_timeout)
        return super().request(method, url, *args, **kwargs)


def prepare_client(client: Any, settings: AlpacaSettings, limiter: RateLimiter) -> None:
    """Give an alpaca-py client openbell's session (timeouts, the rate limiter's response hook) and no blind
    retries; BrokerConfigError for a client without the attributes that carry them."""
    session = TimeoutSession((settings.alpaca_connect_timeout, settings.alpaca_read_timeout))

    def on_response(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        limiter.update_from_headers(response.headers, response.status_code)

    session.hooks["response"].append(on_response)
    # alpaca-py exposes neither the session nor retry settings on TradingClient: set its attributes. Should
    # a release rename them, setting them would change nothing, and its blind retries of order POSTs and
    # its requests without a timeout would come back unnoticed: refuse to run on such a client instead.
    missing = [name for name in ("_session", "_retry") if not hasattr(client, name)]
    if missing:
        raise BrokerConfigError(
            f"unsupported alpaca-py client {type(client).__name__}: no {', '.join(missing)} attribute"
            " (openbell needs it to set request timeouts and turn off blind retries)"
        )
    client._session = session
    client._retry = 0  # never retry blindly, POST least of all; 429s are handled in AlpacaBroker._call


def build_clients(settings: AlpacaSettings, limiter: RateLimiter) -> tuple[TradingClient, StockHistoricalDataClient]:
    """The trading and market-data clients for checked ``settings`` (keys present), both prepared."""
    key = settings.api_key_id.get_secret_value()  # type: ignore[union-attr]  # checked by check_settings
    secret = settings.api_secret_key.get_secret_value()  # type: ignore[union-attr]
    paper = settings.trading_mode == "paper"
    trading = TradingClient(key, secret, paper=paper, url_override=settings.api_base_url)
    data = StockHistoricalDataClient(key, secret, url_override=settings.api_data_url)
    for client in (trading, data):
        prepare_client(client, settings, limiter)
    return trading, data
