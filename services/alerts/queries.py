"""Typed queries on the alerts service's read models: price alerts and notifications."""

from __future__ import annotations

from datetime import datetime

import asyncpg
from pydantic import BaseModel, Field

from services.core.decimals import PlainDecimal


class Alert(BaseModel):
    """A price alert and whether (and at what price) it triggered."""

    alert_id: str
    symbol: str
    condition: str = Field(description="above, below or percent_change")
    threshold: PlainDecimal
    reference_price: PlainDecimal | None
    portfolio_id: str | None
    status: str
    active: bool
    created_at: datetime
    triggered_at: datetime | None
    triggered_price: PlainDecimal | None


class Notification(BaseModel):
    """Something an operator should see: fills, cancels, rejections, risk refusals, triggered alerts, tripped
    breakers, halts, discrepancies. ``position``: the global position of the event it comes from."""

    id: str
    position: int
    kind: str
    portfolio_id: str | None
    title: str
    body: str
    ref: str
    at: datetime


async def list_alerts(con: asyncpg.Connection, *, active_only: bool = False) -> list[Alert]:
    rows = await con.fetch(
        "SELECT alert_id, symbol, condition, threshold, reference_price, portfolio_id, status, active, created_at,"
        " triggered_at, triggered_price FROM alerts WHERE NOT $1 OR active ORDER BY created_at DESC, alert_id",
        active_only,
    )
    return [Alert.model_validate(dict(r)) for r in rows]


async def list_notifications(
    con: asyncpg.Connection, *, before: int | None = None, limit: int = 50
) -> list[Notification]:
    """Newest first; ``before``: the smallest ``position`` of the previous page (keyset)."""
    rows = await con.fetch(
        "SELECT id::text, position, kind, portfolio_id, title, body, ref, at FROM notifications"
        " WHERE $1::bigint IS NULL OR position < $1 ORDER BY position DESC LIMIT $2",
        before, limit,
    )
    return [Notification.model_validate(dict(r)) for r in rows]


async def active_alert_symbols(con: asyncpg.Connection) -> frozenset[str]:
    """The symbols of active alerts (none before the read model exists): price_update quotes them too."""
    if not await con.fetchval("SELECT to_regclass('alerts') IS NOT NULL"):
        return frozenset()
    return frozenset(r["symbol"] for r in await con.fetch("SELECT DISTINCT symbol FROM alerts WHERE active"))
