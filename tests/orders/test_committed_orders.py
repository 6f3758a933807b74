"""What earlier orders still commit beyond the books (the orders service's query for the strategy's risk
checks), read from the trades read model on a real PostgreSQL: open orders' rest (at their limit, or at the
market), fills not booked yet, nothing for closed, fully booked orders, and the order requests the
projection has not reached yet."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from eventstore import EventStore
from eventstore.projections import checkpoint_name
from services.core.events import new_event
from services.model.events.strategy import OrderRequested
from services.model.reads import CommittedOrder
from services.model.streams import order_stream
from services.model.vocabulary import OrderType, Side
from services.orders.projection import TradesProjection
from services.orders.queries import committed_orders

AT = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


def request(coid: str, symbol: str, qty: str, limit: str | None) -> OrderRequested:
    return OrderRequested(
        portfolio_id="p1", client_order_id=coid, symbol=symbol, side=Side.BUY, qty=Decimal(qty),
        order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
        limit_price=None if limit is None else Decimal(limit), tick_id="t", strategy="s", reason="r", at=AT,
    )


async def test_committed_orders_from_the_trades_read_model_and_the_requests_after_it(pg_dsn: str) -> None:
    store = await EventStore.connect(pg_dsn)
    con = await asyncpg.connect(pg_dsn)
    try:
        await TradesProjection().setup(con)
        # Projected up to here (the rows below); the two requests after it are not in trades yet.
        seen = await store.append(order_stream("o0"), [new_event(request("o0", "AAPL", "1", None), "o0")])
        await con.execute(
            "INSERT INTO eventstore_checkpoints (name, position, tx) SELECT $1, global_position, tx_id::text::bigint"
            " FROM events WHERE global_position = $2",
            checkpoint_name("trades"), seen.last_global_position,
        )
        for coid, symbol, qty, limit in (("o6", "AAPL", "2", None), ("o7", "NVDA", "3", "31")):
            await store.append(order_stream(coid), [new_event(request(coid, symbol, qty, limit), coid)])
        rows = [
            # portfolio, order, symbol, side, qty, limit, status, filled, avg, booked
            ("p1", "o1", "AAPL", "buy", "10", None, "submitted", "0", None, "0"),  # market rest: 10
            ("p1", "o2", "AAPL", "buy", "10", "101", "partially_filled", "4", "100", "1"),  # 3 unbooked, 6 open
            ("p1", "o3", "MSFT", "sell", "5", None, "filled", "5", "200", "2"),  # 3 sold, not booked
            ("p1", "o4", "MSFT", "buy", "8", "50", "canceled", "2", "49", "2"),  # closed, all booked
            ("p2", "o5", "NVDA", "buy", "7", None, "filled", "7", "30", "7"),  # done
        ]
        for n, (pid, coid, symbol, side, qty, limit, status, filled, avg, booked) in enumerate(rows):
            await con.execute(
                "INSERT INTO trades (client_order_id, portfolio_id, symbol, side, order_type, qty, limit_price,"
                " status, strategy, tick_id, requested_at, updated_position, filled_qty, avg_fill_price, booked_qty)"
                " VALUES ($1, $2, $3, $4, 'market', $5, $6, $7, 's', 't', $8, $9, $10, $11, $12)",
                coid, pid, symbol, side, Decimal(qty), None if limit is None else Decimal(limit), status, AT, n,
                Decimal(filled), None if avg is None else Decimal(avg), Decimal(booked),
            )
        committed = await committed_orders(con)
    finally:
        await con.close()
        await store.close()
    assert sorted(committed, key=lambda c: (c.portfolio_id, c.symbol, c.side.value, c.notional is None)) == [
        CommittedOrder(portfolio_id="p1", symbol="AAPL", side=Side.BUY, qty=Decimal(9), notional=Decimal(906)),
        # 10 open at the market + 2 requested since (market)
        CommittedOrder(portfolio_id="p1", symbol="AAPL", side=Side.BUY, qty=Decimal(12), notional=None),
        CommittedOrder(portfolio_id="p1", symbol="MSFT", side=Side.SELL, qty=Decimal(3), notional=Decimal(600)),
        # requested since, at its limit
        CommittedOrder(portfolio_id="p1", symbol="NVDA", side=Side.BUY, qty=Decimal(3), notional=Decimal(93)),
    ]
