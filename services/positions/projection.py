"""Read models of the positions service, all derived from the event log alone (a rebuild equals live):

- ``portfolios``: one row per opened portfolio: cash, starting cash, realized / unrealized P&L, market
  value of the open positions, equity (cash + market value), halted. ``market_value``, ``unrealized_pnl``
  and ``equity`` are NULL while an open position has no observed price (never valued at 0);
  ``unpriced_positions`` says how many.
- ``positions``: one row per (portfolio, symbol) ever held (flat ones stay, with their realized P&L),
  the unassigned bucket (``portfolio_id = 'unassigned'``) included; valued at the latest observed price.
- ``latest_quotes``: the latest usable price per symbol (from QuotesObserved) and the latest problem
  reported for it (missing / no_price / stale), which never replaces the last good price.
- ``portfolio_snapshots``: the equity curve, one row per portfolio and trading day.
- ``position_discrepancies``: every PositionDiscrepancyDetected, with its status: ``fixed`` (the fix
  policy reconciled it at once), ``open`` (quarantined or halted, still seen) or ``resolved``.
- ``quarantined_symbols``: symbols no strategy may order (the strategy service reads this table).
- ``unbooked_fills``: order fills in the log not yet booked as FillApplied (position_sync treats their
  symbols as in flight: the broker has the fill, our books not yet; the fills consumer books a
  portfolio's fills in log order by waiting for the earlier ones).
- ``watched_symbols``: the symbols of every strategy universe (price_update and position_sync read it).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, ClassVar

import asyncpg

from eventstore import RecordedEvent
from eventstore.projections import Projection
from services.core.events import registry
from services.model.events.orders import OrderFilled, OrderPartiallyFilled
from services.model.events.positions import (
    FillApplied,
    PortfolioSnapshotTaken,
    PositionDiscrepancyDetected,
    PositionDiscrepancyResolved,
    PositionReconciled,
    QuotesObserved,
    SymbolQuarantined,
    SymbolQuarantineLifted,
)
from services.model.events.strategy import (
    PortfolioHalted,
    PortfolioOpened,
    PortfolioResumed,
    StrategyAttached,
    StrategyReconfigured,
)

DDL = """
CREATE TABLE IF NOT EXISTS portfolios (
    portfolio_id text PRIMARY KEY,
    name text NOT NULL,
    trading_mode text NOT NULL,
    starting_cash numeric NOT NULL,
    cash numeric NOT NULL,
    realized_pnl numeric NOT NULL DEFAULT 0,
    unrealized_pnl numeric,
    market_value numeric,
    equity numeric,
    unpriced_positions integer NOT NULL DEFAULT 0,
    halted boolean NOT NULL DEFAULT false,
    halt_reason text,
    opened_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (
    portfolio_id text NOT NULL,
    symbol text NOT NULL,
    qty numeric NOT NULL,
    avg_cost numeric,
    cost_basis numeric NOT NULL,
    realized_pnl numeric NOT NULL DEFAULT 0,
    last_price numeric,
    market_value numeric,
    unrealized_pnl numeric,
    price_at timestamptz,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (portfolio_id, symbol)
);
CREATE INDEX IF NOT EXISTS positions_symbol ON positions (symbol);
CREATE TABLE IF NOT EXISTS latest_quotes (
    symbol text PRIMARY KEY,
    price numeric,
    bid numeric,
    ask numeric,
    last numeric,
    quote_at timestamptz,
    observed_at timestamptz,
    tick_id text,
    problem text,
    problem_at timestamptz
);
CREATE TABLE IF NOT EXISTS portfolio_snapshots (
    portfolio_id text NOT NULL,
    trading_day date NOT NULL,
    total_value numeric NOT NULL,
    cash_balance numeric NOT NULL,
    positions_value numeric NOT NULL,
    realized_pnl numeric NOT NULL,
    unrealized_pnl numeric NOT NULL,
    taken_at timestamptz NOT NULL,
    PRIMARY KEY (portfolio_id, trading_day)
);
CREATE TABLE IF NOT EXISTS position_discrepancies (
    event_id uuid PRIMARY KEY,
    tick_id text NOT NULL,
    symbol text NOT NULL,
    kind text NOT NULL,
    ours_qty numeric NOT NULL,
    ours_avg_cost numeric,
    broker_qty numeric NOT NULL,
    broker_avg_price numeric,
    owners text[] NOT NULL,
    policy text NOT NULL,
    status text NOT NULL,
    detected_at timestamptz NOT NULL,
    resolved_at timestamptz,
    resolved_tick_id text
);
CREATE INDEX IF NOT EXISTS position_discrepancies_open ON position_discrepancies (symbol) WHERE status = 'open';
CREATE TABLE IF NOT EXISTS quarantined_symbols (
    symbol text PRIMARY KEY,
    reason text NOT NULL,
    since timestamptz NOT NULL,
    tick_id text NOT NULL
);
CREATE TABLE IF NOT EXISTS unbooked_fills (
    client_order_id text NOT NULL,
    cumulative_qty numeric NOT NULL,
    fill_qty numeric NOT NULL,
    portfolio_id text NOT NULL,
    symbol text NOT NULL,
    filled_at timestamptz NOT NULL,
    position bigint NOT NULL,
    PRIMARY KEY (client_order_id, cumulative_qty, fill_qty)
);
ALTER TABLE unbooked_fills ADD COLUMN IF NOT EXISTS position bigint NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS unbooked_fills_portfolio ON unbooked_fills (portfolio_id, position);
CREATE TABLE IF NOT EXISTS watched_symbols (
    portfolio_id text NOT NULL,
    strategy text NOT NULL,
    symbol text NOT NULL,
    PRIMARY KEY (portfolio_id, strategy, symbol)
);
"""

TABLES = (
    "portfolios",
    "positions",
    "latest_quotes",
    "portfolio_snapshots",
    "position_discrepancies",
    "quarantined_symbols",
    "watched_symbols",
    "unbooked_fills",
)

_EVENTS = (
    PortfolioOpened,
    PortfolioHalted,
    PortfolioResumed,
    StrategyAttached,
    StrategyReconfigured,
    FillApplied,
    OrderPartiallyFilled,
    OrderFilled,
    PositionReconciled,
    QuotesObserved,
    PortfolioSnapshotTaken,
    PositionDiscrepancyDetected,
    PositionDiscrepancyResolved,
    SymbolQuarantined,
    SymbolQuarantineLifted,
)

_SET_POSITION = """
INSERT INTO positions AS p (portfolio_id, symbol, qty, avg_cost, cost_basis, realized_pnl, last_price,
                            market_value, unrealized_pnl, price_at, updated_at)
SELECT $1, $2, $3::numeric, CASE WHEN $3::numeric = 0 THEN NULL ELSE $4::numeric / $3::numeric END, $4::numeric, $5,
       q.price, $3::numeric * q.price, $3::numeric * q.price - $4::numeric, q.quote_at, $6
FROM (SELECT 1) AS one LEFT JOIN latest_quotes q ON q.symbol = $2 AND q.price IS NOT NULL
ON CONFLICT (portfolio_id, symbol) DO UPDATE SET
    qty = EXCLUDED.qty,
    avg_cost = EXCLUDED.avg_cost,
    cost_basis = EXCLUDED.cost_basis,
    realized_pnl = p.realized_pnl + EXCLUDED.realized_pnl,
    last_price = EXCLUDED.last_price,
    market_value = EXCLUDED.market_value,
    unrealized_pnl = EXCLUDED.unrealized_pnl,
    price_at = EXCLUDED.price_at,
    updated_at = EXCLUDED.updated_at
"""

_REVALUE = """
UPDATE portfolios AS f SET
    realized_pnl = coalesce((SELECT sum(x.realized_pnl) FROM positions x WHERE x.portfolio_id = f.portfolio_id), 0),
    unpriced_positions = (SELECT count(*) FROM positions x
                          WHERE x.portfolio_id = f.portfolio_id AND x.qty <> 0 AND x.last_price IS NULL),
    market_value = (SELECT CASE WHEN count(x.last_price) = count(*) THEN coalesce(sum(x.market_value), 0) END
                    FROM positions x WHERE x.portfolio_id = f.portfolio_id AND x.qty <> 0),
    unrealized_pnl = (SELECT CASE WHEN count(x.last_price) = count(*) THEN coalesce(sum(x.unrealized_pnl), 0) END
                      FROM positions x WHERE x.portfolio_id = f.portfolio_id AND x.qty <> 0)
WHERE f.portfolio_id = ANY($1::text[]);
"""


class PortfolioProjection(Projection):
    name: ClassVar[str] = "portfolios"
    tables: ClassVar[tuple[str, ...]] = TABLES
    event_types: ClassVar[frozenset[str] | None] = frozenset(cls.__name__ for cls in _EVENTS)

    async def setup(self, con: asyncpg.Connection) -> None:
        await con.execute(DDL)

    async def apply(self, con: asyncpg.Connection, events: list[RecordedEvent]) -> None:
        touched: set[str] = set()
        for recorded in events:
            await self._apply_one(con, recorded, registry.decode(recorded), touched)
        await _revalue(con, touched)

    async def _apply_one(self, con: asyncpg.Connection, recorded: RecordedEvent, event: Any, touched: set[str]) -> None:
        match event:
            case PortfolioOpened():
                await con.execute(
                    """INSERT INTO portfolios (portfolio_id, name, trading_mode, starting_cash, cash, market_value,
                                               unrealized_pnl, equity, opened_at, updated_at)
                       VALUES ($1, $1, $2, $3, $3, 0, 0, $3, $4, $4) ON CONFLICT (portfolio_id) DO NOTHING""",
                    event.portfolio_id, event.trading_mode, event.starting_cash, event.at,
                )
            case PortfolioHalted():
                await con.execute(
                    "UPDATE portfolios SET halted = true, halt_reason = $2, updated_at = $3 WHERE portfolio_id = $1",
                    event.portfolio_id, event.reason, event.at,
                )
            case PortfolioResumed():
                await con.execute(
                    "UPDATE portfolios SET halted = false, halt_reason = NULL, updated_at = $2 WHERE portfolio_id = $1",
                    event.portfolio_id, event.at,
                )
            case StrategyAttached() | StrategyReconfigured():
                await con.execute(
                    "DELETE FROM watched_symbols WHERE portfolio_id = $1 AND strategy = $2",
                    event.portfolio_id, event.strategy,
                )
                await con.executemany(
                    "INSERT INTO watched_symbols (portfolio_id, strategy, symbol) VALUES ($1, $2, $3)"
                    " ON CONFLICT DO NOTHING",
                    [(event.portfolio_id, event.strategy, s) for s in event.universe],
                )
            case OrderPartiallyFilled() | OrderFilled():
                await con.execute(
                    """INSERT INTO unbooked_fills (client_order_id, cumulative_qty, fill_qty, portfolio_id, symbol,
                                                   filled_at, position)
                       VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING""",
                    event.client_order_id, event.cumulative_qty, event.fill_qty, event.portfolio_id, event.symbol,
                    event.filled_at, recorded.global_position,
                )
            case FillApplied():
                await con.execute(
                    "DELETE FROM unbooked_fills WHERE client_order_id = $1 AND cumulative_qty = $2 AND fill_qty = $3",
                    event.client_order_id, event.cumulative_qty, event.fill_qty,
                )
                await con.execute(
                    _SET_POSITION, event.portfolio_id, event.symbol, event.position_qty,
                    event.position_cost_basis, event.realized_pnl, event.at,
                )
                await con.execute(
                    "UPDATE portfolios SET cash = cash + $2, updated_at = greatest(updated_at, $3)"
                    " WHERE portfolio_id = $1",
                    event.portfolio_id, event.cash_change, event.at,
                )
                touched.add(event.portfolio_id)
            case PositionReconciled():
                await con.execute(
                    _SET_POSITION, event.portfolio_id, event.symbol, event.qty_after, event.cost_basis_after,
                    0, event.at,
                )
                await con.execute(
                    "UPDATE portfolios SET updated_at = greatest(updated_at, $2) WHERE portfolio_id = $1",
                    event.portfolio_id, event.at,
                )
                touched.add(event.portfolio_id)
            case QuotesObserved():
                await _observe_quotes(con, event, touched)
            case PortfolioSnapshotTaken():
                await con.execute(
                    """INSERT INTO portfolio_snapshots (portfolio_id, trading_day, total_value, cash_balance,
                           positions_value, realized_pnl, unrealized_pnl, taken_at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING""",
                    event.portfolio_id, event.trading_day, event.total_value, event.cash_balance,
                    event.positions_value, event.realized_pnl, event.unrealized_pnl, event.at,
                )
            case PositionDiscrepancyDetected():
                status = "fixed" if event.policy == "fix" else "open"
                await con.execute(
                    """INSERT INTO position_discrepancies (event_id, tick_id, symbol, kind, ours_qty, ours_avg_cost,
                           broker_qty, broker_avg_price, owners, policy, status, detected_at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING""",
                    recorded.event_id, event.tick_id, event.symbol, event.kind, event.ours_qty, event.ours_avg_cost,
                    event.broker_qty, event.broker_avg_price, list(event.owners), event.policy, status, event.at,
                )
            case PositionDiscrepancyResolved():
                await con.execute(
                    """UPDATE position_discrepancies SET status = 'resolved', resolved_at = $2, resolved_tick_id = $3
                       WHERE symbol = $1 AND status = 'open'""",
                    event.symbol, event.at, event.tick_id,
                )
            case SymbolQuarantined():
                await con.execute(
                    "INSERT INTO quarantined_symbols (symbol, reason, since, tick_id) VALUES ($1, $2, $3, $4)"
                    " ON CONFLICT (symbol) DO NOTHING",
                    event.symbol, event.reason, event.at, event.tick_id,
                )
            case SymbolQuarantineLifted():
                await con.execute("DELETE FROM quarantined_symbols WHERE symbol = $1", event.symbol)


async def _observe_quotes(con: asyncpg.Connection, event: QuotesObserved, touched: set[str]) -> None:
    symbols = sorted(event.quotes)
    if symbols:
        quotes = [event.quotes[s] for s in symbols]
        await con.execute(
            """INSERT INTO latest_quotes AS l (symbol, price, bid, ask, last, quote_at, observed_at, tick_id)
               SELECT * FROM unnest($1::text[], $2::numeric[], $3::numeric[], $4::numeric[], $5::numeric[],
                                    $6::timestamptz[], $7::timestamptz[], $8::text[])
               ON CONFLICT (symbol) DO UPDATE SET
                   price = EXCLUDED.price, bid = EXCLUDED.bid, ask = EXCLUDED.ask, last = EXCLUDED.last,
                   quote_at = EXCLUDED.quote_at, observed_at = EXCLUDED.observed_at, tick_id = EXCLUDED.tick_id,
                   problem = NULL, problem_at = NULL
               WHERE l.observed_at IS NULL OR l.observed_at <= EXCLUDED.observed_at""",
            symbols, [q.price for q in quotes], [q.bid for q in quotes], [q.ask for q in quotes],
            [q.last for q in quotes], [q.timestamp for q in quotes], [event.at] * len(symbols),
            [event.tick_id] * len(symbols),
        )
        rows = await con.fetch(
            """UPDATE positions AS p SET last_price = l.price, price_at = l.quote_at,
                   market_value = p.qty * l.price, unrealized_pnl = p.qty * l.price - p.cost_basis
               FROM latest_quotes l
               WHERE l.symbol = p.symbol AND l.symbol = ANY($1::text[]) AND l.tick_id = $2
               RETURNING p.portfolio_id""",
            symbols, event.tick_id,
        )
        touched.update(r["portfolio_id"] for r in rows)
    problems = sorted(event.problems.items())
    if problems:
        await con.execute(
            """INSERT INTO latest_quotes AS l (symbol, problem, problem_at)
               SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
               ON CONFLICT (symbol) DO UPDATE SET problem = EXCLUDED.problem, problem_at = EXCLUDED.problem_at
               WHERE l.problem_at IS NULL OR l.problem_at <= EXCLUDED.problem_at""",
            [s for s, _ in problems], [p for _, p in problems], [event.at] * len(problems),
        )


async def _revalue(con: asyncpg.Connection, portfolio_ids: Iterable[str]) -> None:
    ids = sorted(set(portfolio_ids))
    if not ids:
        return
    await con.execute(_REVALUE, ids)
    await con.execute(
        "UPDATE portfolios SET equity = cash + market_value WHERE portfolio_id = ANY($1::text[])", ids
    )


# ------------------------------------------------------------------------------------------ queries


async def held_symbols(con: asyncpg.Connection) -> list[str]:
    rows = await con.fetch("SELECT DISTINCT symbol FROM positions WHERE qty <> 0 ORDER BY symbol")
    return [r["symbol"] for r in rows]


async def watched_symbols(con: asyncpg.Connection) -> list[str]:
    rows = await con.fetch("SELECT DISTINCT symbol FROM watched_symbols ORDER BY symbol")
    return [r["symbol"] for r in rows]


async def latest_prices(
    con: asyncpg.Connection, symbols: Iterable[str] | None = None
) -> dict[str, tuple[Any, datetime]]:
    """symbol -> (price, quote time) of the latest usable observed quote."""
    if symbols is None:
        rows = await con.fetch("SELECT symbol, price, quote_at FROM latest_quotes WHERE price IS NOT NULL")
    else:
        rows = await con.fetch(
            "SELECT symbol, price, quote_at FROM latest_quotes WHERE price IS NOT NULL AND symbol = ANY($1::text[])",
            list(symbols),
        )
    return {r["symbol"]: (r["price"], r["quote_at"]) for r in rows}
