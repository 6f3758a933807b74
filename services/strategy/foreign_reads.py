"""Other services' read models, read by the strategy service: the only place it does so.

A tick's risk checks need what the strategy service does not record itself: the orders still open or
filled and not booked (the orders service's ``trades`` read model, and the log past its checkpoint), the
symbols position_sync quarantined (``quarantined_symbols``) and each portfolio's equity at the day's start
(the positions service's ``portfolio_snapshots``). These functions read them as their owners project them;
each takes a connection or the service's context (and a time) and returns plain values, so the owners'
own queries can take their place without touching the callers. Those exist already
(``services/orders/queries.py`` ``committed_orders``, ``services/positions/queries.py``, handed to every
service as ``ServiceContext.reads``): switching to them removes this module.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from eventstore.projections import checkpoint_name
from services.clock.calendar import exchange_date
from services.core.host import ServiceContext
from services.model.vocabulary import OPEN_ORDER_STATUSES, Side
from services.strategy.decide import PendingOrder

_EXISTING_TABLES: set[str] = set()


async def table_exists(con: Any, table: str) -> bool:
    """Whether another service's read model exists yet (once it does, it stays: remembered per process)."""
    if table not in _EXISTING_TABLES and await con.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
        _EXISTING_TABLES.add(table)
    return table in _EXISTING_TABLES


async def pending_orders(ctx: ServiceContext) -> dict[str, tuple[PendingOrder, ...]]:
    """Per portfolio, what earlier ticks' orders still commit (``read_pending_orders`` on a pooled
    connection, once the trades read model exists)."""
    async with ctx.rt.store.pool.acquire() as con:
        if not await table_exists(con, "trades"):
            await ctx.catch_up("trades")  # creates it
        return await read_pending_orders(con)


async def read_pending_orders(con: Any) -> dict[str, tuple[PendingOrder, ...]]:
    """Every portfolio's orders that still commit cash or shares the books do not show: open ones, and
    fills the positions service has not booked yet, summed per symbol and side, apart for the market
    orders' rest (valued at the tick's price).

    From the trades read model as projected, and, in the same statement (one snapshot), the order
    requests the projection has not reached yet, counted whole: no catch-up transaction on the path of
    every tick. Other events not projected yet (fills, cancels, bookings) can only make these figures
    too high for a moment, never too low: a check may refuse an order that would just have fitted,
    never let through one that does not."""
    pending: dict[str, list[PendingOrder]] = {}
    for row in await con.fetch(_PENDING, list(OPEN_ORDER_STATUSES), checkpoint_name("trades")):
        orders = pending.setdefault(row["portfolio_id"], [])
        symbol, side = row["symbol"], Side(row["side"])
        if row["priced_qty"]:
            orders.append(PendingOrder(symbol=symbol, side=side, qty=row["priced_qty"], notional=row["notional"]))
        if row["market_qty"]:
            orders.append(PendingOrder(symbol=symbol, side=side, qty=row["market_qty"], notional=None))
    return {pid: tuple(orders) for pid, orders in pending.items()}


# Per portfolio, symbol and side: what is filled but not booked (at the fill price), what open limit
# orders may still take (at their limits), and what open market orders may still take (no price yet);
# the requests after the projection's checkpoint are open orders with nothing filled.
_PENDING = """
WITH checkpoint AS (
    SELECT coalesce(max(position), 0) AS position, coalesce(max(tx), 0) AS tx
    FROM eventstore_checkpoints WHERE name = $2
), parts AS (
    SELECT portfolio_id, symbol, side, filled_qty - booked_qty AS qty, (filled_qty - booked_qty) * avg_fill_price
        AS notional FROM trades WHERE filled_qty > booked_qty
    UNION ALL
    SELECT portfolio_id, symbol, side, qty - filled_qty, (qty - filled_qty) * limit_price FROM trades
    WHERE status = ANY($1::text[]) AND qty > filled_qty
    UNION ALL
    SELECT e.data->>'portfolio_id', e.data->>'symbol', e.data->>'side', (e.data->>'qty')::numeric,
        (e.data->>'qty')::numeric * (e.data->>'limit_price')::numeric
    FROM events e, checkpoint c
    WHERE e.event_type = 'OrderRequested' AND (e.tx_id, e.global_position) > (c.tx::text::xid8, c.position)
)
SELECT portfolio_id, symbol, side,
    coalesce(sum(qty) FILTER (WHERE notional IS NOT NULL), 0) AS priced_qty,
    coalesce(sum(notional), 0) AS notional,
    coalesce(sum(qty) FILTER (WHERE notional IS NULL), 0) AS market_qty
FROM parts GROUP BY portfolio_id, symbol, side
"""


async def quarantined_symbols(ctx: ServiceContext) -> frozenset[str]:
    """The symbols position_sync quarantined (none before its read model exists)."""
    async with ctx.rt.store.pool.acquire() as con:
        if not await table_exists(con, "quarantined_symbols"):
            return frozenset()
        return frozenset(row[0] for row in await con.fetch("SELECT symbol FROM quarantined_symbols"))


async def day_start_equity(ctx: ServiceContext, at: datetime) -> dict[str, Decimal]:
    """Per portfolio, the total value of its last snapshot before the trading day of ``at``."""
    async with ctx.rt.store.pool.acquire() as con:
        if not await table_exists(con, "portfolio_snapshots"):
            return {}
        rows = await con.fetch(
            "SELECT DISTINCT ON (portfolio_id) portfolio_id, total_value FROM portfolio_snapshots"
            " WHERE trading_day < $1 ORDER BY portfolio_id, trading_day DESC",
            exchange_date(at),
        )
    return {row[0]: Decimal(row[1]) for row in rows}
