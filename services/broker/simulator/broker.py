"""SimBroker: the paper broker of the simulator, persisted in PostgreSQL (tables sim_*).

Time is simulated: ``now`` is injected (a ManualClock driven by the virtual clock, or the wall clock for a
live demo). Orders progress lazily: every call first settles all open orders up to ``now`` (fills, expiry),
inside one transaction that holds the sim_account row lock, so several processes can share one simulated
account. When the virtual clock moves, the service host also settles in the background (``settle_soon``),
so the next call usually finds nothing left to do. A restart does not reset the broker: the state lives in
the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from eventstore.schema import may_change_schema
from services.broker.errors import (
    AmbiguousSubmit,
    BrokerUnavailable,
    DuplicateClientOrderId,
    NotFound,
    OrderNotCancelable,
    RateLimited,
)
from services.broker.models import (
    Account,
    Bar,
    CalendarDay,
    Clock,
    Order,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
    Quote,
    TimeInForce,
    TradeUpdate,
    utc,
)
from services.broker.protocol import OrderQueryStatus, Timeframe
from services.broker.simulator import engine
from services.broker.simulator.calendar import market_clock, trading_days
from services.broker.simulator.market import DEFAULT_SYMBOLS, MarketSimulator, bar_is_closed, hash_unit

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS sim_account (
    id smallint PRIMARY KEY CHECK (id = 1),
    account_id text NOT NULL,
    seed bigint NOT NULL,
    cash numeric NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS sim_orders (
    id text PRIMARY KEY,
    client_order_id text NOT NULL UNIQUE,
    symbol text NOT NULL,
    side text NOT NULL,
    type text NOT NULL,
    time_in_force text NOT NULL,
    qty numeric NOT NULL,
    limit_price numeric,
    status text NOT NULL,
    filled_qty numeric NOT NULL,
    filled_avg_price numeric,
    submitted_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    filled_at timestamptz,
    canceled_at timestamptz,
    expired_at timestamptz,
    failed_at timestamptz,
    checked_until timestamptz NOT NULL,
    is_open boolean NOT NULL
);
CREATE INDEX IF NOT EXISTS sim_orders_open_idx ON sim_orders (submitted_at DESC) WHERE is_open;
CREATE INDEX IF NOT EXISTS sim_orders_submitted_idx ON sim_orders (submitted_at DESC);
CREATE TABLE IF NOT EXISTS sim_positions (
    symbol text PRIMARY KEY,
    qty numeric NOT NULL,
    avg_entry_price numeric NOT NULL
);
"""
# Any constant: serialises concurrent schema creation from several processes.
SCHEMA_LOCK_KEY = _SCHEMA_LOCK_KEY = 0x0B5E11_0001

OPERATIONS = (
    "submit_order", "get_order", "get_order_by_client_id", "list_orders", "cancel_order", "list_positions",
    "get_account", "get_clock", "get_calendar", "latest_quotes", "latest_bars", "get_bars",
)  # fmt: skip


