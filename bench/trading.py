"""Trading-loop benchmark on the embedded NATS and PostgreSQL with the simulator.

    python -m bench.trading [--quick] [--json PATH]

1. One strategy_execution tick over 1,000 portfolios x 20 symbols: seconds from the tick's publication
   to its recorded completion, and strategy evaluations per second.
2. Tick-to-order latency over 200 ticks: from a tick's publication to the simulated broker accepting the
   order it caused (through the job ledger, the fan-out, the strategy, the store, the relay and the
   orders service), p50 and p99. Each tick is published once the previous one is recorded whole (its run
   and its order's submission), as ticks of one job come minutes apart: a sample never queues behind
   the tail of the one before.
3. The same day's floor for that path, with raw nats-py and asyncpg and no openbell code: a message
   published on JetStream, taken by a durable pull consumer, one committed INSERT, a second JetStream
   publish, a second consumer, a second committed INSERT (two durable hops and two commits, where the
   real path has two hops and five commits). Figures drift with the machine; this one drifts with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from services.broker.models import Order, OrderRequest
from services.broker.simulator import SimBroker, SimConfig
from services.broker.simulator.market import DEFAULT_SYMBOLS
from services.clock.ticks import publish_tick
from services.core import eventloop
from services.core.embedded import EmbeddedNats, EmbeddedPostgres
from services.core.host import ServiceContext
from services.core.jobs.types import JobType, Tick, TickReason
from services.core.settings import load_settings
from services.model.ids import client_order_id
from services.model.streams import order_stream
from services.stack import connect_runtime, hosted
from services.strategy.commands import apply_all
from services.strategy.config import parse_portfolio_spec

TARGETS = {"tick_1000x20_seconds": 5.0, "tick_to_order_p50_ms": 10.0, "tick_to_order_p99_ms": 50.0}
T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # Tuesday 10:00 New York


class TimedSimBroker(SimBroker):
    """The simulator, noting when it accepted each order (the end of the tick-to-order path)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.accepted: dict[str, float] = {}
        self.waiting: dict[str, asyncio.Event] = {}

    def at(self, moment: datetime) -> SimBroker:
        # Orders are submitted through a view of the broker at their tick's time: it shares these notes.
        view = super().at(moment)
        assert isinstance(view, TimedSimBroker)
        view.accepted, view.waiting = self.accepted, self.waiting
        return view

    async def submit_order(self, request: OrderRequest) -> Order:
        order = await super().submit_order(request)
        self.accepted[request.client_order_id] = time.perf_counter()
        if (waiter := self.waiting.get(request.client_order_id)) is not None:
            waiter.set()
        return order


async def wait_recorded(store: Any, tick_id: str, timeout: float = 300.0) -> str:
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while time.monotonic() < deadline:
        async for event in store.read_stream(f"jobrun-{tick_id}"):
            if event.type in ("JobExecutionCompleted", "JobExecutionFailed", "JobExecutionSkipped"):
                return event.type
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
    raise TimeoutError(f"{tick_id} not recorded")


