"""The HTTP API on real servers: resources with their schemas, keyset pages, operator actions only with the
token (and never cross-origin), and the live stream resuming after the last sequence a reader saw."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import msgspec

from eventstore.projections import ProjectionRunner
from services.core import feeds
from services.core.runtime import Runtime
from services.stack import all_projections, hosted
from services.strategy.commands import apply_all
from services.strategy.config import parse_portfolio_spec
from services.web.app import TOKEN_HEADER
from services.web.server import WebServer
from tests.waiting import until
from tests.web.conftest import OPERATOR_TOKEN

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


async def open_portfolios(rt: Runtime, *names: str) -> None:
    specs = [parse_portfolio_spec({"name": n, "starting_cash": "25000"}) for n in names]
    await apply_all(rt.store, specs, T0)
    await ProjectionRunner(rt.store, all_projections()).run_once()


async def test_before_the_read_models_exist_the_api_answers_503_in_one_line(rt: Runtime, web: WebServer) -> None:
    async with httpx.AsyncClient(base_url=web.url) as http:
        response = await http.get("/api/orders")
    assert response.status_code == 503
    assert response.json() == {"error": "the read models do not exist yet: start openbell's services"}


async def test_resources_pages_and_errors(rt: Runtime, web: WebServer) -> None:
    await open_portfolios(rt, "alpha", "beta")
    async with httpx.AsyncClient(base_url=web.url) as http:
        response = await http.get("/api/portfolios")
        assert response.status_code == 200, response.text
        portfolios = response.json()
        assert [p["portfolio_id"] for p in portfolios] == ["alpha", "beta"]
        assert portfolios[0]["starting_cash"] == "25000" and portfolios[0]["halted"] is False
        async with rt.store.pool.acquire() as con:  # PostgreSQL may hand back 1.0E+5: JSON says 100000
            await con.execute("UPDATE portfolios SET cash = $1 WHERE portfolio_id = 'beta'", Decimal("1.0E+5"))
        assert (await http.get("/api/portfolios/beta")).json()["cash"] == "100000"
        assert (await http.get("/api/portfolios/nope")).json() == {"error": "no portfolio 'nope'"}
        assert (await http.get("/api/portfolios/alpha")).json()["positions"] == []
        jobs = (await http.get("/api/jobs")).json()
        assert {j["job_type"] for j in jobs} >= {"strategy_execution", "portfolio_snapshot"}
        assert all(j["breaker_open"] is False for j in jobs)

        # 120 orders, several per instant: pages of 50 return each once, newest first, with no overlap.
        async with rt.store.pool.acquire() as con:
            await con.executemany(
                "INSERT INTO trades (client_order_id, portfolio_id, symbol, side, order_type, qty, status, strategy,"
                " tick_id, requested_at, updated_position) VALUES ($1, 'alpha', 'AAPL', 'buy', 'market', 1,"
                " $2, 's', 't', $3, 0)",
                [(f"o{i:03d}", "filled" if i % 3 else "submitted", T0 + timedelta(minutes=i // 4)) for i in range(120)],
            )
        seen: list[str] = []
        cursor: str | None = None
        while True:
            page = await http.get("/api/orders", params={"portfolio": "alpha", "limit": 50, **(
                {"cursor": cursor} if cursor else {})})
            body = page.json()
            seen += [o["client_order_id"] for o in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == 120 and len(set(seen)) == 120
        assert seen == sorted(seen, key=lambda o: (int(o[1:]) // 4, o), reverse=True)
        open_orders = (await http.get("/api/orders", params={"open": "true", "limit": 500})).json()["items"]
        assert len(open_orders) == 40 and {o["status"] for o in open_orders} == {"submitted"}
        bad = await http.get("/api/orders", params={"cursor": "garbage"})
        assert bad.status_code == 400
        assert bad.json() == {"error": "invalid cursor: use the next_cursor of a previous page"}
        assert (await http.get("/api/orders", params={"status": "bogus"})).status_code == 422

        log = (await http.get("/api/events", params={"stream": "portfolio-alpha"})).json()
        assert log["items"][0]["type"] == "PortfolioOpened" and log["items"][0]["version"] == 0
        schema = (await http.get("/openapi.json")).json()
        assert {"Portfolio", "Order", "Job", "Notification", "Snapshot", "LoggedEvent"} <= set(
            schema["components"]["schemas"]
        )
        assert (await http.get("/")).text.count("/static/app.js") == 1
        assert "function equityCurve" in (await http.get("/static/app.js")).text
        # Offline: nothing is loaded from elsewhere (the SVG namespace is a name, not a request).
        for asset in ("/", "/static/app.js", "/static/style.css"):
            text = (await http.get(asset)).text.replace("http://www.w3.org/2000/svg", "")
            assert "http://" not in text and "https://" not in text and "//cdn" not in text, asset
        assert (await http.get("/docs")).status_code == 404  # FastAPI's page would load a CDN's scripts


async def test_operator_actions_need_the_token_and_the_same_origin(rt: Runtime, web: WebServer) -> None:
    await open_portfolios(rt, "alpha")
    async with httpx.AsyncClient(base_url=web.url) as http:
        anonymous = await http.post("/api/halt", json={})
        assert anonymous.status_code == 401 and TOKEN_HEADER in anonymous.json()["error"]
        wrong = await http.post("/api/halt", json={}, headers={TOKEN_HEADER: "x" * 30})
        assert wrong.status_code == 401
        forged = await http.post(
            "/api/halt", json={}, headers={TOKEN_HEADER: OPERATOR_TOKEN, "Origin": "http://evil.example"}
        )
        assert forged.status_code == 403 and "cross-origin" in forged.json()["error"]
        assert await rt.store.stream_version("trading-global") == -1  # nothing appended

        ok = await http.post(
            "/api/portfolios/alpha/halt", json={"reason": "test"},
            headers={TOKEN_HEADER: OPERATOR_TOKEN, "Origin": web.url},
        )
        assert ok.json() == {"ok": True, "changes": ["halt portfolio alpha"]}
        again = await http.post("/api/portfolios/alpha/halt", json={}, headers={TOKEN_HEADER: OPERATOR_TOKEN})
        assert again.json() == {"ok": True, "changes": []}
        missing = await http.post("/api/portfolios/nope/halt", json={}, headers={TOKEN_HEADER: OPERATOR_TOKEN})
        assert missing.status_code == 404 and "no portfolio named 'nope'" in missing.json()["error"]
        enable = await http.post("/api/jobs/price_update/enable", json={}, headers={TOKEN_HEADER: OPERATOR_TOKEN})
        assert enable.json() == {"ok": True, "changes": []}  # healthy already

    # Without a configured token the app is read-only for everyone.
    read_only = WebServer(Runtime(**{**rt.__dict__, "settings": rt.settings.model_copy(update={"web_token": None})}))
    await read_only.start()
    try:
        async with httpx.AsyncClient(base_url=read_only.url) as http:
            refused = await http.post("/api/halt", json={}, headers={TOKEN_HEADER: OPERATOR_TOKEN})
            assert refused.status_code == 403 and "read-only" in refused.json()["error"]
            assert (await http.get("/api/health")).json()["operator_actions"] is False
    finally:
        await read_only.stop()


async def read_sse(response: httpx.Response, count: int) -> list[dict]:
    """The next ``count`` feed events of a live stream: {id, data}."""
    received: list[dict] = []
    event: dict = {}
    async for line in response.aiter_lines():
        if line.startswith("id: "):
            event["id"] = int(line[4:])
        elif line.startswith("data: "):
            event["data"] = json.loads(line[6:])
        elif line == "" and "data" in event:
            received.append(event)
            event = {}
            if len(received) == count:
                return received
    raise AssertionError(f"stream ended after {received}")


async def test_live_stream_resumes_after_the_last_sequence_and_halts_have_a_feed(rt: Runtime, web: WebServer) -> None:
    await open_portfolios(rt, "alpha")
    async with httpx.AsyncClient(base_url=web.url, timeout=10) as http:
        start = (await http.get("/api/health")).json()["feed_last"]
        async with hosted(["relay"], runtime=rt):
            async with http.stream("GET", "/api/live", params={"after": start}) as live:
                assert live.headers["content-type"].startswith("text/event-stream")
                await http.post("/api/halt", json={"reason": "drill"}, headers={TOKEN_HEADER: OPERATOR_TOKEN})
                for i in range(3):
                    await rt.nc.publish(f"{rt.subjects.prefix}.feed.price.T{i}", b'{"kind": "price"}')
                # The relay publishes the halt's event; its feed arrives among the others (4 in all).
                first = await asyncio.wait_for(read_sse(live, 4), 20)
            halts = [e for e in first if e["data"]["subject"].endswith(".feed.halt.all")]
            assert len(halts) == 1
            body = halts[0]["data"]["body"]
            assert body["kind"] == "halt" and body["version"] == feeds.FEED_VERSION and body["halted"] is True
            assert body["reason"] == "drill" and body["at"].endswith("Z") and body["scope"] == "all"
            msgspec.json.decode(json.dumps(body).encode(), type=feeds.HaltFeed)  # the contract's schema
            ids = [e["id"] for e in first]
            assert ids == list(range(start + 1, start + 5)) and [e["data"]["seq"] for e in first] == ids
            assert all(e["data"]["at"].endswith("Z") for e in first)

            # Disconnected: two more messages; a reconnect with Last-Event-ID gets exactly those, in order.
            for i in range(2):
                await rt.nc.publish(f"{rt.subjects.prefix}.feed.price.U{i}", b'{"kind": "price"}')

            async def stored() -> bool:
                return (await http.get("/api/health")).json()["feed_last"] == start + 6

            await until(stored, what="the feed messages counted by /api/health")
            async with http.stream("GET", "/api/live", headers={"Last-Event-ID": str(ids[-1])}) as again:
                rest = await asyncio.wait_for(read_sse(again, 2), 10)
            assert [e["id"] for e in rest] == [start + 5, start + 6]
            assert [e["data"]["subject"].rsplit(".", 1)[1] for e in rest] == ["U0", "U1"]
        bad = await http.get("/api/live", params={"after": "x"})
        assert bad.status_code == 400

        # A sequence the stream never reached (a page of a recreated stream): reset, then from the end.
        async with http.stream("GET", "/api/live", params={"after": start + 1000}) as stale:
            await rt.nc.publish(f"{rt.subjects.prefix}.feed.price.V0", b'{"kind": "price"}')
            lines = []
            async for line in stale.aiter_lines():
                lines.append(line)
                if line.startswith("id: "):
                    break
        reset = json.loads(lines[lines.index("event: reset") + 1].removeprefix("data: "))
        assert reset["resume_after"] == start + 6 and lines[-1] == f"id: {start + 7}"


async def test_money_prices_and_quantities_follow_one_rule() -> None:
    assert feeds.money(Decimal("100065.2200")) == "100065.22" and feeds.money(Decimal("0")) == "0.00"
    assert feeds.price(Decimal("187.2")) == "187.20" and feeds.price(Decimal("0.51234")) == "0.5123"
    assert feeds.quantity(Decimal("10.000")) == "10" and feeds.quantity(Decimal("1E+1")) == "10"
    assert feeds.quantity(Decimal("0.1250")) == "0.125"
    assert feeds.utc(datetime(2026, 3, 2, 10, 0, tzinfo=UTC)) == "2026-03-02T10:00:00.000000Z"
