"""Web API benchmark: a page of a 10,000-order portfolio, over HTTP, on the embedded servers.

    python -m bench.web [--quick] [--json PATH]

The trades read model holds 10,000 orders of one portfolio (and 10,000 of nine others); the timed request is
``GET /api/orders?portfolio=P&limit=50`` through the real uvicorn server and a keep-alive HTTP client: the
first page, a page in the middle and the last page (cursor from the page before), each repeated, p50 and
p95 in milliseconds. Also the portfolio overview (``/api/portfolios``) and its open orders.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from eventstore.projections import ProjectionRunner
from services.core import eventloop
from services.core.embedded import EmbeddedNats, EmbeddedPostgres
from services.core.settings import load_settings
from services.stack import all_projections, connect_runtime
from services.strategy.commands import apply_all
from services.strategy.config import parse_portfolio_spec
from services.web.server import WebServer

TARGETS = {"orders_first_page_p95_ms": 50.0, "orders_middle_page_p95_ms": 50.0, "orders_last_page_p95_ms": 50.0}
T0 = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
STATUSES = ("filled", "filled", "filled", "canceled", "rejected", "submitted")


async def fill_trades(dsn: str, portfolios: list[str], per_portfolio: int) -> None:
    con = await asyncpg.connect(dsn)
    try:
        rows = [
            (f"{p}-{i:06d}", p, "AAPL" if i % 2 else "MSFT", "buy" if i % 3 else "sell", STATUSES[i % len(STATUSES)],
             T0 + timedelta(minutes=5 * (i // 10)))  # ten orders per tick: ties in requested_at
            for p in portfolios for i in range(per_portfolio)
        ]
        await con.copy_records_to_table(
            "trades", records=[(*r[:4], "market", 10, r[4], "ma", f"t{r[5]:%H%M}", r[5], 0) for r in rows],
            columns=["client_order_id", "portfolio_id", "symbol", "side", "order_type", "qty", "status", "strategy",
                     "tick_id", "requested_at", "updated_position"],
        )
        await con.execute("ANALYZE trades")
    finally:
        await con.close()


async def timed(http: httpx.AsyncClient, path: str, params: dict[str, Any], repeat: int) -> tuple[list[float], Any]:
    samples = []
    body = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        response = await http.get(path, params=params)
        samples.append((time.perf_counter() - t0) * 1000)
        response.raise_for_status()
        body = response.json()
    return samples, body


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(quick: bool) -> dict[str, float]:
    repeat = 20 if quick else 100
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="openbell-bench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg").start(reuse=False)
        nats_server = EmbeddedNats(Path(tmp) / "nats").start(reuse=False)
        try:
            admin = await asyncpg.connect(pg.dsn())
            await admin.execute("CREATE DATABASE bench_web")
            await admin.close()
            settings = load_settings(database_url=pg.dsn("bench_web"), nats_url=nats_server.url, web_port=0)
            async with connect_runtime(settings, name="bench-web") as rt:
                names = [f"p{i:02d}" for i in range(10)]
                await apply_all(
                    rt.store, [parse_portfolio_spec({"name": n, "starting_cash": "100000"}) for n in names], T0
                )
                await ProjectionRunner(rt.store, all_projections()).run_once()
                await fill_trades(pg.dsn("bench_web"), names, 10_000)
                server = WebServer(rt)
                await server.start()
                try:
                    async with httpx.AsyncClient(base_url=server.url) as http:
                        base = {"portfolio": "p00", "limit": 50}
                        await timed(http, "/api/orders", base, 5)  # warm up: connections, plans
                        first, page = await timed(http, "/api/orders", base, repeat)
                        cursor = page["next_cursor"]
                        pages = 1
                        while True:  # walk to the middle and to the end, one page after another
                            _, page = await timed(http, "/api/orders", {**base, "cursor": cursor}, 1)
                            pages += 1
                            if pages == 100:
                                middle_cursor = cursor
                            if page["next_cursor"] is None:
                                last_cursor = cursor
                                break
                            cursor = page["next_cursor"]
                        assert pages == 200, pages
                        middle, _ = await timed(http, "/api/orders", {**base, "cursor": middle_cursor}, repeat)
                        last, page = await timed(http, "/api/orders", {**base, "cursor": last_cursor}, repeat)
                        assert len(page["items"]) == 50 and page["next_cursor"] is None
                        overview, _ = await timed(http, "/api/portfolios", {}, repeat)
                        open_orders, _ = await timed(http, "/api/orders", {**base, "open": "true"}, repeat)
                finally:
                    await server.stop()
            for name, samples in (("first_page", first), ("middle_page", middle), ("last_page", last),
                                  ("open_orders", open_orders)):
                results[f"orders_{name}_p50_ms"] = statistics.median(samples)
                results[f"orders_{name}_p95_ms"] = p(samples, 0.95)
            results["portfolios_p50_ms"] = statistics.median(overview)
            results["portfolios_p95_ms"] = p(overview, 0.95)
        finally:
            nats_server.stop()
            pg.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 samples per figure instead of 100")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    results = eventloop.run(run(args.quick))
    print(f"web benchmark ({'quick' if args.quick else 'full'}), {platform.node()}, {datetime.now(UTC):%Y-%m-%d}")
    for key, value in results.items():
        target = TARGETS.get(key)
        verdict = "" if target is None else ("  ok" if value <= target else f"  ABOVE target {target}")
        print(f"  {key:<28} {value:>10,.2f}{verdict}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"date": datetime.now(UTC).isoformat(), "quick": args.quick, **results},
                                        indent=2))


if __name__ == "__main__":
    main()