async def wait_submitted(store: Any, client_order_id: str, timeout: float = 30.0) -> None:
    """Until the orders service has recorded what the broker answered for the order."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await store.stream_version(order_stream(client_order_id)) >= 1:
            return
        await asyncio.sleep(0.001)
    raise TimeoutError(f"order {client_order_id} not recorded as submitted")


async def big_tick(dsn: str, nats_url: str, portfolios: int, symbols: int) -> dict[str, float]:
    settings = load_settings(database_url=dsn, nats_url=nats_url, subject_prefix="benchbig")
    universe = list(DEFAULT_SYMBOLS[:symbols])
    specs = [
        parse_portfolio_spec(
            {
                "name": f"p{i:04d}",
                "starting_cash": "100000",
                "strategy": [{"kind": ("momentum", "ma_crossover", "rsi_mean_reversion")[i % 3], "universe": universe}],
            }
        )
        for i in range(portfolios)
    ]

    async def sim(ctx: ServiceContext) -> SimBroker:
        return await SimBroker.connect(dsn, SimConfig(seed=1, starting_cash=Decimal(10**9)), now=ctx.tick_time)

    async with connect_runtime(settings, pool_size=20) as rt:
        await apply_all(rt.store, specs, datetime.now(UTC))
        async with hosted(["relay", "projections", "strategy"], runtime=rt, broker_factory=sim, virtual=True) as ctx:
            await ctx.catch_up()
            # Warm the bar history of the symbols (a service that has run for a while has it).
            warm = Tick.for_slot(
                JobType.STRATEGY_EXECUTION, T0 - timedelta(minutes=15), emitted_at=T0, reason=TickReason.MANUAL
            )
            await publish_tick(rt.js, rt.subjects, warm)
            await wait_recorded(rt.store, warm.tick_id)
            tick = Tick.for_slot(JobType.STRATEGY_EXECUTION, T0, emitted_at=T0, reason=TickReason.MANUAL)
            start = time.perf_counter()
            await publish_tick(rt.js, rt.subjects, tick)
            outcome = await wait_recorded(rt.store, tick.tick_id)
            seconds = time.perf_counter() - start
    if outcome != "JobExecutionCompleted":
        raise RuntimeError(f"the big tick ended {outcome}")
    return {
        "tick_1000x20_seconds": seconds,
        "evaluations_per_second": portfolios * symbols / seconds,
        "portfolios": portfolios,
        "symbols": symbols,
    }


async def tick_to_order(dsn: str, nats_url: str, ticks: int) -> dict[str, float]:
    settings = load_settings(database_url=dsn, nats_url=nats_url, subject_prefix="benchlatency")
    # RSI below 98 counts as oversold here: every tick is a buy of one share.
    spec = parse_portfolio_spec(
        {
            "name": "latency",
            "starting_cash": "100000000",
            "risk": {"max_position_weight": "1", "max_order_notional": "1000000"},
            "strategy": [
                {
                    "kind": "rsi_mean_reversion",
                    "universe": ["AAPL"],
                    "parameters": {"period": 5, "oversold": "98", "overbought": "99"},
                    "sizing": {"method": "fixed_quantity", "quantity": "1"},
                }
            ],
        }
    )
    holder: dict[str, TimedSimBroker] = {}

    async def sim(ctx: ServiceContext) -> TimedSimBroker:
        broker = await TimedSimBroker.connect(dsn, SimConfig(seed=2, starting_cash=Decimal(10**9)), now=ctx.tick_time)
        assert isinstance(broker, TimedSimBroker)  # connect() builds the class it is called on
        holder["broker"] = broker
        return broker

    latencies: list[float] = []
    services = ["relay", "projections", "strategy", "orders"]
    async with connect_runtime(settings) as rt:
        await apply_all(rt.store, [spec], datetime.now(UTC))
        async with hosted(services, runtime=rt, broker_factory=sim, virtual=True):
            for i in range(ticks + 5):  # the first five warm up connections and caches
                at = T0 + timedelta(minutes=i)
                tick = Tick.for_slot(JobType.STRATEGY_EXECUTION, at, emitted_at=at, reason=TickReason.MANUAL)
                coid = client_order_id("latency", tick.tick_id, "AAPL", "buy")
                start = time.perf_counter()
                await publish_tick(rt.js, rt.subjects, tick)
                while "broker" not in holder:  # the first tick creates the broker
                    if time.perf_counter() > start + 30:
                        raise TimeoutError("the strategy never reached the broker")
                    await asyncio.sleep(0.001)
                broker = holder["broker"]
                if coid not in broker.accepted:
                    # Woken by the broker itself: no polling loop competes with the services for the CPU.
                    accepted = broker.waiting[coid] = asyncio.Event()
                    try:
                        await asyncio.wait_for(accepted.wait(), 30)
                    except TimeoutError:
                        raise TimeoutError(f"no order for {tick.tick_id}") from None
                if i >= 5:
                    latencies.append((broker.accepted[coid] - start) * 1000)
                await wait_recorded(rt.store, tick.tick_id)
                await wait_submitted(rt.store, coid)
    latencies.sort()
    return {
        "tick_to_order_p50_ms": statistics.median(latencies),
        "tick_to_order_p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "tick_to_order_samples": len(latencies),
    }


async def raw_floor(dsn: str, nats_url: str, samples: int) -> dict[str, float]:
    """p50 of the raw two-hop chain (see the module docstring)."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    con = await asyncpg.connect(dsn)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        await con.execute("CREATE TABLE raw_chain (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text)")
        await js.add_stream(name="RAWCHAIN", subjects=["rawchain.>"])
        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT)
        first = await js.pull_subscribe("rawchain.tick", durable="raw_first", stream="RAWCHAIN", config=config)
        second = await js.pull_subscribe("rawchain.order", durable="raw_second", stream="RAWCHAIN", config=config)
        done: asyncio.Queue[float] = asyncio.Queue()

        async def hop(sub: Any, then: str | None) -> None:
            while True:
                try:
                    messages = await sub.fetch(1, timeout=1.0)
                except TimeoutError:
                    continue
                for message in messages:
                    await con.execute("INSERT INTO raw_chain (body) VALUES ($1)", message.data.decode())
                    if then is not None:
                        await js.publish(then, message.data)
                    else:
                        await done.put(time.perf_counter())
                    await message.ack()

        tasks = [asyncio.create_task(hop(first, "rawchain.order")), asyncio.create_task(hop(second, None))]
        latencies = []
        for i in range(samples + 5):
            start = time.perf_counter()
            await js.publish("rawchain.tick", f"tick {i}".encode())
            end = await asyncio.wait_for(done.get(), 30)
            if i >= 5:
                latencies.append((end - start) * 1000)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await nc.close()
        await con.close()
    return {"raw_two_hop_floor_p50_ms": statistics.median(latencies)}


async def run(quick: bool) -> dict[str, float]:
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="openbell-bench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg").start(reuse=False)
        nats_server = EmbeddedNats(Path(tmp) / "nats").start(reuse=False)
        try:
            admin = await asyncpg.connect(pg.dsn())
            for database in ("bench_tick", "bench_latency", "bench_raw"):
                await admin.execute(f"CREATE DATABASE {database}")
            await admin.close()
            # The latency first: after the big tick, the server is still busy writing out its 50,000 rows.
            results.update(await raw_floor(pg.dsn("bench_raw"), nats_server.admin_url, 40 if quick else 200))
            results.update(await tick_to_order(pg.dsn("bench_latency"), nats_server.admin_url, 40 if quick else 200))
            results.update(await big_tick(pg.dsn("bench_tick"), nats_server.admin_url, 200 if quick else 1000, 20))
        finally:
            nats_server.stop()
            pg.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 portfolios and 40 ticks (a smoke run)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    results = eventloop.run(run(args.quick))
    mode = "quick" if args.quick else "full"
    print(f"trading benchmark ({mode}), {platform.node()}, {datetime.now(UTC):%Y-%m-%d}")
    for key, value in results.items():
        target = TARGETS.get(key)
        verdict = "" if target is None else ("  ok" if value <= target else f"  ABOVE target {target}")
        print(f"  {key:<26} {value:>12,.2f}{verdict}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"date": datetime.now(UTC).isoformat(), "quick": args.quick, **results}, indent=2)
        )


if __name__ == "__main__":
    main()
