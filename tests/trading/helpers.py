"""Helpers of the trading-loop tests: demo-like portfolios, and the invariants a trading run must keep."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

import msgspec

from eventstore import EventStore
from eventstore.projections import ProjectionRunner
from services.core.events import registry
from services.model.events.orders import OrderFilled, OrderPartiallyFilled
from services.model.vocabulary import Side
from services.positions.books import load_book
from services.stack import all_projections
from services.strategy.config import PortfolioSpec, parse_portfolio_spec
from tests.waiting import until

TERMINAL = {"filled", "canceled", "rejected", "expired"}
KINDS = (
    ("momentum", {"lookback": 8, "threshold": "0.003"}),
    ("ma_crossover", {"fast_window": 4, "slow_window": 12}),
    ("rsi_mean_reversion", {"period": 10, "oversold": "40", "overbought": "60"}),
)
UNIVERSES = (("AAPL", "MSFT", "NVDA"), ("AMZN", "META", "AAPL"), ("TSLA", "JPM", "V"), ("KO", "PEP", "MSFT"))


def portfolios(count: int, cash: str = "50000") -> list[PortfolioSpec]:
    return [
        parse_portfolio_spec(
            {
                "name": f"p{i + 1}",
                "starting_cash": cash,
                "risk": {"max_order_notional": "10000", "max_position_weight": "0.5"},
                "strategy": [
                    {
                        "kind": KINDS[i % len(KINDS)][0],
                        "parameters": KINDS[i % len(KINDS)][1],
                        "universe": list(UNIVERSES[i % len(UNIVERSES)]),
                        "sizing": {"method": "fixed_notional", "notional": "4000"},
                    }
                ],
            }
        )
        for i in range(count)
    ]


async def rows(store: EventStore, sql: str, *args: Any) -> list[Any]:
    async with store.pool.acquire() as con:
        return list(await con.fetch(sql, *args))


async def fills_by_portfolio(store: EventStore) -> dict[str, list[OrderFilled | OrderPartiallyFilled]]:
    fills: dict[str, list[Any]] = defaultdict(list)
    async for recorded in store.read_all():
        if recorded.type in ("OrderFilled", "OrderPartiallyFilled"):
            event = registry.decode(recorded)
            fills[event.portfolio_id].append(event)
    return fills


async def assert_books_equal_sum_of_fills(store: EventStore, specs: list[PortfolioSpec]) -> int:
    """Cash and positions of every portfolio equal its starting cash and the sum of its fills; returns
    the number of fills checked."""
    fills = await fills_by_portfolio(store)
    checked = 0
    for spec in specs:
        book, _ = await load_book(store, spec.name)
        assert book is not None
        cash = spec.starting_cash
        qty: dict[str, Decimal] = defaultdict(Decimal)
        for fill in fills.get(spec.name, []):
            sign = 1 if fill.side is Side.BUY else -1
            cash -= sign * fill.fill_notional
            qty[fill.symbol] += sign * fill.fill_qty
            checked += 1
        assert book.cash == cash, f"{spec.name}: cash {book.cash} != starting cash and fills {cash}"
        held = {s: p.qty for s, p in book.positions.items() if p.qty != 0}
        assert held == {s: q for s, q in qty.items() if q != 0}, f"{spec.name}: positions differ from fills"
    return checked


async def books_settle_to_fills(store: EventStore, specs: list[PortfolioSpec], timeout: float = 20.0) -> int:
    """Wait until the positions service has booked every fill (it follows the log), then check the books."""

    async def settled() -> tuple[int]:
        return (await assert_books_equal_sum_of_fills(store, specs),)

    (checked,) = await until(
        settled,
        timeout,
        "the books to equal the sum of the fills",
        interval=0.1,
        tolerate=lambda exc: isinstance(exc, AssertionError),
    )
    return checked


async def read_model_tables(store: EventStore) -> dict[str, list[tuple[Any, ...]]]:
    tables: dict[str, list[tuple[Any, ...]]] = {}
    async with store.pool.acquire() as con:
        for projection in all_projections():
            for table in projection.tables:
                tables[table] = sorted(
                    (
                        tuple(msgspec.json.encode(v).decode() if isinstance(v, dict | list) else v for v in r)
                        for r in await con.fetch(f"SELECT * FROM {table}")
                    ),
                    key=repr,
                )
    return tables


async def assert_rebuild_equals_live(store: EventStore) -> None:
    runner = ProjectionRunner(store, all_projections())
    await runner.run_once()
    live = await read_model_tables(store)
    for name in runner.projections:
        await runner.rebuild(name)
    rebuilt = await read_model_tables(store)
    for table, live_rows in live.items():
        assert rebuilt[table] == live_rows, f"{table}: rebuilt from the log differs from the live read model"
