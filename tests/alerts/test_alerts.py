"""Alerts on real NATS + PostgreSQL: commands over request/reply, alert_price_check firing each alert once,
and failing quotes tripping the breakers of price_update and alert_price_check while other jobs run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
from nats.aio.client import Client as NatsClient

from services.broker.protocol import Broker
from services.broker.simulator import SimBroker, SimConfig, SimFaults
from services.core.host import ServiceContext
from services.core.jobs.types import JobType
from services.model.vocabulary import Side
from services.stack import hosted
from tests.positions.helpers import (
    append_fill,
    fill,
    open_portfolio,
    redeliver_tick,
    run_tick,
    settings_for,
    sim_factory,
)

T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # Tuesday 10:00 New York


async def command(nc: NatsClient, prefix: str, name: str, payload: Any) -> dict[str, Any]:
    data = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
    reply = await nc.request(f"{prefix}.cmd.alert.{name}", data, timeout=10)
    return msgspec.json.decode(reply.data)


async def test_alert_commands_and_each_alert_triggers_once(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient
) -> None:
    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    feed: list[dict] = []

    async def on_alert(msg) -> None:  # type: ignore[no-untyped-def]
        feed.append({"subject": msg.subject, **msgspec.json.decode(msg.data)})

    await nc.subscribe(f"{subject_prefix}.feed.alert.*", cb=on_alert)
    async with hosted(["relay", "projections", "positions", "alerts"], settings,
                      broker_factory=sim_factory(pg_dsn)) as ctx:
        store = ctx.rt.store
        await open_portfolio(store, "p1", "1000", T0)
        broker = await ctx.at(T0)
        price = (await broker.latest_quotes(["AAPL"]))["AAPL"].mid
        # Refused, with clear messages, appending nothing.
        for bad, message in [
            ({"symbol": "aapl", "condition": "above", "threshold": "1"}, "not a symbol"),
            ({"symbol": "AAPL", "condition": "sideways", "threshold": "1"}, "condition"),
            ({"symbol": "AAPL", "condition": "above", "threshold": "-3"}, "must be positive"),
            ({"symbol": "AAPL", "condition": "above", "threshold": "3", "portfolio_id": "nope"}, "unknown portfolio"),
            ({"symbol": "ZZZZ", "condition": "percent_change", "threshold": "5"}, "no price known"),
            (b"{not json", "invalid JSON"),
            (["a list"], "JSON object"),
        ]:
            reply = await command(nc, subject_prefix, "create", bad)
            assert message in reply.get("error", ""), (bad, reply)
        assert (await command(nc, subject_prefix, "remove", {"alert_id": "missing"}))["error"] == "no alert 'missing'"
        assert "unknown alert command" in (await command(nc, subject_prefix, "frobnicate", {}))["error"]
        assert not [e async for e in store.read_all() if e.stream_id.startswith("alert-")]

        up = await command(nc, subject_prefix, "create", {
            "alert_id": "up", "symbol": "AAPL", "condition": "above", "threshold": str(price / 2),
            "portfolio_id": "p1"})
        assert up["alert"]["alert_id"] == "up"
        # The same create again is the same alert; another definition under that id is refused.
        again = await command(nc, subject_prefix, "create", {
            "alert_id": "up", "symbol": "AAPL", "condition": "above", "threshold": str(price / 2),
            "portfolio_id": "p1"})
        assert again == up
        clash = await command(nc, subject_prefix, "create", {
            "alert_id": "up", "symbol": "AAPL", "condition": "below", "threshold": "1"})
        assert "exists already" in clash["error"]
        down = await command(nc, subject_prefix, "create", {"symbol": "AAPL", "condition": "below",
                                                            "threshold": str(price / 2)})
        move = await command(nc, subject_prefix, "create", {"alert_id": "move", "symbol": "AAPL",
                                                            "condition": "percent_change", "threshold": "-90"})
        assert Decimal(move["alert"]["reference_price"]) == price  # the broker's quote at creation
        gone = await command(nc, subject_prefix, "create", {"alert_id": "gone", "symbol": "MSFT",
                                                            "condition": "above", "threshold": "0.01"})
        removed = await command(nc, subject_prefix, "remove", {"alert_id": "gone"})
        assert removed == {"alert_id": "gone", "removed": True, "status": "removed"}
        assert (await command(nc, subject_prefix, "remove", {"alert_id": "gone"}))["removed"] is False
        listed = await command(nc, subject_prefix, "list", {"active_only": True})
        assert {a["alert_id"] for a in listed["alerts"]} == {"up", down["alert"]["alert_id"], "move"}
        assert gone["alert"]["alert_id"] == "gone"

        for minutes in (5, 10, 15):
            end = await run_tick(ctx, JobType.ALERT_PRICE_CHECK, T0 + timedelta(minutes=minutes))
            assert end["type"] == "JobExecutionCompleted", end
            assert end["counters"]["alerts_triggered"] == (1 if minutes == 5 else 0)
            assert end["counters"]["alerts_checked"] == (3 if minutes == 5 else 2)
        await redeliver_tick(ctx, JobType.ALERT_PRICE_CHECK, T0 + timedelta(minutes=5), "alerts")
        triggered = [e async for e in store.read_all() if e.type == "AlertTriggered"]
        assert [e.stream_id for e in triggered] == ["alert-up"]
        await ctx.catch_up()
        async with store.pool.acquire() as con:
            alerts = {r["alert_id"]: r for r in await con.fetch("SELECT * FROM alerts")}
            notes = await con.fetch("SELECT * FROM notifications WHERE kind = 'alert'")
    assert alerts["up"]["status"] == "triggered" and not alerts["up"]["active"]
    assert alerts["up"]["triggered_price"] > price / 2
    assert alerts["gone"]["status"] == "removed"
    assert alerts["move"]["active"]
    assert len(notes) == 1 and notes[0]["ref"] == "up" and notes[0]["portfolio_id"] == "p1"
    assert [(f["subject"], f["alert_id"]) for f in feed] == [(f"{subject_prefix}.feed.alert.p1", "up")]


def failing_quotes(pg_dsn: str) -> Any:
    async def factory(ctx: ServiceContext) -> Broker:
        config = SimConfig(seed=7, faults=SimFaults(error_rate={"latest_quotes": 1.0}))
        return await SimBroker.connect(pg_dsn, config, ctx.tick_time)

    return factory


async def test_failing_quotes_trip_price_and_alert_breakers_only(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient
) -> None:
    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    breaker_notices: list[dict] = []

    async def on_notice(msg) -> None:  # type: ignore[no-untyped-def]
        breaker_notices.append(msgspec.json.decode(msg.data))

    await nc.subscribe(f"{subject_prefix}.feed.notification.job_circuit_opened", cb=on_notice)
    async with hosted(["relay", "projections", "positions", "alerts"], settings,
                      broker_factory=failing_quotes(pg_dsn)) as ctx:
        store = ctx.rt.store
        await open_portfolio(store, "p1", "1000", T0, universe=("AAPL",))
        await append_fill(store, fill("p1", "o1", "AAPL", Side.BUY, "1", "1", "100", T0, final=True))
        reply = await command(nc, subject_prefix, "create", {"symbol": "AAPL", "condition": "above", "threshold": "1"})
        assert "alert" in reply
        for i in range(1, 12):
            at = T0 + timedelta(minutes=5 * i)
            price = await run_tick(ctx, JobType.PRICE_UPDATE, at)
            alert = await run_tick(ctx, JobType.ALERT_PRICE_CHECK, at)
            sync = await run_tick(ctx, JobType.POSITION_SYNC, at)
            expected = "JobExecutionFailed" if i <= 10 else "JobExecutionSkipped"
            assert price["type"] == alert["type"] == expected, (i, price, alert)
            assert sync["type"] == "JobExecutionCompleted", sync
        assert "simulated server error" in price.get("error", "") or price["type"] == "JobExecutionSkipped"
        await ctx.catch_up()
        async with store.pool.acquire() as con:
            status = {r["job_type"]: r["status"] for r in await con.fetch("SELECT job_type::text, status::text"
                                                                             " FROM scheduled_jobs")}
            notes = await con.fetch("SELECT ref FROM notifications WHERE kind = 'breaker' ORDER BY ref")
            quotes = await con.fetchval("SELECT count(*) FROM latest_quotes")
    assert status["price_update"] == "error" and status["alert_price_check"] == "error"
    assert status["position_sync"] == "enabled"
    assert [n["ref"] for n in notes] == ["alert_price_check", "price_update"]
    assert sorted(n["job_type"] for n in breaker_notices) == ["alert_price_check", "price_update"]
    assert quotes == 0  # a failed quote never becomes a price
