"""The positions service: fills into the books, and the position_sync, price_update and
portfolio_snapshot jobs. The decisions are pure (``ledger``, ``reconcile``, ``valuation``, ``planning``);
this module loads state, calls the broker, appends events and publishes the live feeds.

Streams written:

- ``portfolio-<portfolio_id>``: FillApplied, PositionReconciled, PortfolioHalted (position_sync's halt
  policy), always at the version that was folded (``books.append_to_portfolio``);
- ``portfolio-unassigned``: PositionReconciled of positions no single portfolio owns;
- ``discrepancy-<SYMBOL>``: PositionDiscrepancyDetected / Resolved, SymbolQuarantined / QuarantineLifted,
  appended at the version folded, so two sync runs at once cannot report one discrepancy twice;
- ``quotes-<tick_id>``: the one QuotesObserved of a price_update tick;
- ``snapshot-<portfolio_id>-<YYYY-MM-DD>``: the one PortfolioSnapshotTaken of a trading day (NO_STREAM).

Feeds (core NATS, JSON): ``<prefix>.feed.fill.<portfolio_id>``, ``<prefix>.feed.price.<SYMBOL>`` (a dot
in a symbol becomes ``_``: ``BRK.B`` -> ``BRK_B``), ``<prefix>.feed.snapshot.<portfolio_id>``.

position_sync reports a discrepancy once: while it stays the same difference (quarantined or halting)
later runs say nothing; the first run that no longer sees it appends PositionDiscrepancyResolved and
lifts the quarantine. A ``fix`` is reported once and applied at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg
import msgspec

from eventstore import NO_STREAM, EventCodecError, EventStore, NewEvent, WrongExpectedVersion
from eventstore.relay import envelope_decoder
from services.broker.quotes import QuotesUnavailable, fetch_quotes
from services.broker.views import position_view
from services.core.events import registry
from services.core.feeds import feed_key
from services.core.host import ServiceContext
from services.core.jobs.consumer import Delivery, Reject, subscribe_durable, subscribe_ticks
from services.core.jobs.runner import JobContext
from services.core.jobs.types import JobType
from services.model.accounting import Book
from services.model.events.orders import OrderFilled, OrderPartiallyFilled
from services.model.events.positions import (
    FillApplied,
    PortfolioSnapshotTaken,
    PositionReconciled,
)
from services.model.events.strategy import PortfolioHalted
from services.model.ledger import record_fill
from services.model.market import BrokerPosition
from services.model.streams import discrepancy_stream, quotes_stream, snapshot_stream
from services.model.vocabulary import OPEN_ORDER_STATUSES
from services.positions.books import append_to_portfolio, load_book
from services.positions.planning import (
    SymbolSyncState,
    evolve_sync_state,
    fill_feed,
    price_feed,
    snapshot_day,
    snapshot_feed,
)
from services.positions.projection import PortfolioProjection, held_symbols, latest_prices, watched_symbols
from services.positions.reconcile import (
    Discrepancy,
    Holding,
    ReconcilePolicy,
    confirmed,
    find_discrepancies,
    plan_sync,
)
from services.positions.settings import PositionsSettings, load_positions_settings
from services.positions.valuation import (
    MissingPrices,
    portfolio_snapshot,
    quotes_observed,
    value_portfolio,
)

log = logging.getLogger(__name__)

SERVICE = "positions"
FILL_EVENT_TYPES = ("OrderPartiallyFilled", "OrderFilled")
SYNC_EVENT_TYPES = frozenset(
    {"PositionDiscrepancyDetected", "PositionDiscrepancyResolved", "SymbolQuarantined", "SymbolQuarantineLifted"}
)
MAX_ATTEMPTS = 50
FILL_ORDER_WAIT = 10.0  # seconds a fill waits for its portfolio's earlier fills to be booked


async def table_exists(con: asyncpg.Connection, table: str) -> bool:
    return bool(await con.fetchval("SELECT to_regclass($1) IS NOT NULL", table))


async def alert_symbols(con: asyncpg.Connection) -> list[str]:
    """Symbols of active price alerts (the alerts read model, when that service has created it)."""
    if not await table_exists(con, "alerts"):
        return []
    rows = await con.fetch("SELECT DISTINCT symbol FROM alerts WHERE active ORDER BY symbol")
    return [r["symbol"] for r in rows]


@dataclass(frozen=True)
class _Comparison:
    """One look at our positions and the broker's (see PositionsService._compare)."""

    found: list[Discrepancy]
    holdings: list[Holding]
    at_broker: list[BrokerPosition]
    in_flight: frozenset[str]
    open_symbols: frozenset[str]
    portfolios: int


