"""``openbell orders``: the trades read model (one row per order), newest first."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import msgspec
import typer
from rich.table import Table

from services.cli_support import console, run_async
from services.orders.lifecycle import OrderStatus


def register(app: typer.Typer) -> None:
    @app.command()
    def orders(
        portfolio: Annotated[str | None, typer.Option("--portfolio", "-p", help="Only this portfolio.")] = None,
        status: Annotated[OrderStatus | None, typer.Option("--status", help="Only orders with this status.")] = None,
        limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 50,
        as_json: Annotated[bool, typer.Option("--json", help="A JSON array of orders.")] = False,
    ) -> None:
        """Orders with their status, quantities, average fill price and broker ids."""
        from eventstore.projections import ProjectionRunner
        from services.orders.projection import TradesProjection
        from services.stack import connect_runtime

        async def main() -> list[Any]:
            async with connect_runtime(name="openbell-orders") as rt:
                await ProjectionRunner(rt.store, [TradesProjection()]).run_once()
                async with rt.store.pool.acquire() as con:
                    return await con.fetch(
                        "SELECT * FROM trades WHERE ($1::text IS NULL OR portfolio_id = $1)"
                        " AND ($2::text IS NULL OR status = $2) ORDER BY requested_at DESC, client_order_id LIMIT $3",
                        portfolio,
                        None if status is None else status.value,
                        limit,
                    )

        rows = run_async(main)
        if as_json:
            # Money and quantities as strings (exact decimals), times ISO 8601 in UTC.
            sys.stdout.write(msgspec.json.encode([dict(r) for r in rows], enc_hook=str).decode() + "\n")
            return
        table = Table(title="orders (times UTC)")
        for column in (
            "requested",
            "portfolio",
            "symbol",
            "side",
            "qty",
            "filled",
            "avg price",
            "status",
            "strategy",
            "client order id",
            "broker id",
        ):
            table.add_column(column)
        for row in rows:
            table.add_row(
                f"{row['requested_at']:%Y-%m-%d %H:%MZ}",
                row["portfolio_id"],
                row["symbol"],
                row["side"],
                f"{row['qty']:f}",
                f"{row['filled_qty']:f}",
                "-" if row["avg_fill_price"] is None else f"{row['avg_fill_price']:.4f}",
                row["status"],
                row["strategy"],
                row["client_order_id"],
                row["broker_order_id"] or "-",
            )
        console.print(table)
