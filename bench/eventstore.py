"""Event store benchmark on a real embedded PostgreSQL (fsync on).

    python -m bench.eventstore [--quick] [--json PATH]

Prints the figures and writes them as JSON (keys: append_single_eps, append_single_p50_ms,
append_single_p99_ms, append_batch100_eps, append_concurrent8_eps, read_all_eps, rebuild_eps).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import msgspec

from eventstore import EventRegistry, EventStore, NewEvent, RecordedEvent
from eventstore.projections import Projection, ProjectionRunner
from services.core import eventloop
from services.core.embedded import EmbeddedPostgres

TARGETS = {
    "append_single_eps": 4_500,
    "append_batch100_eps": 80_000,
    "append_concurrent8_eps": 10_000,
    "read_all_eps": 300_000,
    "rebuild_eps": 50_000,
}


class PriceObserved(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    price: Decimal
    at: datetime


registry = EventRegistry()
registry.register(PriceObserved)
AT = datetime(2026, 11, 24, 15, 30, tzinfo=UTC)


def event(i: int) -> NewEvent:
    return NewEvent(
        type="PriceObserved",
        data=PriceObserved(symbol=f"SYM{i % 50}", price=Decimal(i) / 100, at=AT),
        event_id=uuid.uuid4(),
    )


class LastPrices(Projection):
    """A realistic small read model: last price and count per symbol, written in batches."""

    name = "bench_last_prices"
    tables = ("bench_last_prices",)

    async def setup(self, con: asyncpg.Connection) -> None:
        await con.execute(
            "CREATE TABLE IF NOT EXISTS bench_last_prices (symbol text PRIMARY KEY, price numeric, n bigint)"
        )

    async def apply(self, con: asyncpg.Connection, events: list[RecordedEvent]) -> None:
        latest: dict[str, tuple[Decimal, int]] = {}
        for recorded in events:
            observed = registry.decode(recorded)
            _, n = latest.get(observed.symbol, (Decimal(0), 0))
            latest[observed.symbol] = (observed.price, n + 1)
        await con.execute(
            "INSERT INTO bench_last_prices SELECT * FROM unnest($1::text[], $2::numeric[], $3::bigint[])"
            " ON CONFLICT (symbol) DO UPDATE SET price = excluded.price, n = bench_last_prices.n + excluded.n",
            list(latest),
            [v[0] for v in latest.values()],
            [v[1] for v in latest.values()],
        )


async def bulk_load(store: EventStore, total: int) -> None:
    """Fill the log quickly (batches of 1000 over 4 writers) for the read and rebuild figures."""
    async def writer(w: int) -> None:
        for b in range(w, total // 1000, 4):
            await store.append(f"load-{b}", [event(b * 1000 + i) for i in range(1000)])

    await asyncio.gather(*(writer(w) for w in range(4)))


async def raw_baseline(dsn: str, n: int) -> dict[str, float]:
    pool = await asyncpg.create_pool(dsn, min_size=8, max_size=8)
    assert pool is not None
    await pool.execute(
        "CREATE TABLE raw_events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, stream text,"
        " version bigint, event_id uuid UNIQUE, data jsonb, UNIQUE (stream, version))"
    )
    insert = "INSERT INTO raw_events (stream, version, event_id, data) VALUES ($1, $2, $3, $4::jsonb)"
    body = msgspec.json.encode(event(0).data).decode()
    async with pool.acquire() as con:
        start = time.perf_counter()
        for i in range(n):
            await con.execute(insert, "single", i, uuid.uuid4(), body)
        single = n / (time.perf_counter() - start)

    async def writer(w: int) -> None:
        async with pool.acquire() as con:
            for i in range(n // 8):
                await con.execute(insert, f"conc-{w}", i, uuid.uuid4(), body)

    start = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(8)))
    concurrent = (n // 8 * 8) / (time.perf_counter() - start)
    await pool.close()
    return {"raw_insert_single_eps": single, "raw_insert_concurrent8_eps": concurrent}


async def run(quick: bool) -> dict[str, float]:
    single_n = 3_000 if quick else 20_000
    batch_calls = 100 if quick else 600
    concurrent_n = 2_000 if quick else 6_000
    rebuild_total = 50_000 if quick else 200_000
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="openbell-bench-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg").start(reuse=False)
        try:
            store = await EventStore.connect(server.dsn(), max_size=12)

            # 0. the raw asyncpg ceiling on this server: plain INSERTs into a table of the same shape.
            results.update(await raw_baseline(server.dsn(), single_n // 2))

            # 1. single-event appends, sequential (each its own commit).
            latencies = []
            start = time.perf_counter()
            for i in range(single_n):
                t0 = time.perf_counter()
                await store.append(f"single-{i % 100}", [event(i)])
                latencies.append(time.perf_counter() - t0)
            elapsed = time.perf_counter() - start
            results["append_single_eps"] = single_n / elapsed
            results["append_single_p50_ms"] = statistics.median(latencies) * 1000
            results["append_single_p99_ms"] = statistics.quantiles(latencies, n=100)[98] * 1000

            # 2. appends of 100 events per call.
            batches = [[event(i * 100 + j) for j in range(100)] for i in range(batch_calls)]
            start = time.perf_counter()
            for i, batch in enumerate(batches):
                await store.append(f"batch-{i}", batch)
            results["append_batch100_eps"] = batch_calls * 100 / (time.perf_counter() - start)

            # 3. eight concurrent appenders on different streams, one event per call.
            async def appender(w: int) -> None:
                for i in range(concurrent_n // 8):
                    await store.append(f"conc-{w}", [event(i)])

            start = time.perf_counter()
            await asyncio.gather(*(appender(w) for w in range(8)))
            results["append_concurrent8_eps"] = concurrent_n / (time.perf_counter() - start)

            # 4. read_all with decode, and 5. rebuild of one projection, over `rebuild_total` events.
            have = await store.count()
            await bulk_load(store, max(0, rebuild_total - have) // 1000 * 1000)
            total = await store.count()
            # Steady state of a live log: autovacuum has visited the older rows (an append-only table is
            # vacuumed by insert count), so reads do not pay first-touch hint-bit writes.
            async with store.pool.acquire() as con:
                await con.execute("VACUUM (ANALYZE) events")
            start = time.perf_counter()
            read = 0
            async for recorded in store.read_all():
                registry.decode(recorded)
                read += 1
            results["read_all_eps"] = read / (time.perf_counter() - start)
            assert read == total, f"read {read} of {total} events"

            runner = ProjectionRunner(store, [LastPrices()], batch_size=5000)
            await runner.setup()
            start = time.perf_counter()
            rebuilt = await runner.rebuild("bench_last_prices")
            results["rebuild_eps"] = rebuilt / (time.perf_counter() - start)
            results["rebuild_events"] = rebuilt
            await store.close()
        finally:
            server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer events (a smoke run)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    results = eventloop.run(run(args.quick))
    mode = 'quick' if args.quick else 'full'
    print(f"event store benchmark ({mode}), {platform.node()}, {datetime.now(UTC):%Y-%m-%d}")
    for key, value in results.items():
        target = TARGETS.get(key)
        verdict = "" if target is None else ("  ok" if value >= target else f"  BELOW target {target:,}")
        print(f"  {key:<24} {value:>12,.2f}{verdict}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"date": datetime.now(UTC).isoformat(), "quick": args.quick, **results}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