class PositionsService:
    def __init__(self, ctx: ServiceContext, settings: PositionsSettings) -> None:
        self.ctx = ctx
        self.settings = settings

    @property
    def store(self) -> EventStore:
        return self.ctx.rt.store

    @property
    def policy(self) -> ReconcilePolicy:
        return self.settings.position_sync_policy

    async def publish(self, kind: str, key: str, payload: bytes) -> None:
        nc = self.ctx.rt.nc
        if nc.is_connected:
            await nc.publish(self.ctx.rt.subjects.feed(kind, key), payload)

    # ---------------------------------------------------------------------------------------- fills

    async def on_fill(self, delivery: Delivery) -> None:
        """Book one order fill (OrderPartiallyFilled / OrderFilled envelope) into its portfolio."""
        try:
            envelope = envelope_decoder.decode(delivery.data)
        except msgspec.DecodeError as exc:
            raise Reject(f"not an event envelope: {exc}") from None
        if envelope.type not in FILL_EVENT_TYPES:
            raise Reject(f"{envelope.type} is not an order fill")
        try:
            fill = registry.decode_data(envelope.type, bytes(envelope.data))
        except (EventCodecError, ValueError) as exc:
            raise Reject(f"invalid {envelope.type}: {exc}") from None
        assert isinstance(fill, OrderPartiallyFilled | OrderFilled)
        await self._wait_for_earlier_fills(fill.portfolio_id, envelope.global_position)
        booked: list[tuple[FillApplied, Decimal]] = []

        def decide(book: Book, _version: int) -> list[NewEvent]:
            after, event = record_fill(book, fill)
            assert isinstance(event.data, FillApplied)
            booked[:] = [(event.data, after.cash)]
            return [event]

        result = await append_to_portfolio(self.store, fill.portfolio_id, decide)
        # Published when booked, and again on a redelivery (the first attempt may have died before it).
        if result is not None and (result.written or delivery.num_delivered > 1):
            applied, cash = booked[0]
            await self.publish("fill", fill.portfolio_id, fill_feed(applied, cash, booked=result.written))

    async def _wait_for_earlier_fills(self, portfolio_id: str, position: int) -> None:
        """Book a portfolio's fills in log order, whichever worker or durable (partial / filled) got
        them: wait while an earlier fill of the portfolio is unbooked. Quantities and cash do not depend
        on the order; the split of P&L between realized and cost basis does (a sale against which buys).
        After FILL_ORDER_WAIT the fill is booked anyway (an earlier one may be in a long retry backoff)."""
        deadline = time.monotonic() + FILL_ORDER_WAIT
        runner = self.ctx.projections
        while True:
            if await runner.position(PortfolioProjection.name) < position:
                await runner.run_once(PortfolioProjection.name)
            async with self.store.pool.acquire() as con:
                earlier = await con.fetchval(
                    "SELECT count(*) FROM unbooked_fills WHERE portfolio_id = $1 AND position < $2",
                    portfolio_id,
                    position,
                )
            if not earlier:
                return
            if time.monotonic() > deadline:
                log.warning(
                    "fills of %s: %d earlier fill(s) still unbooked after %.0fs; booking #%d now",
                    portfolio_id,
                    earlier,
                    FILL_ORDER_WAIT,
                    position,
                )
                return
            await asyncio.sleep(0.05)

    # --------------------------------------------------------------------------------- price_update

    async def price_update(self, job: JobContext) -> dict[str, int]:
        at, tick_id = job.scheduled_at, job.tick.tick_id
        await self.ctx.catch_up(PortfolioProjection.name, "alerts")
        async with self.store.pool.acquire() as con:
            symbols = set(await held_symbols(con)) | set(await watched_symbols(con)) | set(await alert_symbols(con))
        if not symbols:
            return {"symbols_checked": 0, "symbols_updated": 0, "quote_problems": 0}
        broker = await self.ctx.at(at)
        check = await fetch_quotes(
            broker,
            symbols,
            at=at,
            batch_size=self.settings.quote_batch_size,
            max_age=timedelta(seconds=self.settings.quote_max_age_seconds),
        )
        event = quotes_observed(tick_id, check, at)
        await self.store.append(quotes_stream(tick_id), [event], NO_STREAM)
        for symbol, price in sorted(check.prices.items()):
            quote = check.fresh[symbol]
            await self.publish("price", feed_key(symbol), price_feed(symbol, price, quote, tick_id, at))
        if check.problems:
            log.warning(
                "price_update %s: no usable quote for %s",
                tick_id,
                ", ".join(f"{s} ({p})" for s, p in sorted(check.problems.items())),
            )
        if not check.prices:
            raise QuotesUnavailable(f"no usable quote for any of {len(check.problems)} symbols")
        return {
            "symbols_checked": check.symbols_checked,
            "symbols_updated": check.symbols_updated,
            "quote_problems": len(check.problems),
        }

    # --------------------------------------------------------------------------- portfolio_snapshot

    async def portfolio_snapshot(self, job: JobContext) -> dict[str, int]:
        at = job.scheduled_at
        day = snapshot_day(at)
        await self.ctx.catch_up(PortfolioProjection.name)
        async with self.store.pool.acquire() as con:
            portfolio_ids = [
                r["portfolio_id"] for r in await con.fetch("SELECT portfolio_id FROM portfolios ORDER BY portfolio_id")
            ]
            prices = {s: p for s, (p, _) in (await latest_prices(con)).items()}
        books: dict[str, Book] = {}
        for portfolio_id in portfolio_ids:
            if await self.store.stream_version(snapshot_stream(portfolio_id, day)) >= 0:
                continue  # taken already (a duplicate or manual tick, a restart)
            book, _ = await load_book(self.store, portfolio_id)
            if book is not None:
                books[portfolio_id] = book
        unpriced = {
            symbol
            for book in books.values()
            for symbol, p in book.positions.items()
            if not p.is_flat and symbol not in prices
        }
        if unpriced:  # never observed by price_update: ask the broker once (one call per batch)
            broker = await self.ctx.at(at)
            check = await fetch_quotes(
                broker,
                unpriced,
                at=at,
                batch_size=self.settings.quote_batch_size,
                max_age=timedelta(seconds=self.settings.quote_max_age_seconds),
            )
            prices.update(check.prices)
        created = 0
        failed: list[str] = []
        for portfolio_id, book in books.items():
            try:
                event = portfolio_snapshot(portfolio_id, day, value_portfolio(book, prices), at)
            except MissingPrices as exc:
                failed.append(str(exc))
                continue
            try:
                result = await self.store.append(snapshot_stream(portfolio_id, day), [event], NO_STREAM)
            except WrongExpectedVersion:
                continue  # another worker took it meanwhile
            if result.written:
                created += 1
                assert isinstance(event.data, PortfolioSnapshotTaken)
                await self.publish("snapshot", portfolio_id, snapshot_feed(event.data))
        if failed:
            raise SnapshotsIncomplete(f"{created} snapshot(s) taken; " + "; ".join(failed))
        return {"snapshots_created": created, "portfolios": len(portfolio_ids)}

    # -------------------------------------------------------------------------------- position_sync

    async def position_sync(self, job: JobContext) -> dict[str, int]:
        at, tick_id = job.scheduled_at, job.tick.tick_id
        comparison = await self._compare(at)
        if comparison.found:
            # Our side is read before the broker's: a fill landing in between looks like a discrepancy for
            # a moment. Look again and act only on what both looks found (a real one is still there).
            again = await self._compare(at)
            comparison = replace(again, found=confirmed(comparison.found, again.found))
        holdings, in_flight = comparison.holdings, comparison.in_flight
        compared = ({p.symbol for p in comparison.at_broker if p.qty != 0} | {h.symbol for h in holdings}) - in_flight
        by_symbol = {d.symbol: d for d in comparison.found}
        counters = {"discrepancies_found": 0, "discrepancies_fixed": 0, "quarantined": 0, "halted": 0}
        for symbol in sorted((set(by_symbol) | comparison.open_symbols) - in_flight):
            symbol_holdings = [h for h in holdings if h.symbol == symbol]
            await self._sync_symbol(symbol, by_symbol.get(symbol), symbol_holdings, tick_id, at, counters)
        return {"portfolios_synced": comparison.portfolios, "positions_synced": len(compared), **counters}

    async def _compare(self, at: datetime) -> _Comparison:
        """Our positions against the broker's, at the tick's time."""
        # Our side first, then the broker's: an order placed before our read is in flight in the trades
        # read model or open at the broker; a fill in the log not booked yet is in unbooked_fills.
        await self.ctx.catch_up("trades", PortfolioProjection.name, "alerts")
        # One snapshot for everything on our side: read in separate statements, a projection step
        # committing in between (a fill booked: position up, unbooked row gone) would show the old
        # position without the fill in flight, and the sync would "fix" a position that is right.
        async with self.store.pool.acquire() as con, con.transaction(isolation="repeatable_read", readonly=True):
            holdings = [
                Holding(portfolio_id=r["portfolio_id"], symbol=r["symbol"], qty=r["qty"], cost_basis=r["cost_basis"])
                for r in await con.fetch(
                    "SELECT portfolio_id, symbol, qty, cost_basis FROM positions WHERE qty <> 0"
                    " ORDER BY portfolio_id, symbol"
                )
            ]
            known = {r["symbol"] for r in await con.fetch("SELECT DISTINCT symbol FROM positions")}
            known |= set(await watched_symbols(con)) | set(await alert_symbols(con))
            in_flight = {r["symbol"] for r in await con.fetch("SELECT DISTINCT symbol FROM unbooked_fills")}
            if await table_exists(con, "trades"):
                rows = await con.fetch(
                    "SELECT DISTINCT symbol FROM trades WHERE status::text = ANY($1::text[])", list(OPEN_ORDER_STATUSES)
                )
                in_flight |= {r["symbol"] for r in rows}
            # The broker's average cost over the shared account is only comparable with ours for symbols
            # a single portfolio has ever held (another's round trip moves the broker's average, not ours).
            single_owner = {
                r["symbol"] for r in await con.fetch("SELECT symbol FROM positions GROUP BY symbol HAVING count(*) = 1")
            }
            open_symbols = {
                r["symbol"]
                for r in await con.fetch("SELECT DISTINCT symbol FROM position_discrepancies WHERE status = 'open'")
            }
            portfolios = int(await con.fetchval("SELECT count(*) FROM portfolios"))
        broker = await self.ctx.at(at)
        at_broker = [position_view(p) for p in await broker.list_positions()]
        in_flight |= {o.symbol for o in await broker.list_orders(status="open")}
        found = find_discrepancies(
            at_broker,
            holdings,
            known_symbols=frozenset(known),
            in_flight_symbols=frozenset(in_flight),
            price_tolerance=self.policy.price_tolerance,
            price_comparable=frozenset(single_owner),
        )
        return _Comparison(found, holdings, at_broker, frozenset(in_flight), frozenset(open_symbols), portfolios)

    async def _load_sync_state(self, symbol: str) -> tuple[SymbolSyncState, int]:
        state, version = SymbolSyncState(), -1
        async for recorded in self.store.read_stream(discrepancy_stream(symbol)):
            version = recorded.version
            if recorded.type in SYNC_EVENT_TYPES:
                state = evolve_sync_state(state, registry.decode(recorded))
        return state, version

    async def _sync_symbol(
        self,
        symbol: str,
        discrepancy: Discrepancy | None,
        holdings: list[Holding],
        tick_id: str,
        at: datetime,
        counters: dict[str, int],
    ) -> None:
        for _ in range(MAX_ATTEMPTS):
            state, version = await self._load_sync_state(symbol)
            outcome = plan_sync(
                [discrepancy] if discrepancy is not None else [],
                holdings,
                self.policy,
                open_discrepancies={symbol: state.open} if state.open is not None else {},
                quarantined_symbols=frozenset({symbol}) if state.quarantined else frozenset(),
                skipped_symbols=frozenset(),
                tick_id=tick_id,
                at=at,
            )
            own = [e for e in outcome.events if not isinstance(e.data, PositionReconciled | PortfolioHalted)]
            to_portfolios = [e for e in outcome.events if isinstance(e.data, PositionReconciled | PortfolioHalted)]
            if own:
                try:
                    await self.store.append(discrepancy_stream(symbol), own, version)
                except WrongExpectedVersion:
                    continue  # another sync run reported on this symbol meanwhile: look again
            break
        else:
            raise RuntimeError(f"{discrepancy_stream(symbol)}: too many concurrent changes")
        counters["discrepancies_found"] += outcome.discrepancies_found
        counters["quarantined"] += len(outcome.quarantined_symbols)
        counters["halted"] += len(outcome.halted_portfolios)
        applied = 0
        for event in to_portfolios:
            data = event.data
            if isinstance(data, PositionReconciled):
                applied += await self._reconcile(data, event)
            else:
                await append_to_portfolio(self.store, data.portfolio_id, lambda _b, _v, e=event: [e])
        if outcome.discrepancies_fixed and applied:
            counters["discrepancies_fixed"] += outcome.discrepancies_fixed

    async def _reconcile(self, data: PositionReconciled, event: NewEvent) -> int:
        """Apply a fix if the position is still what it was compared with (else the next run decides)."""

        def decide(book: Book, _version: int) -> list[NewEvent]:
            position = book.position(data.symbol)
            if position.qty == data.qty_before and position.cost_basis == data.cost_basis_before:
                return [event]
            return []

        result = await append_to_portfolio(self.store, data.portfolio_id, decide)
        if result is None:
            log.warning(
                "position_sync: %s in %s changed since the comparison; not reconciled", data.symbol, data.portfolio_id
            )
            return 0
        return 1


class SnapshotsIncomplete(RuntimeError):
    """Some portfolios could not be snapshotted (no price for an open position): the run fails."""


async def setup(ctx: ServiceContext) -> None:
    settings = load_positions_settings()
    service = PositionsService(ctx, settings)
    subjects = ctx.rt.subjects
    for event_type in FILL_EVENT_TYPES:
        subscribe_durable(
            ctx.consumers,
            subjects=subjects,
            service=SERVICE,
            subject=subjects.event("order", event_type),
            stream=subjects.events_stream,
            handler=service.on_fill,
        )
    jobs = {
        JobType.POSITION_SYNC: service.position_sync,
        JobType.PRICE_UPDATE: service.price_update,
        JobType.PORTFOLIO_SNAPSHOT: service.portfolio_snapshot,
    }
    for job_type, job in jobs.items():
        subscribe_ticks(ctx.consumers, subjects=subjects, service=SERVICE, job_type=job_type, runner=ctx.jobs, job=job)
