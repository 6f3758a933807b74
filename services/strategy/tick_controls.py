"""What every portfolio of one tick shares, loaded once per tick and process: the global halt, the
quarantined symbols, the equity at the day's start and the orders still pending.

It exists so that a tick with many portfolios reads these four things once, not once per portfolio; the
reads of other services' read models behind it are in ``foreign_reads``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal

import msgspec

from services.core.host import ServiceContext
from services.strategy.decide import PendingOrder
from services.strategy.foreign_reads import day_start_equity, pending_orders, quarantined_symbols
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
    halted, quarantined, equity, pending = await asyncio.gather(
        global_halt(ctx.rt.store), quarantined_symbols(ctx), day_start_equity(ctx, at), pending_orders(ctx)
    )
    return TickControls(halted[0], quarantined, equity, pending)
