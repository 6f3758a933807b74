"""Typed queries on the trades read model (one row per order): filtered, keyset-paged (newest first), and
what open orders still commit (for the strategy service's risk checks, through ``ServiceContext.reads``).

A page is found through the index on (portfolio_id, requested_at, client_order_id): the cost of a page does
not grow with the number of orders before it."""

from __future__ import annotations

import base64
from datetime import datetime
from decimal import Decimal

import asyncpg
from pydantic import BaseModel, Field

from eventstore.projections import checkpoint_name
from eventstore.queries import events_after_checkpoint
from services.core.decimals import PlainDecimal
from services.core.events import registry
from services.model.events.strategy import OrderRequested
from services.model.reads import CommittedOrder
from services.model.vocabulary import OPEN_ORDER_STATUSES, Side
from services.orders.lifecycle import OrderStatus

TRADES = "trades"  # the read model's name (services/orders/projection.py)

OPEN_STATUSES = ("requested", "submitted", "unknown", "partially_filled")


class Order(BaseModel):
    """One order and where it stands (the ``trades`` read model)."""

    client_order_id: str = Field(description="deterministic id from portfolio, tick, symbol and side")
    portfolio_id: str
    symbol: str
    side: str
    order_type: str
    qty: PlainDecimal
    limit_price: PlainDecimal | None
    status: OrderStatus
    broker_order_id: str | None
    filled_qty: PlainDecimal
    avg_fill_price: PlainDecimal | None
    filled_notional: PlainDecimal
    strategy: str
    tick_id: str
    reason: str | None
    requested_at: datetime
    submitted_at: datetime | None
    filled_at: datetime | None
    closed_at: datetime | None


class OrderPage(BaseModel):
    items: list[Order]
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page; null: last page")


class BadCursor(ValueError):
    """A cursor that no page of this API produced."""


