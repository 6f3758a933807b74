"""SimBroker: the paper broker of the simulator, persisted in PostgreSQL (tables sim_*, storage.py).

Time is simulated: ``now`` is injected (a ManualClock driven by the virtual clock, or the wall clock for a
live demo; clocks.py). Orders progress lazily: every call first settles all open orders up to ``now``
(fills, expiry), inside one transaction that holds the sim_account row lock, so several processes can share
one simulated account. When the virtual clock moves, the service host also settles in the background
(``settle_soon``), so the next call usually finds nothing left to do. A restart does not reset the broker:
the state lives in the database. Every call may first meet an injected fault (faults.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

import asyncpg

from services.broker.errors import AmbiguousSubmit, DuplicateClientOrderId, NotFound, OrderNotCancelable
from services.broker.models import (
    Account,
    Bar,
    CalendarDay,
    Clock,
    Order,
    OrderRequest,
    Position,
    Quote,
    TradeUpdate,
    utc,
)
from services.broker.protocol import OrderQueryStatus, Timeframe
from services.broker.simulator import engine
from services.broker.simulator.calendar import market_clock, trading_days
from services.broker.simulator.clocks import ManualClock, wall_clock
from services.broker.simulator.faults import OPERATIONS, SimFaults, before_call, loses_submit_response
from services.broker.simulator.market import DEFAULT_SYMBOLS, MarketSimulator, bar_is_closed
from services.broker.simulator.storage import SETTLE_READ, Changes, open_store, order_from_row, write_changes

log = logging.getLogger(__name__)


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
    changes: Changes = field(default_factory=lambda: Changes())


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
        pool = await open_store(dsn, config.seed, config.starting_cash, now)
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
        await before_call(self.config.faults, self.config.seed, operation, count)

    # -- settling ------------------------------------------------------------------------------------
    async def _settle(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            settled = await self._settle_in_transaction(conn)
            await write_changes(conn, settled.changes)
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
        changed orders, positions and cash (see ``storage.write_changes``). ``submitting``: an order about to be
        submitted. The same read (after the lock, so that it sees every committed change) then also
        finds the order already sent with its client order id and the position in its symbol, both as
        they are after this settle; the caller writes the new order with the settle's changes."""
        now = self.now
        updates: list[TradeUpdate] = []
        cash: Decimal = await conn.fetchval("SELECT cash FROM sim_account WHERE id = 1 FOR UPDATE")
        found = await conn.fetch(
            SETTLE_READ,
            submitting.client_order_id if submitting is not None else None,
            submitting.symbol if submitting is not None else None,
        )
        still_open: list[Order] = []
        duplicate: Order | None = None
        position = found[0]["submit_position_qty"] or Decimal(0)
        # symbol -> (qty, average entry price), as the fills of this settle leave them
        positions: dict[str, tuple[Decimal, Decimal]] = {}
        changes = Changes()
        for row in found:
            if row["id"] is not None and row["position_qty"] is not None:
                positions.setdefault(row["symbol"], (row["position_qty"], row["position_avg"]))
        for row in found:
            if row["id"] is None:
                continue  # no open order and no duplicate: the one row that carries the position
            order = order_from_row(row)
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
                await write_changes(conn, settled.changes)
            self._publish(settled.updates)
        count = self._calls["submit_order"]
        if loses_submit_response(self.config.faults, self.config.seed, count):
            raise AmbiguousSubmit("simulated lost submit response", client_order_id=request.client_order_id, status=504)
        return order

    async def get_order(self, order_id: str) -> Order:
        await self._enter("get_order")
        async with self._pool.acquire() as conn:
            await self._settle(conn)
            row = await conn.fetchrow("SELECT * FROM sim_orders WHERE id = $1", order_id)
        if row is None:
            raise NotFound("order not found", status=404, code=40410000)
        return order_from_row(row)

    async def get_order_by_client_id(self, client_order_id: str) -> Order | None:
        await self._enter("get_order_by_client_id")
        async with self._pool.acquire() as conn:
            await self._settle(conn)
            row = await conn.fetchrow("SELECT * FROM sim_orders WHERE client_order_id = $1", client_order_id)
        return order_from_row(row) if row is not None else None

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
        return [order_from_row(row) for row in rows]

    async def cancel_order(self, order_id: str) -> None:
        await self._enter("cancel_order")
        async with self._pool.acquire() as conn:
            await self._settle(conn)
            async with conn.transaction():
                await conn.fetchrow("SELECT cash FROM sim_account WHERE id = 1 FOR UPDATE")
                row = await conn.fetchrow("SELECT * FROM sim_orders WHERE id = $1", order_id)
                if row is None:
                    raise NotFound("order not found", status=404, code=40410000)
                result = engine.cancel(order_from_row(row), self.now)
                if result is None:
                    raise OrderNotCancelable(
                        f"order is not cancelable (status {row['status']})", status=422, code=42210000
                    )
                order, event = result
                await write_changes(conn, Changes(orders=[(order, self.now)]))
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
            open_orders = [order_from_row(r) for r in await conn.fetch("SELECT * FROM sim_orders WHERE is_open")]
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
