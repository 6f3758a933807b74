"""Typed queries on the positions read models (portfolios, positions, snapshots, discrepancies, fills).

Every function takes a connection and returns pydantic models: the web API serves them as they are, so
each model is the documented schema of one resource. Decimals are exact (JSON: strings)."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal

import asyncpg
from pydantic import BaseModel, Field

from eventstore.queries import stream_events_newest_first
from services.core.decimals import PlainDecimal
from services.model.streams import portfolio_stream


class Position(BaseModel):
    """One holding of a portfolio, valued at the latest observed price."""

    portfolio_id: str
    symbol: str
    qty: PlainDecimal
    avg_cost: PlainDecimal | None
    cost_basis: PlainDecimal
    realized_pnl: PlainDecimal
    last_price: PlainDecimal | None = Field(description="latest observed price; null until one was seen")
    market_value: PlainDecimal | None
    unrealized_pnl: PlainDecimal | None
    price_at: datetime | None
    updated_at: datetime


class Portfolio(BaseModel):
    """A portfolio's books and P&L (the ``portfolios`` read model)."""

    portfolio_id: str
    name: str
    trading_mode: str
    starting_cash: PlainDecimal
    cash: PlainDecimal
    realized_pnl: PlainDecimal
    unrealized_pnl: PlainDecimal | None
    market_value: PlainDecimal | None
    equity: PlainDecimal | None = Field(description="cash + market value; null while a position has no price")
    todays_pnl: PlainDecimal | None = Field(
        description="equity minus the last snapshot of a trading day before the latest price's (or the starting"
        " cash)"
    )
    unpriced_positions: int
    halted: bool
    halt_reason: str | None
    opened_at: datetime
    updated_at: datetime


class PortfolioDetail(Portfolio):
    positions: list[Position]


class Snapshot(BaseModel):
    """One end-of-day snapshot: a point of the equity curve."""

    portfolio_id: str
    trading_day: date
    total_value: PlainDecimal
    cash_balance: PlainDecimal
    positions_value: PlainDecimal
    realized_pnl: PlainDecimal
    unrealized_pnl: PlainDecimal
    taken_at: datetime


class Discrepancy(BaseModel):
    """A difference position_sync found between our books and the broker's, and what was done."""

    event_id: str
    tick_id: str
    symbol: str
    kind: str
    ours_qty: PlainDecimal
    broker_qty: PlainDecimal
    policy: str
    status: str
    detected_at: datetime
    resolved_at: datetime | None


class Fill(BaseModel):
    """A fill booked into a portfolio (``FillApplied``): the position and cash it moved."""

    global_position: int
    portfolio_id: str
    client_order_id: str
    symbol: str
    side: str
    fill_qty: PlainDecimal
    fill_price: PlainDecimal = Field(description="fill notional / fill quantity")
    fill_notional: PlainDecimal
    cash_change: PlainDecimal
    realized_pnl: PlainDecimal
    position_qty: PlainDecimal
    at: datetime


# "Today" is the New York date of the portfolio's latest price (of the books' last change when it holds
# nothing priced): after the close it is still that session, so today's P&L is the session's.
_PORTFOLIO = """
SELECT p.*, p.equity - coalesce((
    SELECT s.total_value FROM portfolio_snapshots s
    WHERE s.portfolio_id = p.portfolio_id AND s.trading_day < (coalesce(
        (SELECT max(q.price_at) FROM positions q WHERE q.portfolio_id = p.portfolio_id), p.updated_at
    ) AT TIME ZONE 'America/New_York')::date
    ORDER BY s.trading_day DESC LIMIT 1), p.starting_cash) AS todays_pnl
FROM portfolios p
"""


async def list_portfolios(con: asyncpg.Connection) -> list[Portfolio]:
    rows = await con.fetch(_PORTFOLIO + " ORDER BY p.portfolio_id")
    return [Portfolio.model_validate(dict(r)) for r in rows]


async def get_portfolio(con: asyncpg.Connection, portfolio_id: str) -> PortfolioDetail | None:
    row = await con.fetchrow(_PORTFOLIO + " WHERE p.portfolio_id = $1", portfolio_id)
    if row is None:
        return None
    return PortfolioDetail.model_validate({**dict(row), "positions": await list_positions(con, portfolio_id)})


async def list_positions(con: asyncpg.Connection, portfolio_id: str | None = None) -> list[Position]:
    rows = await con.fetch(
        "SELECT portfolio_id, symbol, qty, avg_cost, cost_basis, realized_pnl, last_price, market_value,"
        " unrealized_pnl, price_at, updated_at FROM positions"
        " WHERE qty <> 0 AND ($1::text IS NULL OR portfolio_id = $1) ORDER BY portfolio_id, symbol",
        portfolio_id,
    )
    return [Position.model_validate(dict(r)) for r in rows]


