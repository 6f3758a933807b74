"""The ``trades`` read model (the trade records): one row per order, from its stream's events.

``booked_qty`` is how much of the order's filled quantity the positions service has booked into the
portfolio's books (its FillApplied events): an order with ``status`` open or ``filled_qty > booked_qty``
still commits cash or shares that the books do not show yet (the strategy's risk checks count them).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from eventstore import RecordedEvent
from eventstore.projections import Projection
from services.core.events import registry
from services.model.events.orders import (
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
    OrderSubmitUnknown,
)
from services.model.events.positions import FillApplied
from services.model.events.strategy import OrderRequested


class TradesProjection(Projection):
    name = "trades"
    tables = ("trades",)
    event_types = frozenset(
        {
            "OrderRequested",
            "OrderSubmitted",
            "OrderSubmitUnknown",
            "OrderRejected",
            "OrderPartiallyFilled",
            "OrderFilled",
            "OrderCanceled",
            "OrderExpired",
            "FillApplied",
        }
    )

    async def setup(self, con: asyncpg.Connection) -> None:
        await con.execute(
            """
            CREATE TABLE IF NOT EXISTS trades (
                client_order_id text PRIMARY KEY,
                portfolio_id    text NOT NULL,
                symbol          text NOT NULL,
                side            text NOT NULL,
                order_type      text NOT NULL,
                qty             numeric NOT NULL,
                limit_price     numeric,
                status          text NOT NULL,
                broker_order_id text,
                filled_qty      numeric NOT NULL DEFAULT 0,
                avg_fill_price  numeric,
                filled_notional numeric NOT NULL DEFAULT 0,
                strategy        text NOT NULL,
                tick_id         text NOT NULL,
                reason          text,
                requested_at    timestamptz NOT NULL,
                submitted_at    timestamptz,
                filled_at       timestamptz,
                closed_at       timestamptz,
                updated_position bigint NOT NULL
            );
            CREATE INDEX IF NOT EXISTS trades_open ON trades (status) WHERE status IN
                ('requested', 'submitted', 'unknown', 'partially_filled');
            CREATE INDEX IF NOT EXISTS trades_portfolio ON trades (portfolio_id, requested_at);
            -- keyset pages of one portfolio's orders, newest first (services/orders/queries.py)
            CREATE INDEX IF NOT EXISTS trades_portfolio_page ON trades (portfolio_id, requested_at, client_order_id);
            """
        )
        if not await con.fetchval(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = 'trades' AND column_name = 'booked_qty')"
        ):
            # A read model from before the column: its fills were booked long ago, as far as it can tell (a
            # rebuild with `openbell replay` gives the exact figures).
            await con.execute(
                "ALTER TABLE trades ADD COLUMN IF NOT EXISTS booked_qty numeric NOT NULL DEFAULT 0;"
                " UPDATE trades SET booked_qty = filled_qty"
            )
        await con.execute(
            "CREATE INDEX IF NOT EXISTS trades_uncommitted ON trades (portfolio_id) WHERE filled_qty > booked_qty"
            " OR status IN ('requested', 'submitted', 'unknown', 'partially_filled')"
        )

    async def apply(self, con: asyncpg.Connection, events: list[RecordedEvent]) -> None:
        for recorded in events:
            event: Any = registry.decode(recorded)
            position = recorded.global_position
            coid = event.client_order_id
            match event:
                case FillApplied():
                    await con.execute(
                        "UPDATE trades SET booked_qty = GREATEST(booked_qty, $2) WHERE client_order_id = $1",
                        coid,
                        event.cumulative_qty,
                    )
                case OrderRequested():
                    await con.execute(
                        """
                        INSERT INTO trades (client_order_id, portfolio_id, symbol, side, order_type, qty, limit_price,
                            status, strategy, tick_id, reason, requested_at, updated_position)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, 'requested', $8, $9, $10, $11, $12)
                        ON CONFLICT (client_order_id) DO NOTHING
                        """,
                        coid,
                        event.portfolio_id,
                        event.symbol,
                        event.side.value,
                        event.order_type.value,
                        event.qty,
                        event.limit_price,
                        event.strategy,
                        event.tick_id,
                        event.reason,
                        event.at,
                        position,
                    )
                case OrderSubmitted():
                    await self._update(
                        con,
                        coid,
                        position,
                        status="submitted",
                        broker_order_id=event.broker_order_id,
                        submitted_at=event.submitted_at,
                    )
                case OrderSubmitUnknown():
                    await self._update(con, coid, position, status="unknown", reason=event.reason)
                case OrderPartiallyFilled() | OrderFilled():
                    filled = isinstance(event, OrderFilled)
                    await con.execute(
                        """
                        UPDATE trades SET status = $2, filled_qty = $3, avg_fill_price = $4,
                            filled_notional = filled_notional + $5, filled_at = $6,
                            closed_at = CASE WHEN $7 THEN $6 ELSE closed_at END, updated_position = $8
                        WHERE client_order_id = $1
                        """,
                        coid,
                        "filled" if filled else "partially_filled",
                        event.cumulative_qty,
                        event.avg_price,
                        event.fill_notional,
                        event.filled_at,
                        filled,
                        position,
                    )
                case OrderCanceled() | OrderExpired():
                    status = "canceled" if isinstance(event, OrderCanceled) else "expired"
                    await self._update(con, coid, position, status=status, closed_at=event.at)
                case OrderRejected():
                    await self._update(con, coid, position, status="rejected", reason=event.reason, closed_at=event.at)

    @staticmethod
    async def _update(con: asyncpg.Connection, coid: str, position: int, **columns: Any) -> None:
        names = list(columns)
        assignments = ", ".join(f"{name} = ${i + 3}" for i, name in enumerate(names))
        await con.execute(
            f"UPDATE trades SET {assignments}, updated_position = $2 WHERE client_order_id = $1",
            coid,
            position,
            *columns.values(),
        )
