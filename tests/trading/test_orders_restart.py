"""The orders service as its own process (``openbell serve orders``), killed with SIGKILL while orders flow
and started again: nothing is lost, nothing is sent twice, every order ends, the books equal the fills."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError

from services.broker.protocol import Broker
from services.broker.simulator import SimBroker, SimConfig
from services.broker.simulator.engine import FillPolicy
from services.clock import calendar
from services.clock.virtual import VirtualClock
from services.core.host import ServiceContext
from services.core.jobs.types import JobType
from services.stack import hosted
from services.strategy.commands import apply_all
from tests.positions.helpers import settings_for
from tests.trading.helpers import TERMINAL, books_settle_to_fills, portfolios, rows
from tests.waiting import until

DAY = calendar.session(date(2026, 11, 18))
SEED, CASH, LATENCY = 5, Decimal(500_000), 20


def start_orders_service(pg_dsn: str, nats_url: str, prefix: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "OPENBELL_DATABASE_URL": pg_dsn,
        "OPENBELL_NATS_URL": nats_url,
        "OPENBELL_SUBJECT_PREFIX": prefix,
        "OPENBELL_SIM_SEED": str(SEED),
        "OPENBELL_SIM_STARTING_CASH": str(CASH),
        "OPENBELL_SIM_FILL_LATENCY_SECONDS": str(LATENCY),
        "OPENBELL_ACK_WAIT_SECONDS": "2",
        "OPENBELL_JOB_TAKEOVER_SECONDS": "2",
        "OPENBELL_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "orders"], env=env)


async def test_orders_service_killed_and_restarted(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient
) -> None:
    assert DAY is not None
    specs = portfolios(4)
    start, end = DAY.open - timedelta(minutes=1), DAY.close + timedelta(minutes=10)

    async def sim(ctx: ServiceContext) -> Broker:
        ctx.tick_time.set(start)
        config = SimConfig(
            seed=SEED, starting_cash=CASH, fill_policy=FillPolicy(fill_latency=timedelta(seconds=LATENCY))
        )
        return await SimBroker.connect(pg_dsn, config, now=ctx.tick_time)

    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    services = ["relay", "projections", "strategy", "positions", "alerts"]
    process = start_orders_service(pg_dsn, nats_url, subject_prefix)
    try:
        async with hosted(services, settings, broker_factory=sim, virtual=True) as ctx:
            store = ctx.rt.store
            await apply_all(store, specs, datetime.now(UTC))

            async def orders_consuming() -> bool:
                try:
                    await ctx.rt.js.consumer_info(ctx.rt.subjects.ticks_stream, "orders_order_status_check")
                except NotFoundError:
                    return False
                return True

            await until(orders_consuming, 30, "the orders process's order_status_check consumer")
            clock = VirtualClock(store, ctx.rt.nc, ctx.rt.subjects, tick_timeout=60)
            kill_at = DAY.open + timedelta(hours=2, minutes=15)
            killed = asyncio.Event()

            def on_instant(instant: datetime, ticks: list[object]) -> None:
                # Right after a strategy tick: its orders are on their way to the orders service.
                if instant == kill_at and not killed.is_set():
                    process.send_signal(signal.SIGKILL)
                    killed.set()

            run = asyncio.create_task(clock.run(start, end, on_instant=on_instant))
            await asyncio.wait_for(killed.wait(), 120)
            process.wait(10)
            assert process.returncode == -signal.SIGKILL
            await asyncio.sleep(0.5)  # the outage under test: the orders service stays down while ticks go on
            process = start_orders_service(pg_dsn, nats_url, subject_prefix)
            result = await asyncio.wait_for(run, 300)
            assert result.outcomes["completed"] == result.ticks, result.outcomes
            await ctx.catch_up()

            trades = await rows(store, "SELECT client_order_id, status, broker_order_id FROM trades")
            requested = await rows(store, "SELECT DISTINCT stream_id FROM events WHERE event_type = 'OrderRequested'")
            assert len(trades) == len(requested) > 5
            assert {t["status"] for t in trades} <= TERMINAL, {t["status"] for t in trades}
            # At the broker: exactly the orders we know, each once (its client order id is unique there).
            at_broker = await rows(store, "SELECT client_order_id FROM sim_orders")
            assert sorted(r["client_order_id"] for r in at_broker) == sorted(
                t["client_order_id"] for t in trades if t["broker_order_id"] is not None
            )
            submitted = await rows(
                store, "SELECT stream_id, count(*) AS n FROM events WHERE event_type = 'OrderSubmitted' GROUP BY 1"
            )
            assert all(r["n"] == 1 for r in submitted)
            assert await books_settle_to_fills(store, specs) > 0
            runs = await rows(
                store,
                "SELECT count(*) AS n FROM job_executions WHERE job_type = $1 AND status = 'completed'",
                JobType.ORDER_STATUS_CHECK.value,
            )
            assert runs[0]["n"] == 391
    finally:
        process.kill()
        process.wait(10)