async def list_snapshots(con: asyncpg.Connection, portfolio_id: str | None = None) -> list[Snapshot]:
    rows = await con.fetch(
        "SELECT * FROM portfolio_snapshots WHERE $1::text IS NULL OR portfolio_id = $1"
        " ORDER BY portfolio_id, trading_day",
        portfolio_id,
    )
    return [Snapshot.model_validate(dict(r)) for r in rows]


async def list_discrepancies(
    con: asyncpg.Connection, *, open_only: bool = False, limit: int = 200
) -> list[Discrepancy]:
    rows = await con.fetch(
        "SELECT event_id::text, tick_id, symbol, kind, ours_qty, broker_qty, policy, status, detected_at, resolved_at"
        " FROM position_discrepancies WHERE NOT $1 OR status = 'open' ORDER BY detected_at DESC, event_id LIMIT $2",
        open_only, limit,
    )
    return [Discrepancy.model_validate(dict(r)) for r in rows]


async def list_fills(
    con: asyncpg.Connection, portfolio_id: str, *, before: int | None = None, limit: int = 100
) -> list[Fill]:
    """The portfolio's fills, newest first; ``before``: a global position from the previous page (keyset)."""
    events = await stream_events_newest_first(
        con, portfolio_stream(portfolio_id), "FillApplied", before=before, limit=limit
    )
    fills = []
    for event in events:
        data = json.loads(event.data)
        qty, notional = Decimal(str(data["fill_qty"])), Decimal(str(data["fill_notional"]))
        fills.append(
            Fill(
                global_position=event.global_position, portfolio_id=data["portfolio_id"],
                client_order_id=data["client_order_id"], symbol=data["symbol"], side=data["side"], fill_qty=qty,
                fill_price=(notional / qty).quantize(Decimal("0.0001")) if qty else Decimal(0),
                fill_notional=notional, cash_change=Decimal(str(data["cash_change"])),
                realized_pnl=Decimal(str(data["realized_pnl"])), position_qty=Decimal(str(data["position_qty"])),
                at=data["at"],
            )
        )
    return fills


# ------------------------------------------------------------ for the strategy service's decisions

_EXISTING_TABLES: set[str] = set()


async def _exists(con: asyncpg.Connection, table: str) -> bool:
    """Whether the read model's table exists yet (once it does, it stays: remembered per process)."""
    if table not in _EXISTING_TABLES and await con.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
        _EXISTING_TABLES.add(table)
    return table in _EXISTING_TABLES


async def quarantined_symbols(con: asyncpg.Connection) -> frozenset[str]:
    """The symbols position_sync quarantined: no new orders in them until the discrepancy is resolved."""
    if not await _exists(con, "quarantined_symbols"):
        return frozenset()
    return frozenset(row[0] for row in await con.fetch("SELECT symbol FROM quarantined_symbols"))


async def day_start_equity(con: asyncpg.Connection, trading_day: date) -> dict[str, Decimal]:
    """Each portfolio's total value at its last snapshot before ``trading_day`` (the daily-loss limit's
    base)."""
    if not await _exists(con, "portfolio_snapshots"):
        return {}
    rows = await con.fetch(
        "SELECT DISTINCT ON (portfolio_id) portfolio_id, total_value FROM portfolio_snapshots"
        " WHERE trading_day < $1 ORDER BY portfolio_id, trading_day DESC",
        trading_day,
    )
    return {row[0]: Decimal(row[1]) for row in rows}


async def latest_price(con: asyncpg.Connection, symbol: str) -> Decimal | None:
    """The latest usable observed price of ``symbol`` (price_update's quotes), if there is one."""
    if not await _exists(con, "latest_quotes"):
        return None
    price = await con.fetchval("SELECT price FROM latest_quotes WHERE symbol = $1 AND price IS NOT NULL", symbol)
    return None if price is None else Decimal(price)


async def latest_prices_of(con: asyncpg.Connection, symbols: list[str]) -> dict[str, Decimal]:
    """The latest usable observed price of each of ``symbols`` that has one."""
    if not await _exists(con, "latest_quotes"):
        return {}
    rows = await con.fetch(
        "SELECT symbol, price FROM latest_quotes WHERE symbol = ANY($1::text[]) AND price IS NOT NULL", symbols
    )
    return {row["symbol"]: Decimal(row["price"]) for row in rows}
