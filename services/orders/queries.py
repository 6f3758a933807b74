"""Typed queries on the trades read model (one row per order): filtered, keyset-paged (newest first).

A page is found through the index on (portfolio_id, requested_at, client_order_id): the cost of a page does
not grow with the number of orders before it."""

from __future__ import annotations

import base64
from datetime import datetime

import asyncpg
from pydantic import BaseModel, Field

from services.core.decimals import PlainDecimal
from services.orders.lifecycle import OrderStatus

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