class ManualClock:
    """Simulated time that only moves when told to (the virtual clock drives it)."""

    def __init__(self, start: datetime) -> None:
        self._now = utc(start)

    def __call__(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        moment = utc(moment)
        if moment < self._now:
            raise ValueError("simulated time never goes backwards")
        self._now = moment

    def advance(self, delta: timedelta) -> datetime:
        self.set(self._now + delta)
        return self._now


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SimFaults:
    """Injected faults per operation name (see OPERATIONS; "*" matches all). Decisions are drawn from a
    hash of (seed, operation, call number), so a run with the same seed fails the same calls."""

    error_rate: Mapping[str, float] = field(default_factory=dict)  # BrokerUnavailable before acting
    rate_limit_rate: Mapping[str, float] = field(default_factory=dict)  # RateLimited (429) before acting
    latency_seconds: Mapping[str, float] = field(default_factory=dict)  # real delay before acting
    hang: frozenset[str] = frozenset()  # sleep hang_seconds, then BrokerUnavailable (a timeout)
    hang_seconds: float = 30.0
    # The order is accepted but the answer is lost and the lookup fails too: AmbiguousSubmit.
    lost_submit_response_rate: float = 0.0
    rate_limit_reset_seconds: float = 1.0

    def value(self, table: Mapping[str, float], operation: str) -> float:
        return table.get(operation, table.get("*", 0.0))


@dataclass(frozen=True)
class SimConfig:
    seed: int = 1
    starting_cash: Decimal = Decimal("100000")
    symbols: tuple[str, ...] | None = DEFAULT_SYMBOLS
    fill_policy: engine.FillPolicy = field(default_factory=engine.FillPolicy)
    faults: SimFaults = field(default_factory=SimFaults)


@dataclass(frozen=True, slots=True)
class _Settled:
    """What a settle leaves, read under the account lock: what happened, the cash, the orders still open."""

    updates: list[TradeUpdate]
    cash: Decimal
    open_orders: list[Order]
    # With an order being submitted: the order already sent with its client order id, and the position.
    duplicate: Order | None = None
    position_qty: Decimal = Decimal(0)
    changes: _Changes = field(default_factory=lambda: _Changes())


@dataclass(slots=True)
class _Changes:
    """What a settle (and a submit or cancel) writes, in one statement: orders with how far their fill
    attempts are decided, positions as the fills leave them (a quantity of zero removes the row), and
    the change of cash."""

    orders: list[tuple[Order, datetime]] = field(default_factory=list)
    positions: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    cash_delta: Decimal = Decimal(0)


class SimBroker:
    """Implements services.broker.protocol.Broker against the simulated market."""

    real_time = False  # its market moves with the clock it is given (the ticks' times)

    def __init__(
        self,
        pool: asyncpg.Pool,
        config: SimConfig,
        now: Callable[[], datetime] = wall_clock,
        *,
        owns_pool: bool = False,
    ) -> None:
        self._pool = pool
        self.config = config
        self.market = MarketSimulator(config.seed, config.symbols)
        self._now = now
        self._owns_pool = owns_pool
        self._calls: dict[str, int] = dict.fromkeys(OPERATIONS, 0)
        self._subscribers: set[asyncio.Queue[TradeUpdate]] = set()
        self._settling: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls, dsn: str, config: SimConfig | None = None, now: Callable[[], datetime] = wall_clock
    ) -> SimBroker:
        """Open a pool, create the sim tables if missing, and open the account on first use."""
        config = config or SimConfig()
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, reset=_no_session_reset)
        try:
            async with pool.acquire() as conn, conn.transaction():
                # A least-privilege role finds the tables made by the owner's migrations (services/core/dbroles.py).
                if await may_change_schema(conn):
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK_KEY)
                    await conn.execute(SCHEMA)
                await conn.execute(
                    "INSERT INTO sim_account (id, account_id, seed, cash, created_at) VALUES (1, $1, $2, $3, $4)"
                    " ON CONFLICT (id) DO NOTHING",
                    engine.order_id_for(config.seed, "account"),
                    config.seed,
                    config.starting_cash,
                    utc(now()),
                )
        except BaseException:
            await pool.close()
            raise
        return cls(pool, config, now, owns_pool=True)

    def settle_soon(self) -> asyncio.Task[None]:
        """Settle the open orders up to now in the background (the clock moved, as a real broker fills
        between our calls): the next call then finds the fills booked already and answers sooner. Every
        call still settles first, so nothing depends on this having run. One at a time: returns the
        running settle if there is one."""
        if self._settling is None or self._settling.done():
            self._settling = asyncio.create_task(self._settle_in_background(), name="sim-settle")
        return self._settling

    def time_moved(self) -> None:
        self.settle_soon()

    def seen_at(self, moment: datetime) -> SimBroker:
        # A simulator standing in for a real-time broker (real_time set) keeps its own clock.
        return self if self.real_time else self.at(moment)

    async def _settle_in_background(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                await self._settle(conn)
        except Exception:  # a background step: logged, and the next call settles anyway
            log.exception("simulator: background settle failed; the next call settles")

    async def aclose(self) -> None:
        if self._settling is not None:
            self._settling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._settling
        if self._owns_pool:
            await self._pool.close()

    @property
    def now(self) -> datetime:
        return utc(self._now())

    def at(self, moment: datetime) -> SimBroker:
        """This broker (same account, market, fault counters and trade-update subscribers) seen at
        ``moment``: an order submitted through it is submitted at ``moment``, and so is decided and filled
        at its own tick's time, whatever later tick the process has seen, in whichever process, however
        late. Settling through it never undoes what a later settle decided (fills are per order, from its
        submission time: ``checked_until`` only moves forward)."""
        view = object.__new__(type(self))
        view._pool = self._pool
        view.config = self.config
        view.market = self.market
        view._now = ManualClock(moment)
        view._owns_pool = False
        view._calls = self._calls
        view._subscribers = self._subscribers
        view._settling = None
        return view

    def calls(self, operation: str) -> int:
        return self._calls[operation]

    async def advance_to(self, moment: datetime) -> None:
        """Move a ManualClock to ``moment`` and settle every open order up to it (emitting trade updates)."""
        if not isinstance(self._now, ManualClock):
            raise TypeError("advance_to needs a SimBroker built with a ManualClock")
        self._now.set(moment)
        async with self._pool.acquire() as conn:
            await self._settle(conn)

    # -- faults ----------------------------------------------------------------------------------------
    async def _enter(self, operation: str) -> None:
        count = self._calls[operation] = self._calls[operation] + 1
        faults = self.config.faults
        seed = self.config.seed
        if delay := faults.value(faults.latency_seconds, operation):
            await asyncio.sleep(delay)
        if operation in faults.hang or "*" in faults.hang:
            await asyncio.sleep(faults.hang_seconds)
            raise BrokerUnavailable(f"simulated hang in {operation}: timed out")
        if hash_unit(seed, "fault-429", operation, count) < faults.value(faults.rate_limit_rate, operation):
            reset = datetime.now(UTC) + timedelta(seconds=faults.rate_limit_reset_seconds)
            raise RateLimited(f"simulated 429 in {operation}", reset_at=reset, code=42910000)
        if hash_unit(seed, "fault-error", operation, count) < faults.value(faults.error_rate, operation):
            raise BrokerUnavailable(f"simulated server error in {operation}", status=500)

    # -- settling ------------------------------------------------------------------------------------
    async def _settle(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            settled = await self._settle_in_transaction(conn)
            await _write(conn, settled.changes)
        self._publish(settled.updates)

    def _publish(self, updates: list[TradeUpdate]) -> None:
        for update in updates:
            for queue in self._subscribers:
                queue.put_nowait(update)

    async def _settle_in_transaction(
        self, conn: asyncpg.Connection, submitting: OrderRequest | None = None
    ) -> _Settled:
        """Progress every open order up to now; the caller holds a transaction (and so the account lock).

        Three statements whatever the number of fills: the account lock (with the cash), one read of the
        open orders with the positions in their symbols, and, when anything changed, one write of the
        changed orders, positions and cash (see ``_write``). ``submitting``: an order about to be
        submitted. The same read (after the lock, so that it sees every committed change) then also
        finds the order already sent with its client order id and the position in its symbol, both as
        they are after this settle; the caller writes the new order with the settle's changes."""
        now = self.now
        updates: list[TradeUpdate] = []
        cash: Decimal = await conn.fetchval("SELECT cash FROM sim_account WHERE id = 1 FOR UPDATE")
        found = await conn.fetch(
            _SETTLE_READ,
            submitting.client_order_id if submitting is not None else None,
            submitting.symbol if submitting is not None else None,
        )
        still_open: list[Order] = []
        duplicate: Order | None = None
        position = found[0]["submit_position_qty"] or Decimal(0)
        # symbol -> (qty, average entry price), as the fills of this settle leave them
        positions: dict[str, tuple[Decimal, Decimal]] = {}
        changes = _Changes()
        for row in found:
            if row["id"] is not None and row["position_qty"] is not None:
                positions.setdefault(row["symbol"], (row["position_qty"], row["position_avg"]))
        for row in found:
            if row["id"] is None:
                continue  # no open order and no duplicate: the one row that carries the position
            order = _order_from_row(row)
            if row["duplicate"]:
                duplicate = order
            if not row["is_open"]:
                continue  # the order already sent with the submitted id, closed: nothing to settle
            step = engine.progress(order, self.market, self.config.fill_policy, row["checked_until"], now)
            if row["duplicate"]:
                duplicate = step.order
            if step.order.is_open:
                still_open.append(step.order)
            if not step.events and step.checked_until == row["checked_until"]:
                continue
            for event in step.events:
                position_qty = None
                if event.qty is not None and event.price is not None:
                    held, average = positions.get(event.order.symbol, (Decimal(0), Decimal(0)))
                    position_qty, new_average, cash_delta = engine.apply_fill(
                        held, average, event.order.side, event.qty, event.price
                    )
                    positions[event.order.symbol] = (position_qty, new_average)
                    changes.positions[event.order.symbol] = (position_qty, new_average)
                    changes.cash_delta += cash_delta
                    cash += cash_delta
                    if submitting is not None and event.order.symbol == submitting.symbol:
                        position = position_qty
                updates.append(
                    TradeUpdate(
                        event=event.event,
                        order=event.order,
                        timestamp=event.timestamp,
                        qty=event.qty,
                        price=event.price,
                        position_qty=position_qty,
                    )
                )
            changes.orders.append((step.order, step.checked_until))
        return _Settled(updates, cash, still_open, duplicate, position, changes)

    # -- orders --------------------------------------------------------------------------------------
    async def submit_order(self, request: OrderRequest) -> Order:
        await self._enter("submit_order")
        now = self.now
        async with self._pool.acquire() as conn:
            # Settling and accepting in one transaction: one commit, and no fill can slip in between. The
            # settle already read the cash and the open orders under the account lock.
            async with conn.transaction():
                settled = await self._settle_in_transaction(conn, submitting=request)
                if settled.duplicate is not None:
                    raise DuplicateClientOrderId(
                        "client_order_id must be unique",
                        client_order_id=request.client_order_id,
                        existing=settled.duplicate,
                        code=40010001,
                    )
                engine.check_submit(
                    request,
                    market=self.market,
                    cash=settled.cash,
                    position_qty=settled.position_qty,
                    open_orders=settled.open_orders,
                    now=now,
                )
                order = engine.new_order(request, engine.order_id_for(self.config.seed, request.client_order_id), now)
                settled.changes.orders.append((order, now))
                await _write(conn, settled.changes)
            self._publish(settled.updates)
        count = self._calls["submit_order"]
        if hash_unit(self.config.seed, "fault-lost", count) < self.config.faults.lost_submit_response_rate:
            raise AmbiguousSubmit("simulated lost submit response", client_order_id=request.client_order_id, status=504)
        return order

    async def get_order(self, order_id: str) -> Order:
        await self._enter("get_order")
        async with self._pool.acquire() as conn:
            await self._settle(conn)
            row = await conn.fetchrow("SELECT * FROM sim_orders WHERE id = $1", order_id)
        if row is None:
            raise NotFound("order not found", status=404, code=40410000)
        return _order_from_row(row)

    async def get_order_by_client_id(self, client_order_id: str) -> Order | None:
        await self._enter("get_order_by_client_id")
        async with self._pool.acquire() as conn:
            await self._settle(conn)
            row = await conn.fetchrow("SELECT * FROM sim_orders WHERE client_order_id = $1", client_order_id)
        return _order_from_row(row) if row is not None else None

    async def list_orders(
        self, status: OrderQueryStatus = "open", after: datetime | None = None, until: datetime | None = None
    ) -> list[Order]:
        await self._enter("list_orders")
        where = {"open": "is_open", "closed": "NOT is_open", "all": "TRUE"}[status]
        async with self._pool.acquire() as conn:
            await self._settle(conn)
            rows = await conn.fetch(
                f"SELECT * FROM sim_orders WHERE {where}"  # where: one of three literals
                " AND ($1::timestamptz IS NULL OR submitted_at > $1)"
                " AND ($2::timestamptz IS NULL OR submitted_at < $2)"
                " ORDER BY submitted_at DESC, id DESC",
                utc(after) if after else None,
                utc(until) if until else None,
            )
        return [_order_from_row(row) for row in rows]

    async def cancel_order(self, order_id: str) -> None:
        await self._enter("cancel_order")
        async with self._pool.acquire() as conn:
            await self._settle(conn)
            async with conn.transaction():
                await conn.fetchrow("SELECT cash FROM sim_account WHERE id = 1 FOR UPDATE")
                row = await conn.fetchrow("SELECT * FROM sim_orders WHERE id = $1", order_id)
                if row is None:
                    raise NotFound("order not found", status=404, code=40410000)
                result = engine.cancel(_order_from_row(row), self.now)
                if result is None:
                    raise OrderNotCancelable(
                        f"order is not cancelable (status {row['status']})", status=422, code=42210000
                    )
                order, event = result
                await _write(conn, _Changes(orders=[(order, self.now)]))
        update = TradeUpdate(event=event.event, order=order, timestamp=event.timestamp)
        for queue in self._subscribers:
            queue.put_nowait(update)

    # -- account -------------------------------------------------------------------------------------
    async def list_positions(self) -> list[Position]:
        await self._enter("list_positions")
        async with self._pool.acquire() as conn:
            await self._settle(conn)
            rows = await conn.fetch("SELECT * FROM sim_positions ORDER BY symbol")
        return [self._position(row) for row in rows]

    def _position(self, row: asyncpg.Record) -> Position:
        price = self.market.price(row["symbol"], self.now)
        qty: Decimal = row["qty"]
        average: Decimal = row["avg_entry_price"]
        return Position(
            symbol=row["symbol"],
            qty=qty,
            avg_entry_price=average,
            cost_basis=qty * average,
            market_value=qty * price,
            current_price=price,
            unrealized_pl=(price - average) * qty,
        )

    async def get_account(self) -> Account:
        await self._enter("get_account")
        async with self._pool.acquire() as conn:
            await self._settle(conn)
            account = await conn.fetchrow("SELECT * FROM sim_account WHERE id = 1")
            positions = [self._position(row) for row in await conn.fetch("SELECT * FROM sim_positions")]
            open_orders = [_order_from_row(r) for r in await conn.fetch("SELECT * FROM sim_orders WHERE is_open")]
        cash: Decimal = account["cash"]
        equity = cash + sum((p.market_value or Decimal(0) for p in positions), Decimal(0))
        return Account(
            id=account["account_id"],
            status="ACTIVE",
            currency="USD",
            cash=cash,
            buying_power=cash - engine.reserved_buying_power(open_orders, self.market, self.now),
            equity=equity,
            portfolio_value=equity,
            trading_blocked=False,
        )

    async def get_clock(self) -> Clock:
        await self._enter("get_clock")
        return market_clock(self.now)

    async def get_calendar(self, start: date, end: date) -> list[CalendarDay]:
        await self._enter("get_calendar")
        return trading_days(start, end)

    # -- market data ---------------------------------------------------------------------------------
    async def latest_quotes(self, symbols: Sequence[str]) -> dict[str, Quote]:
        await self._enter("latest_quotes")
        now = self.now
        return {s: self.market.quote(s, now) for s in dict.fromkeys(symbols) if self.market.knows(s)}

    async def latest_bars(self, symbols: Sequence[str]) -> dict[str, Bar]:
        await self._enter("latest_bars")
        now = self.now
        return {s: self.market.latest_bar(s, now) for s in dict.fromkeys(symbols) if self.market.knows(s)}

    async def get_bars(
        self, symbols: Sequence[str], start: datetime, end: datetime, timeframe: Timeframe = "1Min"
    ) -> dict[str, list[Bar]]:
        await self._enter("get_bars")
        # Never return a bar that has not closed yet in simulated time.
        end = min(utc(end), self.now)
        out: dict[str, list[Bar]] = {}
        for symbol in dict.fromkeys(symbols):
            if self.market.knows(symbol):
                bars = [b for b in self.market.bars(symbol, start, end, timeframe) if bar_is_closed(b, timeframe, end)]
                if bars:
                    out[symbol] = bars
        return out

    # -- stream --------------------------------------------------------------------------------------
    async def trade_updates(self) -> AsyncIterator[TradeUpdate]:
        """Updates produced by this SimBroker instance (settled by any call or by advance_to)."""
        queue: asyncio.Queue[TradeUpdate] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)


async def _no_session_reset(conn: asyncpg.Connection) -> None:
    """The simulator keeps no session state (every change is a transaction, rolled back by asyncpg if left
    open): skip the pool's reset query, one more round trip at the end of every broker call."""


def _order_from_row(row: asyncpg.Record | Mapping[str, Any]) -> Order:
    return Order(
        id=row["id"],
        client_order_id=row["client_order_id"],
        symbol=row["symbol"],
        side=OrderSide(row["side"]),
        type=OrderType(row["type"]),
        qty=row["qty"],
        limit_price=row["limit_price"],
        time_in_force=TimeInForce(row["time_in_force"]),
        status=OrderStatus(row["status"]),
        filled_qty=row["filled_qty"],
        filled_avg_price=row["filled_avg_price"],
        submitted_at=row["submitted_at"],
        updated_at=row["updated_at"],
        filled_at=row["filled_at"],
        canceled_at=row["canceled_at"],
        expired_at=row["expired_at"],
        failed_at=row["failed_at"],
    )


# The open orders (and the order sent before with the submitted client order id, $1), each with the
# position in its symbol, and the position in the submitted symbol ($2). One row with no order when there
# is none, so that the submitted symbol's position is always there.
_SETTLE_READ = """
SELECT o.*, coalesce(o.client_order_id = $1::text, false) AS duplicate,
    p.qty AS position_qty, p.avg_entry_price AS position_avg,
    (SELECT qty FROM sim_positions WHERE symbol = $2::text) AS submit_position_qty
FROM (SELECT 1) AS one
LEFT JOIN sim_orders o ON o.is_open OR o.client_order_id = $1::text
LEFT JOIN sim_positions p ON p.symbol = o.symbol
ORDER BY o.submitted_at, o.id
"""

# Every change at once: data-modifying CTEs all run, on different rows (one row per symbol and order).
_WRITE = """
WITH kept AS (
    INSERT INTO sim_positions (symbol, qty, avg_entry_price)
    SELECT * FROM unnest($1::text[], $2::numeric[], $3::numeric[])
    ON CONFLICT (symbol) DO UPDATE SET qty = EXCLUDED.qty, avg_entry_price = EXCLUDED.avg_entry_price
), flat AS (
    DELETE FROM sim_positions WHERE symbol = ANY($4::text[])
), account AS (
    UPDATE sim_account SET cash = cash + $5::numeric WHERE id = 1 AND $5::numeric <> 0
)
INSERT INTO sim_orders (id, client_order_id, symbol, side, type, time_in_force, qty, limit_price, status,
    filled_qty, filled_avg_price, submitted_at, updated_at, filled_at, canceled_at, expired_at, failed_at,
    checked_until, is_open)
SELECT * FROM unnest($6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::numeric[],
    $13::numeric[], $14::text[], $15::numeric[], $16::numeric[], $17::timestamptz[], $18::timestamptz[],
    $19::timestamptz[], $20::timestamptz[], $21::timestamptz[], $22::timestamptz[], $23::timestamptz[],
    $24::boolean[])
ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, filled_qty = EXCLUDED.filled_qty,
    filled_avg_price = EXCLUDED.filled_avg_price, updated_at = EXCLUDED.updated_at,
    filled_at = EXCLUDED.filled_at, canceled_at = EXCLUDED.canceled_at, expired_at = EXCLUDED.expired_at,
    failed_at = EXCLUDED.failed_at, checked_until = EXCLUDED.checked_until, is_open = EXCLUDED.is_open
"""


async def _write(conn: asyncpg.Connection, changes: _Changes) -> None:
    """Store ``changes`` in one statement (none when there are none)."""
    if not changes.orders and not changes.positions and not changes.cash_delta:
        return
    kept = [(s, q, a) for s, (q, a) in changes.positions.items() if q != 0]
    flat = [s for s, (q, _) in changes.positions.items() if q == 0]
    orders = [o for o, _ in changes.orders]
    await conn.execute(
        _WRITE,
        [s for s, _, _ in kept],
        [q for _, q, _ in kept],
        [a for _, _, a in kept],
        flat,
        changes.cash_delta,
        [o.id for o in orders],
        [o.client_order_id for o in orders],
        [o.symbol for o in orders],
        [str(o.side) for o in orders],
        [str(o.type) for o in orders],
        [str(o.time_in_force) for o in orders],
        [o.qty for o in orders],
        [o.limit_price for o in orders],
        [str(o.status) for o in orders],
        [o.filled_qty for o in orders],
        [o.filled_avg_price for o in orders],
        [o.submitted_at for o in orders],
        [o.updated_at for o in orders],
        [o.filled_at for o in orders],
        [o.canceled_at for o in orders],
        [o.expired_at for o in orders],
        [o.failed_at for o in orders],
        [checked_until for _, checked_until in changes.orders],
        [o.is_open for o in orders],
    )
