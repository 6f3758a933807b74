"""Two virtual weeks (November 16-30, 2026: 10 trading days, Thanksgiving closed, the early close of the
27th) on the simulator with every service live, and discrepancies injected at the broker on different days: each is
detected once and handled by its policy, there is exactly one snapshot per portfolio per trading day,
each alert fires once, and nothing else stops."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from nats.aio.client import Client as NatsClient

from services.alerts.service import AlertCommands
from services.broker.protocol import Broker
from services.broker.simulator import SimBroker, SimConfig
from services.broker.simulator.engine import FillPolicy
from services.clock import calendar
from services.clock.virtual import VirtualClock
from services.core.host import ServiceContext
from services.model.vocabulary import Side
from services.positions.books import load_book
from services.stack import hosted
from services.strategy.commands import apply_all
from services.strategy.config import parse_portfolio_spec
from tests.positions.helpers import append_fill, fill, settings_for
from tests.positions.test_virtual_days import sim_sql
from tests.waiting import until

POLICY = '{"quantity": "fix", "closed_at_broker": "halt", "unknown_at_broker": "quarantine"}'
SERVICES = ["relay", "projections", "strategy", "orders", "positions", "alerts"]
SESSIONS = calendar.sessions_between(date(2026, 11, 16), date(2026, 11, 30))
# Behind our back, after the close of these days: PEP reduced, KO closed, an unknown TSLA position.
INJECTIONS = {
    SESSIONS[2].day: "UPDATE sim_positions SET qty = 7 WHERE symbol = 'PEP'",
    SESSIONS[4].day: "DELETE FROM sim_positions WHERE symbol = 'KO'",
    SESSIONS[6].day: "INSERT INTO sim_positions VALUES ('TSLA', 4, 300)",
}


@pytest.mark.timeout(600)
async def test_two_virtual_weeks_with_injected_discrepancies(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(SESSIONS) == 10 and date(2026, 11, 26) not in {s.day for s in SESSIONS}
    monkeypatch.setenv("OPENBELL_POSITION_SYNC_POLICY", POLICY)
    specs = [
        parse_portfolio_spec(
            {
                "name": "trader",
                "starting_cash": "100000",
                "strategy": [
                    {
                        "kind": "momentum",
                        "parameters": {"lookback": 12, "threshold": "0.004"},
                        "universe": ["AAPL", "MSFT", "NVDA"],
                        "sizing": {"method": "fixed_notional", "notional": "5000"},
                    }
                ],
            }
        ),
        parse_portfolio_spec({"name": "holder", "starting_cash": "10000"}),
    ]
    start = SESSIONS[0].open - timedelta(minutes=1)

    async def sim(ctx: ServiceContext) -> Broker:
        ctx.tick_time.set(start)
        config = SimConfig(
            seed=8, starting_cash=Decimal(300_000), fill_policy=FillPolicy(fill_latency=timedelta(seconds=20))
        )
        broker = await SimBroker.connect(pg_dsn, config, now=ctx.tick_time)
        await sim_sql(pg_dsn, "INSERT INTO sim_positions VALUES ('PEP', 10, 50), ('KO', 5, 60) ON CONFLICT DO NOTHING")
        return broker

    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    async with hosted(SERVICES, settings, broker_factory=sim, virtual=True) as ctx:
        store = ctx.rt.store
        await apply_all(store, specs, datetime.now(UTC))
        await append_fill(store, fill("holder", "h1", "PEP", Side.BUY, "10", "10", "50", start, final=True))
        await append_fill(store, fill("holder", "h2", "KO", Side.BUY, "5", "5", "60", start, final=True))

        async def holder_booked() -> bool:
            book, _ = await load_book(store, "holder")
            return book is not None and book.position("KO").qty == 5 and book.position("PEP").qty == 10

        await until(holder_booked, what="the holder's fills booked")
        await ctx.broker()
        alerts = AlertCommands(store)
        await alerts.create({"alert_id": "above", "symbol": "AAPL", "condition": "above", "threshold": "1"})
        await alerts.create({"alert_id": "never", "symbol": "MSFT", "condition": "below", "threshold": "0.01"})

        # What is checked is position_sync's handling of the discrepancies over two weeks, not that two runs
        # repeat: the clock need not settle after each of the 4,000 instants.
        clock = VirtualClock(store, ctx.rt.nc, ctx.rt.subjects, tick_timeout=60, settle=False)
        outcomes: Counter[str] = Counter()
        position = start
        for session in SESSIONS:
            day_end = session.close + timedelta(minutes=10)
            outcomes += (await clock.run(position, day_end)).outcomes
            position = day_end
            if session.day in INJECTIONS:
                await sim_sql(pg_dsn, INJECTIONS[session.day])
        assert set(outcomes) == {"completed"}, outcomes  # nothing failed, nothing was skipped
        await ctx.catch_up()

        events = [e async for e in store.read_all()]
        detected = Counter(e.stream_id for e in events if e.type == "PositionDiscrepancyDetected")
        unexpected = [e.data for e in events if e.type == "PositionDiscrepancyDetected"
                      and e.stream_id not in ("discrepancy-PEP", "discrepancy-KO", "discrepancy-TSLA")]
        assert detected == {"discrepancy-PEP": 1, "discrepancy-KO": 1, "discrepancy-TSLA": 1}, (detected, unexpected)
        async with store.pool.acquire() as con:
            halted = {r["portfolio_id"]: r["halted"] for r in await con.fetch("SELECT * FROM portfolios")}
            quarantined = [r["symbol"] for r in await con.fetch("SELECT symbol FROM quarantined_symbols")]
        assert halted == {"trader": False, "holder": True}  # KO closed at the broker: halt policy
        assert quarantined == ["TSLA"]  # unknown at the broker: quarantine policy
        holder, _ = await load_book(store, "holder")
        assert holder is not None and holder.position("PEP").qty == 7  # quantity: fixed

        snapshots = Counter(e.stream_id for e in events if e.type == "PortfolioSnapshotTaken")
        assert snapshots == {f"snapshot-{p.name}-{s.day}": 1 for p in specs for s in SESSIONS}
        assert [e.stream_id for e in events if e.type == "AlertTriggered"] == ["alert-above"]
        assert any(e.type == "OrderFilled" for e in events), "the trader should trade in two weeks"
