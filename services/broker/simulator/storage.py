"""The simulator's storage in PostgreSQL: the sim_* tables (account, orders, positions), opening them, and
reading and writing orders and positions as a settle needs them.

The broker's state lives here, not in the process: several processes share one simulated account, and a
restart resets nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from eventstore.schema import may_change_schema
from services.broker.models import Order, OrderSide, OrderStatus, OrderType, TimeInForce, utc
from services.broker.simulator import engine

SCHEMA = """
CREATE TABLE IF NOT EXISTS sim_account (
    id smallint PRIMARY KEY CHECK (id = 1),
    account_id text NOT NULL,
    seed bigint NOT NULL,
    cash numeric NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS sim_orders (
    id text PRIMARY KEY,
    client_order_id text NOT NULL UNIQUE,
    symbol text NOT NULL,
    side text NOT NULL,
    type text NOT NULL,
    time_in_force text NOT NULL,
    qty numeric NOT NULL,
    limit_price numeric,
    status text NOT NULL,
    filled_qty numeric NOT NULL,
    filled_avg_price numeric,
    submitted_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    filled_at timestamptz,
    canceled_at timestamptz,
    expired_at timestamptz,
    failed_at timestamptz,
    checked_until timestamptz NOT NULL,
    is_open boolean NOT NULL
);
CREATE INDEX IF NOT EXISTS sim_orders_open_idx ON sim_orders (submitted_at DESC) WHERE is_open;
CREATE INDEX IF NOT EXISTS sim_orders_submitted_idx ON sim_orders (submitted_at DESC);
CREATE TABLE IF NOT EXISTS sim_positions (
    symbol text PRIMARY KEY,
    qty numeric NOT NULL,
    avg_entry_price numeric NOT NULL
);
"""
# Any constant: serialises concurrent schema creation from several processes.
SCHEMA_LOCK_KEY = 0x0B5E11_0001


@dataclass(slots=True)
class Changes:
    """What a settle (and a submit or cancel) writes, in one statement: orders with how far their fill
    attempts are decided, positions as the fills leave them (a quantity of zero removes the row), and
    the change of cash."""

    orders: list[tuple[Order, datetime]] = field(default_factory=list)
    positions: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    cash_delta: Decimal = Decimal(0)


async def open_store(dsn: str, seed: int, starting_cash: Decimal, now: Callable[[], datetime]) -> asyncpg.Pool:
    """Open a pool, create the sim tables if missing, and open the account on first use."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, reset=no_session_reset)
    try:
        async with pool.acquire() as conn, conn.transaction():
            # A least-privilege role finds the tables made by the owner's migrations (services/core/dbroles.py).
            if await may_change_schema(conn):
                await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
                await conn.execute(SCHEMA)
            await conn.execute(
                "INSERT INTO sim_account (id, account_id, seed, cash, created_at) VALUES (1, $1, $2, $3, $4)"
                " ON CONFLICT (id) DO NOTHING",
                engine.order_id_for(seed, "account"),
                seed,
                starting_cash,
                utc(now()),
            )
    except BaseException:
        await pool.close()
        raise
    return pool


async def no_session_reset(conn: asyncpg.Connection) -> None:
    """The simulator keeps no session state (every change is a transaction, rolled back by asyncpg if left
    open): skip the pool's reset query, one more round trip at the end of every broker call."""


def order_from_row(row: asyncpg.Record | Mapping[str, Any]) -> Order:
    return Order(
        id=row["id"],
        client_order_id=row["client_order_id"],
        symbol=row["symbol"],
        side=OrderSide(row["side"]),
        type=OrderType(row["type"]),
        qty=row["qty"],
        limit_price=row["limit_price"],
        time_in_force=TimeInForce(row["time_in_force"]),
        status=OrderStatus(row["status"]),
        filled_qty=row["filled_qty"],
        filled_avg_price=row["filled_avg_price"],
        submitted_at=row["submitted_at"],
        updated_at=row["updated_at"],
        filled_at=row["filled_at"],
        canceled_at=row["canceled_at"],
        expired_at=row["expired_at"],
        failed_at=row["failed_at"],
    )


# The open orders (and the order sent before with the submitted client order id, $1), each with the
# position in its symbol, and the position in the submitted symbol ($2). One row with no order when there
# is none, so that the submitted symbol's position is always there.
SETTLE_READ = """
SELECT o.*, coalesce(o.client_order_id = $1::text, false) AS duplicate,
    p.qty AS position_qty, p.avg_entry_price AS position_avg,
    (SELECT qty FROM sim_positions WHERE symbol = $2::text) AS submit_position_qty
FROM (SELECT 1) AS one
LEFT JOIN sim_orders o ON o.is_open OR o.client_order_id = $1::text
LEFT JOIN sim_positions p ON p.symbol = o.symbol
ORDER BY o.submitted_at, o.id
"""

# Every change at once: data-modifying CTEs all run, on different rows (one row per symbol and order).
_WRITE = """
WITH kept AS (
    INSERT INTO sim_positions (symbol, qty, avg_entry_price)
    SELECT * FROM unnest($1::text[], $2::numeric[], $3::numeric[])
    ON CONFLICT (symbol) DO UPDATE SET qty = EXCLUDED.qty, avg_entry_price = EXCLUDED.avg_entry_price
), flat AS (
    DELETE FROM sim_positions WHERE symbol = ANY($4::text[])
), account AS (
    UPDATE sim_account SET cash = cash + $5::numeric WHERE id = 1 AND $5::numeric <> 0
)
INSERT INTO sim_orders (id, client_order_id, symbol, side, type, time_in_force, qty, limit_price, status,
    filled_qty, filled_avg_price, submitted_at, updated_at, filled_at, canceled_at, expired_at, failed_at,
    checked_until, is_open)
SELECT * FROM unnest($6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::numeric[],
    $13::numeric[], $14::text[], $15::numeric[], $16::numeric[], $17::timestamptz[], $18::timestamptz[],
    $19::timestamptz[], $20::timestamptz[], $21::timestamptz[], $22::timestamptz[], $23::timestamptz[],
    $24::boolean[])
ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, filled_qty = EXCLUDED.filled_qty,
    filled_avg_price = EXCLUDED.filled_avg_price, updated_at = EXCLUDED.updated_at,
    filled_at = EXCLUDED.filled_at, canceled_at = EXCLUDED.canceled_at, expired_at = EXCLUDED.expired_at,
    failed_at = EXCLUDED.failed_at, checked_until = EXCLUDED.checked_until, is_open = EXCLUDED.is_open
"""


async def write_changes(conn: asyncpg.Connection, changes: Changes) -> None:
    """Store ``changes`` in one statement (none when there are none)."""
    if not changes.orders and not changes.positions and not changes.cash_delta:
        return
    kept = [(s, q, a) for s, (q, a) in changes.positions.items() if q != 0]
    flat = [s for s, (q, _) in changes.positions.items() if q == 0]
    orders = [o for o, _ in changes.orders]
    await conn.execute(
        _WRITE,
        [s for s, _, _ in kept],
        [q for _, q, _ in kept],
        [a for _, _, a in kept],
        flat,
        changes.cash_delta,
        [o.id for o in orders],
        [o.client_order_id for o in orders],
        [o.symbol for o in orders],
        [str(o.side) for o in orders],
        [str(o.type) for o in orders],
        [str(o.time_in_force) for o in orders],
        [o.qty for o in orders],
        [o.limit_price for o in orders],
        [str(o.status) for o in orders],
        [o.filled_qty for o in orders],
        [o.filled_avg_price for o in orders],
        [o.submitted_at for o in orders],
        [o.updated_at for o in orders],
        [o.filled_at for o in orders],
        [o.canceled_at for o in orders],
        [o.expired_at for o in orders],
        [o.failed_at for o in orders],
        [checked_until for _, checked_until in changes.orders],
        [o.is_open for o in orders],
    )

