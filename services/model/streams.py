"""The name of every domain stream, defined once (the job ledger's and the clock's streams are in
``services.core.jobs.events`` and ``services.clock.events``)."""

from __future__ import annotations

from datetime import date


def portfolio_stream(portfolio_id: str) -> str:
    return f"portfolio-{portfolio_id}"


def evaluation_stream(portfolio_id: str, tick_id: str) -> str:
    """One per portfolio and tick: created once, so a portfolio is evaluated once per tick."""
    return f"evaluation-{portfolio_id}@{tick_id}"


def order_stream(client_order_id: str) -> str:
    return f"order-{client_order_id}"


def alert_stream(alert_id: str) -> str:
    return f"alert-{alert_id}"


def discrepancy_stream(symbol: str) -> str:
    return f"discrepancy-{symbol}"


def quotes_stream(tick_id: str) -> str:
    return f"quotes-{tick_id}"


def snapshot_stream(portfolio_id: str, day: date) -> str:
    return f"snapshot-{portfolio_id}-{day.isoformat()}"
