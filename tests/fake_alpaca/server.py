"""A real HTTP + websocket server on 127.0.0.1 that unmodified alpaca-py talks to.

Shapes follow Alpaca's documentation and ../shared/fixtures/alpaca/. Prices come from the same
deterministic MarketSimulator as the simulator broker, and orders follow the same lifecycle rules
(services.broker.simulator.engine), driven by an injectable ``now`` so tests control time.

The server runs its own asyncio loop in a background thread, so blocking alpaca-py calls made from
worker threads (or from the test's loop) reach it. All state lives on that loop; the public methods hop
onto it. Scriptable faults: status codes (429, 500, 504...), a status after the order was accepted,
stalls, connection resets, non-JSON bodies. Calls are counted per endpoint.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, TypeVar

import msgspec
from aiohttp import WSMsgType, web

from services.broker.errors import OrderRejected
from services.broker.models import (
    Order,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
    TradeUpdateEvent,
    utc,
)
from services.broker.simulator import engine
from services.broker.simulator.calendar import market_clock, trading_days
from services.broker.simulator.market import (
    DEFAULT_SYMBOLS,
    NEW_YORK,
    TIMEFRAME_MINUTES,
    MarketSimulator,
    bar_is_closed,
)

T = TypeVar("T")
FaultKind = Literal["status", "stall", "reset", "non_json"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Fault:
    """What to do instead of (or after) answering normally.

    - status: answer ``status`` with an Alpaca-style JSON error (429 carries X-Ratelimit-Reset in
      ``reset_seconds``); with ``after_handling`` the request is processed first (a 504 after the order
      was accepted), and the body is an HTML gateway page.
    - stall: wait ``seconds`` before answering (the client should time out first).
    - reset: drop the TCP connection without an answer (with ``after_handling``: after processing).
    - non_json: answer 200 with an HTML body (with ``after_handling``: after processing).
    """

    kind: FaultKind
    status: int = 500
    seconds: float = 0.0
    after_handling: bool = False
    reset_seconds: float = 1.0


@dataclass
class _Rule:
    method: str
    path: str
    fault: Fault
    remaining: int


@dataclass
class _FakeOrder:
    order: Order
    checked_until: datetime
    asset_id: str


@dataclass
class _State:
    orders: dict[str, _FakeOrder] = field(default_factory=dict)
    by_client_id: dict[str, str] = field(default_factory=dict)
    positions: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)  # symbol -> (qty, avg price)
    cash: Decimal = Decimal("100000")
    settled_at: datetime | None = None
    sequence: int = 0  # keeps submitted_at strictly increasing, like Alpaca's


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return utc(moment).isoformat().replace("+00:00", "Z")


def _num(value: Decimal | None) -> str | None:
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return text


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class FakeAlpaca:
    def __init__(
        self,
        *,
        seed: int = 7,
        now: Callable[[], datetime] | None = None,
        fill_policy: engine.FillPolicy | None = None,
        starting_cash: Decimal = Decimal("100000"),
        symbols: tuple[str, ...] | None = DEFAULT_SYMBOLS,
        rate_limit_per_minute: int = 200,
        enforce_rate_limit: bool = True,
        key_id: str = "fake-key-id",
        secret_key: str = "fake-secret-key",
    ) -> None:
        self.seed = seed
        self.market = MarketSimulator(seed, symbols)
        self._now = now or (lambda: datetime.now(UTC))
        self.fill_policy = fill_policy or engine.FillPolicy()
        self.rate_limit_per_minute = rate_limit_per_minute
        self.enforce_rate_limit = enforce_rate_limit
        self.key_id = key_id
        self.secret_key = secret_key
        self.calls: Counter[str] = Counter()
        self._state = _State(cash=starting_cash)
        self._rules: list[_Rule] = []
        self._window_reset = 0.0
        self._window_used = 0
        self._listeners: set[web.WebSocketResponse] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.request_log: list[tuple[float, str]] = []  # (wall time, "METHOD /path") of every request

    # -- lifecycle -----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream"

    def start(self) -> FakeAlpaca:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_site())
            except OSError as exc:  # e.g. cannot bind: reported to the starting thread below
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            # Handlers still stalled by a fault: cancel them so the loop closes cleanly.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-alpaca", daemon=True)
        self._thread.start()
        started.wait(10)
        if failure:
            raise failure[0]
        return self

    async def _start_site(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_post("/v2/orders", self._submit_order)
        r.add_get("/v2/orders", self._list_orders)
        r.add_get("/v2/orders:by_client_order_id", self._get_by_client_id)
        r.add_get("/v2/orders/{order_id}", self._get_order)
        r.add_delete("/v2/orders/{order_id}", self._cancel_order)
        r.add_get("/v2/positions", self._positions)
        r.add_get("/v2/account", self._account)
        r.add_get("/v2/clock", self._clock)
        r.add_get("/v2/calendar", self._calendar)
        r.add_get("/v2/stocks/quotes/latest", self._latest_quotes)
        r.add_get("/v2/stocks/bars/latest", self._latest_bars)
        r.add_get("/v2/stocks/trades/latest", self._latest_trades)
        r.add_get("/v2/stocks/snapshots", self._snapshots)
        r.add_get("/v2/stocks/bars", self._bars)
        r.add_get("/stream", self._stream)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _shutdown(self) -> None:
        for ws in list(self._listeners):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    # -- test controls (callable from any thread) ----------------------------------------------------
    def add_fault(self, method: str, path: str, fault: Fault, times: int = 1) -> None:
        """Apply ``fault`` to the next ``times`` requests whose path starts with ``path``."""
        self._rules.append(_Rule(method.upper(), path, fault, times))

    def clear_faults(self) -> None:
        self._rules.clear()

    def settle(self) -> None:
        """Progress every order up to ``now`` and push the resulting trade updates to listeners."""
        self._on_loop(self._settle_async())

    def seed_open_orders(self, count: int, symbol: str = "AAPL", start: datetime | None = None) -> list[str]:
        """Put ``count`` resting GTC limit buys (far below the market, so they stay open) straight into the
        book without HTTP, one microsecond apart."""

        async def seed() -> list[str]:
            base = start or (self._now() - timedelta(days=1))
            ids = []
            for i in range(count):
                client_id = f"seed-{uuid.uuid4().hex[:20]}"
                request = OrderRequest(
                    client_order_id=client_id,
                    symbol=symbol,
                    side=OrderSide.BUY,
                    qty=Decimal(1),
                    type=OrderType.LIMIT,
                    limit_price=Decimal("0.01"),
                    time_in_force=TimeInForce.GTC,
                )
                entry = self._add_order(request, base + timedelta(microseconds=i))
                # Resting since before "now": acknowledged, and no fill attempts left to replay.
                entry.order = msgspec.structs.replace(entry.order, status=OrderStatus.NEW)
                entry.checked_until = max(entry.checked_until, utc(self._now()))
                ids.append(entry.order.id)
            return ids

        return self._on_loop(seed())

    def clear_orders(self) -> None:
        """Forget every order (positions and cash stay)."""

        async def clear() -> None:
            self._state.orders.clear()
            self._state.by_client_id.clear()

        self._on_loop(clear())

    def order_count(self) -> int:
        return len(self._state.orders)

    def listeners(self) -> int:
        return len(self._listeners)

    def reset_counts(self) -> None:
        self.calls.clear()

    # -- middleware: counting, auth, rate limit, faults ----------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        name = f"{request.method} {route.canonical if route is not None else request.path}"
        self.calls[name] += 1
        self.request_log.append((time.time(), name))
        if request.path == "/stream":
            return await handler(request)
        if (
            request.headers.get("APCA-API-KEY-ID") != self.key_id
            or request.headers.get("APCA-API-SECRET-KEY") != self.secret_key
        ):
            return self._error(401, 40110000, "request is not authorized")
        fault = self._take_fault(request)
        limit_headers = self._rate_limit_headers(consume=True)
        if self.enforce_rate_limit and int(limit_headers["X-Ratelimit-Remaining"]) < 0:
            limit_headers["X-Ratelimit-Remaining"] = "0"
            return self._error(429, 42910000, "rate limit exceeded", limit_headers)
        if fault is None:
            response = await handler(request)
        else:
            response = await self._apply_fault(fault, request, handler, limit_headers)
            if response is None:
                return web.Response(status=204)  # never reached by the client: the connection is gone
        for name, value in limit_headers.items():
            response.headers.setdefault(name, value)  # a scripted 429 keeps its own reset time
        return response

    def _take_fault(self, request: web.Request) -> Fault | None:
        for rule in self._rules:
            if rule.remaining > 0 and rule.method == request.method and request.path.startswith(rule.path):
                rule.remaining -= 1
                return rule.fault
        return None

    def _rate_limit_headers(self, consume: bool) -> dict[str, str]:
        wall = time.time()
        if wall >= self._window_reset:
            self._window_reset = math.ceil(wall + 60)
            self._window_used = 0
        if consume:
            self._window_used += 1
        return {
            "X-Ratelimit-Limit": str(self.rate_limit_per_minute),
            "X-Ratelimit-Remaining": str(self.rate_limit_per_minute - self._window_used),
            "X-Ratelimit-Reset": str(int(self._window_reset)),
        }

    async def _apply_fault(
        self, fault: Fault, request: web.Request, handler: Handler, headers: dict[str, str]
    ) -> web.StreamResponse | None:
        if fault.kind == "stall":
            # Read the body first: a client that gives up closes the socket, and the request still lands.
            await request.read()
            await asyncio.sleep(fault.seconds)
            return await handler(request)
        if fault.after_handling:
            await handler(request)
        if fault.kind == "reset":
            assert request.transport is not None
            request.transport.abort()
            return None
        if fault.kind == "non_json":
            return web.Response(status=200, text="<html><body>upstream hiccup</body></html>", content_type="text/html")
        if fault.status == 429:
            reset = str(math.ceil(time.time() + fault.reset_seconds))
            return self._error(429, 42910000, "rate limit exceeded", {**headers, "X-Ratelimit-Reset": reset})
        if fault.after_handling or fault.status in (502, 503, 504):
            # What a gateway in front of Alpaca sends: HTML, not JSON (alpaca-py's APIError.code then raises).
            return web.Response(
                status=fault.status,
                text=f"<html><h1>{fault.status} Gateway Error</h1></html>",
                content_type="text/html",
            )
        return self._error(fault.status, fault.status * 100000, "internal server error")

    @staticmethod
    def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response({"code": code, "message": message}, status=status, headers=headers)

    # -- order book ----------------------------------------------------------------------------------
    def _add_order(self, request: OrderRequest, submitted_at: datetime) -> _FakeOrder:
        order = engine.new_order(request, engine.order_id_for(self.seed, request.client_order_id), submitted_at)
        entry = _FakeOrder(order, submitted_at, str(uuid.uuid5(uuid.NAMESPACE_URL, f"asset:{request.symbol}")))
        self._state.orders[order.id] = entry
        self._state.by_client_id[request.client_order_id] = order.id
        return entry

    def _open_orders(self) -> list[Order]:
        return [e.order for e in self._state.orders.values() if e.order.is_open]

    async def _settle_async(self) -> None:
        now = utc(self._now())
        state = self._state
        if state.settled_at == now and not any(
            e.order.status.value == "accepted" for e in state.orders.values() if e.checked_until <= now
        ):
            return
        messages: list[dict[str, Any]] = []
        for entry in sorted(state.orders.values(), key=lambda e: e.order.submitted_at):
            if not entry.order.is_open and entry.order.status.value != "accepted":
                continue
            step = engine.progress(entry.order, self.market, self.fill_policy, entry.checked_until, now)
            for event in step.events:
                position_qty = None
                if event.qty is not None and event.price is not None:
                    held, average = state.positions.get(event.order.symbol, (Decimal(0), Decimal(0)))
                    new_qty, new_average, cash_delta = engine.apply_fill(
                        held, average, event.order.side, event.qty, event.price
                    )
                    if new_qty == 0:
                        state.positions.pop(event.order.symbol, None)
                    else:
                        state.positions[event.order.symbol] = (new_qty, new_average)
                    state.cash += cash_delta
                    position_qty = new_qty
                messages.append(self._trade_update(event.event, event.order, event.timestamp, event, position_qty))
            entry.order = step.order
            entry.checked_until = step.checked_until
        state.settled_at = now
        await self._broadcast(messages)

    def _trade_update(
        self,
        kind: TradeUpdateEvent,
        order: Order,
        moment: datetime,
        event: engine.LifecycleEvent | None,
        position_qty: Decimal | None,
    ) -> dict[str, Any]:
        data: dict[str, Any] = {"event": str(kind), "order": self._order_json(order), "timestamp": _iso(moment)}
        if event is not None and event.qty is not None:
            data.update(
                execution_id=str(uuid.uuid4()),
                qty=_num(event.qty),
                price=_num(event.price),
                position_qty=_num(position_qty),
            )
        return {"stream": "trade_updates", "data": data}

    async def _broadcast(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            text = json.dumps(message)
            for ws in list(self._listeners):
                try:
                    await ws.send_str(text)
                except ConnectionError:
                    self._listeners.discard(ws)

    def _order_json(self, order: Order) -> dict[str, Any]:
        entry = self._state.orders.get(order.id)
        return {
            "id": order.id,
            "client_order_id": order.client_order_id,
            "created_at": _iso(order.submitted_at),
            "updated_at": _iso(order.updated_at),
            "submitted_at": _iso(order.submitted_at),
            "filled_at": _iso(order.filled_at),
            "expired_at": _iso(order.expired_at),
            "canceled_at": _iso(order.canceled_at),
            "failed_at": _iso(order.failed_at),
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": entry.asset_id if entry else str(uuid.uuid5(uuid.NAMESPACE_URL, order.symbol)),
            "symbol": order.symbol,
            "asset_class": "us_equity",
            "notional": None,
            "qty": _num(order.qty),
            "filled_qty": _num(order.filled_qty),
            "filled_avg_price": _num(order.filled_avg_price),
            "order_class": "simple",
            "order_type": str(order.type),
            "type": str(order.type),
            "side": str(order.side),
            "time_in_force": str(order.time_in_force),
            "limit_price": _num(order.limit_price),
            "stop_price": None,
            "status": str(order.status),
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "position_intent": "buy_to_open" if order.side is OrderSide.BUY else "sell_to_close",
        }

    # -- trading endpoints ---------------------------------------------------------------------------
    async def _submit_order(self, request: web.Request) -> web.Response:
        await self._settle_async()
        body = await request.json()
        state = self._state
        client_id = body.get("client_order_id") or str(uuid.uuid4())
        if client_id in state.by_client_id:
            return self._error(422, 40010001, "client_order_id must be unique")
        try:
            order_request = OrderRequest(
                client_order_id=client_id,
                symbol=str(body["symbol"]),
                side=OrderSide(body["side"]),
                qty=Decimal(str(body["qty"])).normalize(),
                type=OrderType(body.get("type", "market")),
                limit_price=Decimal(str(body["limit_price"])) if body.get("limit_price") is not None else None,
                time_in_force=TimeInForce(body.get("time_in_force", "day")),
            )
        except (KeyError, ValueError) as exc:
            return self._error(422, 40010001, f"invalid order request: {exc}")
        if order_request.qty == order_request.qty.to_integral_value():
            order_request = OrderRequest(
                **{**_request_fields(order_request), "qty": order_request.qty.quantize(Decimal(1))}
            )
        now = utc(self._now())
        held = state.positions.get(order_request.symbol, (Decimal(0), Decimal(0)))[0]
        try:
            engine.check_submit(
                order_request,
                market=self.market,
                cash=state.cash,
                position_qty=held,
                open_orders=self._open_orders(),
                now=now,
            )
        except OrderRejected as exc:
            return self._error(exc.status or 422, exc.code or 40010001, exc.message)
        # Alpaca's submitted_at is unique per order in practice; keep ours strictly increasing too.
        state.sequence += 1
        entry = self._add_order(order_request, now)
        return web.json_response(self._order_json(entry.order))

    async def _list_orders(self, request: web.Request) -> web.Response:
        await self._settle_async()
        q = request.query
        status = q.get("status", "open")
        limit = min(int(q.get("limit", "50")), 500)
        after = _parse_time(q.get("after"))
        until = _parse_time(q.get("until"))
        direction = q.get("direction", "desc")
        symbols = set(q["symbols"].split(",")) if q.get("symbols") else None
        orders = [e.order for e in self._state.orders.values()]
        selected = [
            o
            for o in orders
            if (status == "all" or (status == "open") == o.is_open)
            and (after is None or o.submitted_at > after)
            and (until is None or o.submitted_at < until)
            and (symbols is None or o.symbol in symbols)
        ]
        selected.sort(key=lambda o: (o.submitted_at, o.id), reverse=direction == "desc")
        return web.json_response([self._order_json(o) for o in selected[:limit]])

    async def _get_order(self, request: web.Request) -> web.Response:
        await self._settle_async()
        entry = self._state.orders.get(request.match_info["order_id"])
        if entry is None:
            return self._error(404, 40410000, "order not found")
        return web.json_response(self._order_json(entry.order))

    async def _get_by_client_id(self, request: web.Request) -> web.Response:
        await self._settle_async()
        order_id = self._state.by_client_id.get(request.query.get("client_order_id", ""))
        if order_id is None:
            return self._error(404, 40410000, "order not found")
        return web.json_response(self._order_json(self._state.orders[order_id].order))

    async def _cancel_order(self, request: web.Request) -> web.Response:
        await self._settle_async()
        entry = self._state.orders.get(request.match_info["order_id"])
        if entry is None:
            return self._error(404, 40410000, "order not found")
        result = engine.cancel(entry.order, utc(self._now()))
        if result is None:
            return self._error(422, 42210000, f"order is not cancelable (status {entry.order.status})")
        entry.order, event = result
        await self._broadcast([self._trade_update(event.event, entry.order, event.timestamp, None, None)])
        return web.Response(status=204)

    def _position_json(self, symbol: str, qty: Decimal, average: Decimal) -> dict[str, Any]:
        now = utc(self._now())
        price = self.market.price(symbol, now)
        lastday = self.market.price(symbol, now - timedelta(days=1))
        cost = qty * average
        value = qty * price
        return {
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"asset:{symbol}")),
            "symbol": symbol,
            "exchange": "NASDAQ",
            "asset_class": "us_equity",
            "asset_marginable": True,
            "avg_entry_price": _num(average),
            "qty": _num(qty),
            "qty_available": _num(qty),
            "side": "long" if qty > 0 else "short",
            "market_value": _num(value),
            "cost_basis": _num(cost),
            "unrealized_pl": _num(value - cost),
            "unrealized_plpc": _num((value - cost) / cost if cost else Decimal(0)),
            "unrealized_intraday_pl": _num((price - lastday) * qty),
            "unrealized_intraday_plpc": _num((price - lastday) / lastday),
            "current_price": _num(price),
            "lastday_price": _num(lastday),
            "change_today": _num((price - lastday) / lastday),
        }

    async def _positions(self, request: web.Request) -> web.Response:
        await self._settle_async()
        return web.json_response([self._position_json(s, q, a) for s, (q, a) in sorted(self._state.positions.items())])

    async def _account(self, request: web.Request) -> web.Response:
        await self._settle_async()
        now = utc(self._now())
        state = self._state
        long_value = sum((q * self.market.price(s, now) for s, (q, _) in state.positions.items()), Decimal(0))
        equity = state.cash + long_value
        buying_power = state.cash - engine.reserved_buying_power(self._open_orders(), self.market, now)
        return web.json_response(
            {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-account:{self.seed}")),
                "account_number": "PA0FAKE0001",
                "status": "ACTIVE",
                "crypto_status": "ACTIVE",
                "currency": "USD",
                "buying_power": _num(buying_power),
                "regt_buying_power": _num(buying_power),
                "non_marginable_buying_power": _num(buying_power),
                "cash": _num(state.cash),
                "accrued_fees": "0",
                "portfolio_value": _num(equity),
                "equity": _num(equity),
                "last_equity": _num(equity),
                "long_market_value": _num(long_value),
                "short_market_value": "0",
                "initial_margin": "0",
                "maintenance_margin": "0",
                "last_maintenance_margin": "0",
                "sma": "0",
                "multiplier": "1",
                "pattern_day_trader": False,
                "trading_blocked": False,
                "transfers_blocked": False,
                "account_blocked": False,
                "trade_suspended_by_user": False,
                "shorting_enabled": False,
                "daytrade_count": 0,
                "created_at": "2024-01-02T15:00:00Z",
            }
        )

    async def _clock(self, request: web.Request) -> web.Response:
        clock = market_clock(self._now())

        def ny(moment: datetime) -> str:
            return moment.astimezone(NEW_YORK).isoformat()

        return web.json_response(
            {
                "timestamp": ny(clock.timestamp),
                "is_open": clock.is_open,
                "next_open": ny(clock.next_open),
                "next_close": ny(clock.next_close),
            }
        )

    async def _calendar(self, request: web.Request) -> web.Response:
        today = utc(self._now()).date()
        start = date.fromisoformat(request.query["start"]) if "start" in request.query else today
        end = date.fromisoformat(request.query["end"]) if "end" in request.query else start + timedelta(days=30)
        return web.json_response(
            [
                {
                    "date": day.date.isoformat(),
                    "open": day.open.astimezone(NEW_YORK).strftime("%H:%M"),
                    "close": day.close.astimezone(NEW_YORK).strftime("%H:%M"),
                    "session_open": "0400",
                    "session_close": "2000",
                    "settlement_date": (day.date + timedelta(days=1)).isoformat(),
                }
                for day in trading_days(start, end)
            ]
        )

    # -- market data endpoints -----------------------------------------------------------------------
    def _symbols(self, request: web.Request) -> list[str]:
        return [s for s in request.query.get("symbols", "").split(",") if s and self.market.knows(s)]

    def _quote_json(self, symbol: str, now: datetime) -> dict[str, Any]:
        quote = self.market.quote(symbol, now)
        return {
            "t": _iso(quote.timestamp),
            "ax": "V",
            "ap": float(quote.ask_price),
            "as": int(quote.ask_size),
            "bx": "V",
            "bp": float(quote.bid_price),
            "bs": int(quote.bid_size),
            "c": ["R"],
            "z": "C",
        }

    def _bar_json(self, symbol: str, start: datetime, timeframe: str = "1Min") -> dict[str, Any]:
        return _bar_dict(self.market.bar(symbol, start, timeframe))

    def _trade_json(self, symbol: str, now: datetime) -> dict[str, Any]:
        return {
            "t": _iso(now),
            "x": "V",
            "p": float(self.market.price(symbol, now)),
            "s": 100,
            "c": ["@"],
            "i": 1,
            "z": "C",
        }

    async def _latest_quotes(self, request: web.Request) -> web.Response:
        now = utc(self._now())
        return web.json_response({"quotes": {s: self._quote_json(s, now) for s in self._symbols(request)}})

    async def _latest_bars(self, request: web.Request) -> web.Response:
        now = utc(self._now())
        return web.json_response(
            {"bars": {s: _bar_dict(self.market.latest_bar(s, now)) for s in self._symbols(request)}}
        )

    async def _latest_trades(self, request: web.Request) -> web.Response:
        now = utc(self._now())
        return web.json_response({"trades": {s: self._trade_json(s, now) for s in self._symbols(request)}})

    async def _snapshots(self, request: web.Request) -> web.Response:
        now = utc(self._now())
        return web.json_response(
            {
                s: {
                    "latestTrade": self._trade_json(s, now),
                    "latestQuote": self._quote_json(s, now),
                    "minuteBar": _bar_dict(self.market.latest_bar(s, now)),
                    "dailyBar": self._bar_json(s, now, "1Day"),
                    "prevDailyBar": self._bar_json(s, now - timedelta(days=1), "1Day"),
                }
                for s in self._symbols(request)
            }
        )

    async def _bars(self, request: web.Request) -> web.Response:
        q = request.query
        timeframe = q.get("timeframe", "1Min")
        if timeframe not in TIMEFRAME_MINUTES:
            return self._error(422, 42210000, f"invalid timeframe {timeframe}")
        now = utc(self._now())
        start = _parse_time(q.get("start")) or now - timedelta(days=1)
        end = min(_parse_time(q.get("end")) or now, now)
        limit = int(q.get("limit") or 1000)
        offset = int(q.get("page_token") or 0)
        flat = [
            (symbol, bar)
            for symbol in self._symbols(request)
            for bar in self.market.bars(symbol, start, end, timeframe)
            if bar_is_closed(bar, timeframe, now)
        ]
        page = flat[offset : offset + limit]
        grouped: dict[str, list[dict[str, Any]]] = {}
        for symbol, bar in page:
            grouped.setdefault(symbol, []).append(_bar_dict(bar))
        token = str(offset + limit) if offset + limit < len(flat) else None
        return web.json_response({"bars": grouped, "next_page_token": token})

    # -- trade_updates websocket ---------------------------------------------------------------------
    async def _stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT and message.type != WSMsgType.BINARY:
                    break
                payload = json.loads(message.data)
                action = payload.get("action")
                data = payload.get("data") or {}
                if action in ("authenticate", "auth"):
                    ok = data.get("key_id") == self.key_id and data.get("secret_key") == self.secret_key
                    status = "authorized" if ok else "unauthorized"
                    await ws.send_str(
                        json.dumps({"stream": "authorization", "data": {"status": status, "action": "authenticate"}})
                    )
                    if not ok:
                        break
                elif action == "listen":
                    streams = list(data.get("streams") or [])
                    await ws.send_str(json.dumps({"stream": "listening", "data": {"streams": streams}}))
                    if "trade_updates" in streams:
                        self._listeners.add(ws)
        finally:
            self._listeners.discard(ws)
        return ws


def _bar_dict(bar: Any) -> dict[str, Any]:
    return {
        "t": _iso(bar.timestamp),
        "o": float(bar.open),
        "h": float(bar.high),
        "l": float(bar.low),
        "c": float(bar.close),
        "v": int(bar.volume),
        "n": bar.trade_count,
        "vw": float(bar.vwap) if bar.vwap is not None else None,
    }


def _request_fields(request: OrderRequest) -> dict[str, Any]:
    return {f: getattr(request, f) for f in request.__struct_fields__}
