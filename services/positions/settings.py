"""Settings of the positions jobs (environment, prefix ``OPENBELL_``); the quote settings are
``services.broker.quotes.QuoteSettings``, shared with alerts.

- ``OPENBELL_POSITION_SYNC_POLICY``: JSON, the policy per discrepancy kind, e.g.
  ``{"quantity": "fix", "unknown_at_broker": "quarantine", "closed_at_broker": "halt"}``; kinds left out
  keep the default ``fix``; ``price_tolerance`` (relative) may be given too.
- ``OPENBELL_QUOTE_BATCH_SIZE``: symbols per broker quote request (one call per batch).
- ``OPENBELL_QUOTE_MAX_AGE_SECONDS``: a quote older than this at the tick's time is stale (reported).
"""

from __future__ import annotations

from pydantic import Field, ValidationError

from services.broker.quotes import QuoteSettings
from services.core.settings import ENV_PREFIX, SettingsError
from services.positions.reconcile import ReconcilePolicy


class PositionsSettings(QuoteSettings):
    position_sync_policy: ReconcilePolicy = Field(default_factory=ReconcilePolicy)


def load_positions_settings(**overrides: object) -> PositionsSettings:
    """The settings, or SettingsError with one line naming the variable (never its value)."""
    try:
        return PositionsSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        detail = ".".join(str(p) for p in error["loc"][1:])
        where = f" ({detail})" if detail else ""
        raise SettingsError(f"invalid {ENV_PREFIX}{field.upper()}{where}: {error['msg']}") from None
