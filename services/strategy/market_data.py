"""The bars the strategies read, kept across ticks by each strategy process.

A tick fetches from the broker only the bars closed since the last tick (one batched call for all the
symbols of all its portfolios), instead of every portfolio fetching its whole history at every tick.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from services.broker.views import bar_view
from services.core.host import ServiceContext
from services.model.market import Bar

BAR_TIMEFRAME = "15Min"
BAR_WIDTH = timedelta(minutes=15)
BAR_LOOKBACK = timedelta(days=4)  # the first fetch: enough 15-minute bars across a weekend
MAX_BARS = 300  # kept per symbol; the built-in strategies need at most their longest window + 1


class MarketDataCache:
    """Bars per symbol, kept across ticks: a tick fetches only the bars closed since the last one it has
    (one batched broker call), and every portfolio of that tick reads the same history."""

    def __init__(self, keep: int = MAX_BARS) -> None:
        self.keep = keep
        self._history: dict[str, tuple[Bar, ...]] = {}
        self._checked_until: dict[str, datetime] = {}
        self._lock = asyncio.Lock()

    async def bars(
        self, ctx: ServiceContext, tick_id: str, at: datetime, symbols: set[str]
    ) -> dict[str, tuple[Bar, ...]]:
        async with self._lock:
            stale = sorted(s for s in symbols if self._checked_until.get(s) != at)
            # Symbols with the same starting point share one call (usually all of them).
            starts: dict[datetime, list[str]] = {}
            for symbol in stale:
                history = self._history.get(symbol)
                start = history[-1].timestamp + BAR_WIDTH if history else at - BAR_LOOKBACK
                starts.setdefault(start, []).append(symbol)
            if starts:
                broker = await ctx.at(at)
                for start, group in starts.items():
                    if start >= at:
                        continue
                    fetched = await broker.get_bars(group, start, at, BAR_TIMEFRAME)
                    for symbol in group:
                        new = tuple(bar_view(b) for b in fetched.get(symbol, []))
                        if new:
                            self._history[symbol] = (self._history.get(symbol, ()) + new)[-self.keep :]
                for symbol in stale:
                    self._checked_until[symbol] = max(at, self._checked_until.get(symbol, at))
            result = {s: self._history.get(s, ()) for s in symbols}
        # A late (redelivered) older tick must not see bars from after its own time.
        return {
            s: b if not b or b[-1].timestamp + BAR_WIDTH <= at else tuple(x for x in b if x.timestamp + BAR_WIDTH <= at)
            for s, b in result.items()
        }
