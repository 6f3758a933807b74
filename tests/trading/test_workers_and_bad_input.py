"""Two strategy workers share a tick (each portfolio evaluated exactly once); bad input on commands and
on consumed subjects gets a clear error or a dead letter, and the services keep running."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
from nats.aio.client import Client as NatsClient

from services.broker.protocol import Broker
from services.broker.simulator import SimBroker, SimConfig
from services.clock import calendar
from services.core.host import ServiceContext
from services.core.jobs.types import JobType
from services.stack import hosted
from services.strategy.commands import apply_all
from tests.positions.helpers import redeliver_tick, run_tick, settings_for
from tests.trading.helpers import portfolios, rows
from tests.waiting import until

SESSION = calendar.session(datetime(2026, 11, 18).date())
assert SESSION is not None
TICK = SESSION.open + timedelta(hours=2)


def sim_for(pg_dsn: str):  # type: ignore[no-untyped-def]
    async def sim(ctx: ServiceContext) -> Broker:
        return await SimBroker.connect(pg_dsn, SimConfig(seed=9, starting_cash=Decimal(10_000_000)), now=ctx.tick_time)

    return sim


async def test_two_strategy_workers_evaluate_each_portfolio_once(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient
) -> None:
    specs = portfolios(16)
    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    async with (
        hosted(["relay", "projections", "strategy"], settings, broker_factory=sim_for(pg_dsn), worker="w1") as one,
        hosted(["strategy"], settings, broker_factory=sim_for(pg_dsn), worker="w2") as two,
    ):
        store = one.rt.store
        await apply_all(store, specs, datetime.now(UTC))
        end = await run_tick(one, JobType.STRATEGY_EXECUTION, TICK, timeout=60)
        assert end["type"] == "JobExecutionCompleted", end
        assert end["counters"]["portfolios_processed"] == len(specs)
        # Both workers' caches hold bars: the work was shared, not done twice.
        evaluated = await rows(store, "SELECT stream_id FROM events WHERE event_type = 'PortfolioEvaluated'")
        assert Counter(r["stream_id"] for r in evaluated) == {f"evaluation-{s.name}@{end['tick_id']}": 1 for s in specs}
        requests = await rows(
            store, "SELECT stream_id, count(*) AS n FROM events WHERE event_type = 'OrderRequested' GROUP BY 1"
        )
        assert all(r["n"] == 1 for r in requests)
        assert end["counters"]["trades_requested"] == len(requests)

        # The same tick again (a redelivery) evaluates nobody a second time.
        await redeliver_tick(two, JobType.STRATEGY_EXECUTION, TICK, "strategy")
        again = await rows(store, "SELECT count(*) AS n FROM events WHERE event_type = 'PortfolioEvaluated'")
        assert again[0]["n"] == len(specs)


async def test_bad_input_is_refused_or_dead_lettered(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient
) -> None:
    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    async with hosted(["relay", "projections", "strategy", "orders"], settings, broker_factory=sim_for(pg_dsn)) as ctx:
        store, subjects = ctx.rt.store, ctx.rt.subjects

        async def command(name: str, body: object) -> dict[str, object]:
            reply = await nc.request(subjects.cmd(f"portfolio.{name}"), msgspec.json.encode(body), timeout=5)
            return msgspec.json.decode(reply.data)

        bad = {
            "negative cash": ("open", {"name": "p1", "starting_cash": "-5"}),
            "bad name": ("open", {"name": "Bad Name", "starting_cash": "100"}),
            "unknown kind": (
                "open",
                {"name": "p1", "starting_cash": "100", "strategy": [{"kind": "astrology", "universe": ["AAPL"]}]},
            ),
            "bad symbol": (
                "open",
                {"name": "p1", "starting_cash": "100", "strategy": [{"kind": "momentum", "universe": ["aapl"]}]},
            ),
            "bad parameters": (
                "open",
                {
                    "name": "p1",
                    "starting_cash": "100",
                    "strategy": [
                        {
                            "kind": "ma_crossover",
                            "universe": ["AAPL"],
                            "parameters": {"fast_window": 30, "slow_window": 10},
                        }
                    ],
                },
            ),
            "unknown portfolio": ("halt", {"portfolio": "nobody"}),
            "unknown command": ("explode", {}),
            "not an object": ("open", [1, 2]),
        }
        for label, (name, body) in bad.items():
            answer = await command(name, body)
            assert set(answer) == {"error"}, (label, answer)
            assert isinstance(answer["error"], str) and answer["error"], label
        raw = await nc.request(subjects.cmd("portfolio.open"), b"{not json", timeout=5)
        assert "error" in msgspec.json.decode(raw.data)
        assert await store.count() == 0, "a refused command appended something"

        # Garbage on the subjects the services consume: dead-lettered with the reason.
        await ctx.rt.js.publish(subjects.event("order", "OrderRequested"), b"garbage")
        await ctx.rt.js.publish(subjects.work("strategy_execution"), b'{"tick_id": 1}')

        async def dead_letters() -> list[str]:
            info = await ctx.rt.js.stream_info(subjects.dlq_stream)
            if info.state.messages == 0:
                return []
            reasons = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await ctx.rt.js.get_msg(subjects.dlq_stream, seq)
                reasons.append(f"{msg.subject}: {(msg.headers or {}).get('Openbell-Dlq-Reason')}")
            # The garbage event reaches two consumers (orders, and the relay's event feeds), the work item
            # one: each of them dead-letters it; wait for the two this test is about.
            wanted = (subjects.dlq("orders"), subjects.dlq("strategy"))
            return reasons if all(any(r.startswith(w) for r in reasons) for w in wanted) else []

        reasons = await until(dead_letters, what="the dead letters of the orders and strategy consumers")
        assert any(r.startswith(subjects.dlq("orders")) and "malformed OrderRequested" in r for r in reasons), reasons
        assert any(r.startswith(subjects.dlq("strategy")) and "malformed work item" in r for r in reasons), reasons

        # The services keep running: a valid portfolio trades through both of them.
        answer = await command(
            "open",
            {
                "name": "p1",
                "starting_cash": "100000",
                "strategy": [
                    {
                        "kind": "momentum",
                        "universe": ["AAPL", "MSFT", "NVDA", "TSLA"],
                        "parameters": {"lookback": 2, "threshold": "0.0001"},
                    }
                ],
            },
        )
        assert answer.get("ok") is True, answer
        again = await command("open", {"name": "p1", "starting_cash": "100000"})
        assert "already exists" in str(again["error"])
        end = await run_tick(ctx, JobType.STRATEGY_EXECUTION, TICK)
        assert end["type"] == "JobExecutionCompleted" and end["counters"]["portfolios_processed"] == 1, end
        if end["counters"]["trades_requested"]:

            async def submitted() -> bool:
                await ctx.catch_up("trades")
                found = await rows(store, "SELECT status FROM trades")
                return bool(found) and all(r["status"] != "requested" for r in found)

            await until(submitted, what="every requested order submitted")


async def test_global_halt_refuses_orders_until_resumed(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient
) -> None:
    from services.strategy.commands import set_global_halt
    from services.strategy.config import parse_portfolio_spec

    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    async with hosted(["relay", "projections", "strategy"], settings, broker_factory=sim_for(pg_dsn)) as ctx:
        store = ctx.rt.store
        # RSI below 98 counts as oversold here: every symbol is a buy at every tick.
        spec = parse_portfolio_spec(
            {
                "name": "buyer",
                "starting_cash": "1000000",
                "strategy": [
                    {
                        "kind": "rsi_mean_reversion",
                        "universe": ["AAPL", "MSFT"],
                        "parameters": {"period": 5, "oversold": "98", "overbought": "99"},
                        "sizing": {"method": "fixed_quantity", "quantity": "1"},
                    }
                ],
            }
        )
        await apply_all(store, [spec], datetime.now(UTC))
        assert (await set_global_halt(store, True, "test", datetime.now(UTC))).changes == ("halt all trading",)
        halted = await run_tick(ctx, JobType.STRATEGY_EXECUTION, TICK)
        assert halted["counters"]["trades_requested"] == 0 and halted["counters"]["orders_refused"] == 2, halted
        refusals = await rows(
            store, "SELECT data->>'rule' AS rule FROM events WHERE event_type = 'OrderRejectedByRisk'"
        )
        assert [r["rule"] for r in refusals] == ["global_halt", "global_halt"]

        await set_global_halt(store, False, "test over", datetime.now(UTC))
        resumed = await run_tick(ctx, JobType.STRATEGY_EXECUTION, TICK + timedelta(minutes=15))
        assert resumed["counters"]["trades_requested"] == 2, resumed