def encode_cursor(requested_at: datetime, client_order_id: str) -> str:
    return base64.urlsafe_b64encode(f"{requested_at.isoformat()}|{client_order_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, _, order_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        moment = datetime.fromisoformat(at)
    except ValueError:
        raise BadCursor("invalid cursor: use the next_cursor of a previous page") from None
    if moment.tzinfo is None or not order_id:
        raise BadCursor("invalid cursor: use the next_cursor of a previous page")
    return moment, order_id


_COLUMNS = (
    "client_order_id, portfolio_id, symbol, side, order_type, qty, limit_price, status, broker_order_id, filled_qty,"
    " avg_fill_price, filled_notional, strategy, tick_id, reason, requested_at, submitted_at, filled_at, closed_at"
)


async def list_orders(
    con: asyncpg.Connection,
    *,
    portfolio_id: str | None = None,
    status: OrderStatus | None = None,
    open_only: bool = False,
    symbol: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> OrderPage:
    # Only the filters given become conditions, so the planner sees the keyset bound as an index condition
    # (a generic "$n IS NULL OR ..." would make it filter row by row).
    conditions: list[str] = []
    args: list[object] = []

    def where(condition: str, *values: object) -> None:
        args.extend(values)
        conditions.append(condition.format(*(f"${len(args) - len(values) + i + 1}" for i in range(len(values)))))

    if portfolio_id is not None:
        where("portfolio_id = {0}", portfolio_id)
    if status is not None:
        where("status = {0}", status.value)
    if open_only:
        where("status = ANY({0}::text[])", list(OPEN_STATUSES))
    if symbol is not None:
        where("symbol = {0}", symbol)
    if cursor:
        where("(requested_at, client_order_id) < ({0}, {1})", *decode_cursor(cursor))
    args.append(limit + 1)
    rows = await con.fetch(
        f"SELECT {_COLUMNS} FROM trades {'WHERE ' + ' AND '.join(conditions) if conditions else ''}"
        f" ORDER BY requested_at DESC, client_order_id DESC LIMIT ${len(args)}",
        *args,
    )
    items = [Order.model_validate(dict(r)) for r in rows[:limit]]
    more = len(rows) > limit
    return OrderPage(
        items=items, next_cursor=encode_cursor(items[-1].requested_at, items[-1].client_order_id) if more else None
    )


# -------------------------------------------------------------------- what orders commit (for risk checks)

# Per portfolio, symbol and side: what is filled but not booked (at the fill price), what open limit orders
# may still take (at their limits), and what open market orders may still take (no price yet).
_COMMITTED_IN_TRADES = """
WITH parts AS (
    SELECT portfolio_id, symbol, side, filled_qty - booked_qty AS qty, (filled_qty - booked_qty) * avg_fill_price
        AS notional FROM trades WHERE filled_qty > booked_qty
    UNION ALL
    SELECT portfolio_id, symbol, side, qty - filled_qty, (qty - filled_qty) * limit_price FROM trades
    WHERE status = ANY($1::text[]) AND qty > filled_qty
)
SELECT portfolio_id, symbol, side,
    coalesce(sum(qty) FILTER (WHERE notional IS NOT NULL), 0) AS priced_qty,
    coalesce(sum(notional), 0) AS notional,
    coalesce(sum(qty) FILTER (WHERE notional IS NULL), 0) AS market_qty
FROM parts GROUP BY portfolio_id, symbol, side
"""

_trades_exist = False


async def _trades_table_exists(con: asyncpg.Connection) -> bool:
    """Whether the read model's table exists yet (once it does, it stays: asked until it does)."""
    global _trades_exist
    if not _trades_exist:
        _trades_exist = bool(await con.fetchval("SELECT to_regclass('trades') IS NOT NULL"))
    return _trades_exist


async def committed_orders(con: asyncpg.Connection) -> list[CommittedOrder]:
    """Every portfolio's orders that still commit cash or shares the books do not show: open ones, and
    fills the positions service has not booked yet, summed per symbol and side, apart for the market
    orders' rest (valued at the tick's price).

    From the trades read model as projected and, at the same moment (one repeatable-read snapshot), the
    order requests the projection has not reached yet, counted whole: no catch-up on the path of every
    tick. Other events not projected yet (fills, cancels, bookings) can only make these figures too high
    for a moment, never too low: a risk check may refuse an order that would just have fitted, never let
    through one that does not."""
    async with con.transaction(isolation="repeatable_read", readonly=True):
        # Before the read model's first run there is no table: every request in the log is then open.
        exists = await _trades_table_exists(con)
        rows = await con.fetch(_COMMITTED_IN_TRADES, list(OPEN_ORDER_STATUSES)) if exists else []
        requested = await events_after_checkpoint(con, checkpoint_name(TRADES), ["OrderRequested"])
    # (portfolio, symbol, side, priced) -> [qty, notional]: the priced parts apart from the market orders' rest
    sums: dict[tuple[str, str, Side, bool], list[Decimal]] = {}

    def add(portfolio_id: str, symbol: str, side: Side, qty: Decimal, notional: Decimal | None) -> None:
        total = sums.setdefault((portfolio_id, symbol, side, notional is not None), [Decimal(0), Decimal(0)])
        total[0] += qty
        total[1] += notional or 0

    for row in rows:
        side = Side(row["side"])
        if row["priced_qty"]:
            add(row["portfolio_id"], row["symbol"], side, row["priced_qty"], row["notional"])
        if row["market_qty"]:
            add(row["portfolio_id"], row["symbol"], side, row["market_qty"], None)
    for event in requested:
        order = registry.decode(event)
        assert isinstance(order, OrderRequested)
        notional = None if order.limit_price is None else order.qty * order.limit_price
        add(order.portfolio_id, order.symbol, order.side, order.qty, notional)
    return [
        CommittedOrder(portfolio_id=pid, symbol=symbol, side=side, qty=qty, notional=notional if priced else None)
        for (pid, symbol, side, priced), (qty, notional) in sums.items()
    ]


async def open_order_symbols(con: asyncpg.Connection) -> frozenset[str]:
    """The symbols of orders still open (none before the read model exists)."""
    if not await _trades_table_exists(con):
        return frozenset()
    rows = await con.fetch(
        "SELECT DISTINCT symbol FROM trades WHERE status = ANY($1::text[])", list(OPEN_ORDER_STATUSES)
    )
    return frozenset(r["symbol"] for r in rows)


class StatusCount(BaseModel):
    """How many orders are in one status, and the quantity they filled."""

    status: str
    orders: int
    filled_qty: PlainDecimal


async def status_counts(con: asyncpg.Connection) -> list[StatusCount]:
    """Orders per status (the demo's summary), by status name."""
    rows = await con.fetch(
        "SELECT status, count(*) AS orders, coalesce(sum(filled_qty), 0) AS filled_qty"
        " FROM trades GROUP BY 1 ORDER BY 1"
    )
    return [StatusCount.model_validate(dict(row)) for row in rows]
