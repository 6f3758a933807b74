"""What the positions service's consumers share: the host's context, the settings, the event store, the
live feeds they publish, and the read of the alerts' read model that decides which symbols are priced.

Each job (``fills``, ``price_update``, ``portfolio_snapshot``, ``position_sync``) is a subclass of
``PositionsShell``, so they reach the store and the feeds the same way and ``service.setup`` builds each
from one context and one settings object.
"""

from __future__ import annotations

import asyncpg

from eventstore import EventStore
from services.core.host import ServiceContext
from services.positions.settings import PositionsSettings


async def table_exists(con: asyncpg.Connection, table: str) -> bool:
    return bool(await con.fetchval("SELECT to_regclass($1) IS NOT NULL", table))


async def alert_symbols(con: asyncpg.Connection) -> list[str]:
    """Symbols of active price alerts (the alerts read model, when that service has created it)."""
    if not await table_exists(con, "alerts"):
        return []
    rows = await con.fetch("SELECT DISTINCT symbol FROM alerts WHERE active ORDER BY symbol")
    return [r["symbol"] for r in rows]


class PositionsShell:
    """The context, settings, store and feed publishing of one positions job or consumer."""

    def __init__(self, ctx: ServiceContext, settings: PositionsSettings) -> None:
        self.ctx = ctx
        self.settings = settings

    @property
    def store(self) -> EventStore:
        return self.ctx.rt.store

    async def publish(self, kind: str, key: str, payload: bytes) -> None:
        nc = self.ctx.rt.nc
        if nc.is_connected:
            await nc.publish(self.ctx.rt.subjects.feed(kind, key), payload)
