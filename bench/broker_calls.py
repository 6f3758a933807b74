"""Broker calls per order-status check (list_orders of all open orders) with alpaca-py on the fake server.

    python -m bench.broker_calls [--quick] [--json PATH]

For 10, 1,000 and 10,000 open orders: the GET /v2/orders calls one check makes, with and without the
``after`` floor (the oldest open order the caller tracks), and the wall time of one check.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.broker.alpaca import AlpacaBroker, load_alpaca_settings
from services.broker.ratelimit import RateLimiter
from services.broker.simulator import ManualClock
from services.core import eventloop
from tests.fake_alpaca import FakeAlpaca

KEY, SECRET = "bench-key", "bench-secret"
NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


async def measure(open_orders: int) -> dict[str, Any]:
    fake = FakeAlpaca(now=ManualClock(NOW), key_id=KEY, secret_key=SECRET, rate_limit_per_minute=1_000_000).start()
    settings = load_alpaca_settings(
        api_key_id=KEY, api_secret_key=SECRET, api_base_url=fake.url, api_data_url=fake.url, alpaca_read_timeout=30,
        trading_mode="live", live_trading="yes",  # the fake server is not Alpaca's paper host
    )
    broker = AlpacaBroker(settings, RateLimiter(1_000_000))
    try:
        oldest = NOW - timedelta(hours=1)
        fake.seed_open_orders(open_orders, start=oldest)
        fake.reset_counts()
        started = time.perf_counter()
        plain = await broker.list_orders("open")
        seconds = time.perf_counter() - started
        plain_calls = fake.calls["GET /v2/orders"]
        fake.reset_counts()
        floored = await broker.list_orders("open", after=oldest - timedelta(microseconds=1))
        floor_calls = fake.calls["GET /v2/orders"]
        assert len(plain) == len(floored) == open_orders, "every open order must be seen"
        return {
            "open_orders": open_orders,
            "list_calls": plain_calls,
            "list_calls_with_after_floor": floor_calls,
            "calls_per_order": plain_calls / open_orders,
            "seconds_per_check": round(seconds, 4),
        }
    finally:
        await broker.aclose()
        fake.stop()


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 and 1,000 open orders only")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    sizes = [10, 1_000] if args.quick else [10, 1_000, 10_000]
    rows = [await measure(n) for n in sizes]
    print(f"{'open orders':>12} {'list calls':>11} {'with after':>11} {'calls/order':>12} {'s/check':>9}")
    for row in rows:
        print(
            f"{row['open_orders']:>12,} {row['list_calls']:>11} {row['list_calls_with_after_floor']:>11}"
            f" {row['calls_per_order']:>12.4f} {row['seconds_per_check']:>9.3f}"
        )
    if args.json:
        report = {"bench": "broker_calls", "date": datetime.now(UTC).date().isoformat(), "results": rows}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(eventloop.run(main(sys.argv[1:])))
