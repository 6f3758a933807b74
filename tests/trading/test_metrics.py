"""Prometheus metrics over HTTP, from a strategy tick that ends in an order, on real NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from services.core.jobs.types import JobType
from services.core.metrics import serve_metrics
from services.stack import hosted
from services.strategy.commands import apply_all
from services.strategy.config import parse_portfolio_spec
from tests.positions.helpers import run_tick, settings_for, sim_factory
from tests.waiting import until

T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # Tuesday 10:00 New York


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_tick_and_its_order_show_in_the_metrics(pg_dsn: str, nats_url: str, subject_prefix: str) -> None:
    # RSI below 98 counts as oversold: the tick buys one share.
    spec = parse_portfolio_spec(
        {
            "name": "metered",
            "starting_cash": "1000000",
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
    port, stop = serve_metrics(0)
    try:
        runs = ("openbell_job_runs_total", (("job_type", "strategy_execution"), ("status", "completed")))
        durations = ("openbell_job_run_seconds_count", (("job_type", "strategy_execution"),))
        submitted = ("openbell_order_submissions_total", (("event", "OrderSubmitted"),))
        acked = ("openbell_consumer_messages_total", (("consumer", "orders_submit"), ("outcome", "acked")))
        published = ("openbell_relay_published_events_total", ())
        before = await asyncio.to_thread(scrape, port)
        settings = settings_for(pg_dsn, nats_url, subject_prefix)
        async with hosted(
            ["relay", "projections", "strategy", "orders"], settings, broker_factory=sim_factory(pg_dsn), virtual=True
        ) as ctx:
            await apply_all(ctx.rt.store, [spec], datetime.now(UTC))
            end = await run_tick(ctx, JobType.STRATEGY_EXECUTION, T0 - timedelta(minutes=15))
            assert end["type"] == "JobExecutionCompleted" and end["counters"]["trades_requested"] == 1, end

            async def counted() -> bool:
                now = await asyncio.to_thread(scrape, port)
                return now.get(submitted, 0) - before.get(submitted, 0) == 1

            await until(counted, what="one submitted order counted in the metrics")
            after = await asyncio.to_thread(scrape, port)
            async with ctx.rt.store.pool.acquire() as con:
                order_position = await con.fetchval(
                    "SELECT global_position FROM events WHERE event_type = 'OrderRequested'"
                )
            # The relay holds the lock and publishes up to the order request at least; this process's appends
            # reached at least as far.
            async def published_past_the_order() -> bool:
                now = await asyncio.to_thread(scrape, port)
                return now[("openbell_relay_published_position", ())] >= order_position

            await until(published_past_the_order, what="the relay's published position past the order request")
            now = await asyncio.to_thread(scrape, port)
            assert now[("openbell_relay_active", ())] == 1
            published_position = now[("openbell_relay_published_position", ())]
            assert now[("openbell_store_appended_position", ())] >= published_position
        assert (await asyncio.to_thread(scrape, port))[("openbell_relay_active", ())] == 0  # the relay stopped
        assert after[runs] - before.get(runs, 0) == 1
        assert after[durations] - before.get(durations, 0) == 1
        assert after[acked] - before.get(acked, 0) >= 1
        assert after[published] - before.get(published, 0) >= 3  # order request, evaluation, job run events
    finally:
        stop()
