"""What every portfolio of one tick shares, loaded once per tick and process: the global halt, the
quarantined symbols, the equity at the day's start and the orders still pending.

It exists so that a tick with many portfolios reads these four things once, not once per portfolio. Three
of them are other services' read models, read through their owners' query functions
(``ServiceContext.reads``: the orders service's ``committed_orders``, the positions service's
``quarantined_symbols`` and ``day_start_equity``).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal

import msgspec

from services.clock.calendar import exchange_date
from services.core.host import ServiceContext
from services.strategy.decide import PendingOrder, pending_by_portfolio
from services.strategy.portfolio import global_halt


class TickControls(msgspec.Struct, frozen=True):
    """What every portfolio of one tick shares: the global halt, the quarantined symbols, the equity
    each portfolio had at the day's start (the last snapshot before the tick's trading day) and the
    orders of earlier ticks not yet in the books."""

    global_halt: bool
    quarantined: frozenset[str]
    day_start_equity: dict[str, Decimal]
    # Per portfolio: what earlier ticks' orders still commit beyond the books (open or unbooked).
    pending: dict[str, tuple[PendingOrder, ...]]


class TickControlsCache:
    """Loaded once per tick and process (four queries), not once per portfolio."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._entries: dict[str, TickControls] = {}
        self._lock = asyncio.Lock()

    async def get(self, ctx: ServiceContext, tick_id: str, at: datetime) -> TickControls:
        async with self._lock:
            controls = self._entries.get(tick_id)
            if controls is None:
                controls = self._entries[tick_id] = await load_controls(ctx, at)
                while len(self._entries) > self.keep:
                    self._entries.pop(next(iter(self._entries)))
            return controls


async def load_controls(ctx: ServiceContext, at: datetime) -> TickControls:
    """The tick's controls, its four reads at once."""
    reads = ctx.read_models

    async def quarantined() -> frozenset[str]:
        async with ctx.rt.store.pool.acquire() as con:
            return await reads.quarantined_symbols(con)

    async def equity() -> dict[str, Decimal]:
        async with ctx.rt.store.pool.acquire() as con:
            return await reads.day_start_equity(con, exchange_date(at))

    async def pending() -> dict[str, tuple[PendingOrder, ...]]:
        async with ctx.rt.store.pool.acquire() as con:
            return pending_by_portfolio(await reads.committed_orders(con))

    halted, symbols, start_equity, committed = await asyncio.gather(
        global_halt(ctx.rt.store), quarantined(), equity(), pending()
    )
    return TickControls(halted[0], symbols, start_equity, committed)
