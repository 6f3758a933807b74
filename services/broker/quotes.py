"""Quotes fetched at the broker boundary for the jobs that price symbols (price_update, portfolio_snapshot,
alert_price_check): one broker call per batch, sorted into usable prices and reported problems."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.broker.protocol import Broker
from services.broker.views import quote_view
from services.core.settings import ENV_PREFIX, SettingsError
from services.model.market import QuoteCheck, check_quotes


class QuotesUnavailable(RuntimeError):
    """Not one symbol asked for got a usable quote: the run fails (and counts toward the breaker)."""


class QuoteSettings(BaseSettings):
    """``OPENBELL_QUOTE_BATCH_SIZE``: symbols per broker quote request (one call per batch).
    ``OPENBELL_QUOTE_MAX_AGE_SECONDS``: a quote older than this at the tick's time is stale (reported)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    quote_batch_size: int = Field(default=100, ge=1, le=1000)
    quote_max_age_seconds: float = Field(default=900.0, gt=0)


def load_quote_settings(**overrides: object) -> QuoteSettings:
    """The settings, or SettingsError with one line naming the variable (never its value)."""
    try:
        return QuoteSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        raise SettingsError(f"invalid {ENV_PREFIX}{field.upper()}: {error['msg']}") from None


def batches(symbols: Iterable[str], size: int) -> Iterator[list[str]]:
    """Sorted, de-duplicated symbols in batches of at most ``size`` (one broker call each)."""
    if size < 1:
        raise ValueError("batch size must be >= 1")
    ordered = sorted(set(symbols))
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


async def fetch_quotes(
    broker: Broker, symbols: Iterable[str], *, at: datetime, batch_size: int, max_age: timedelta
) -> QuoteCheck:
    """Latest quotes for ``symbols``, one broker call per batch, sorted into usable and problems."""
    wanted = sorted(set(symbols))
    quotes = {}
    for batch in batches(wanted, batch_size):
        got = await broker.latest_quotes(batch)
        quotes.update({s: quote_view(q) for s, q in got.items() if s in batch})
    return check_quotes(wanted, quotes, as_of=at, max_age=max_age)
