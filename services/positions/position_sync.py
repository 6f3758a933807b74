"""The position_sync job: compares our positions with the broker's at the tick's time and acts on what
differs by the configured policy (``reconcile.plan_sync``): report, fix, quarantine the symbol or halt
the portfolio.

Writes ``discrepancy-<SYMBOL>`` (PositionDiscrepancyDetected / Resolved, SymbolQuarantined /
QuarantineLifted), appended at the version folded so two sync runs at once cannot report one discrepancy
twice, and ``portfolio-<portfolio_id>`` / ``portfolio-unassigned`` (PositionReconciled, PortfolioHalted).
A discrepancy is reported once: while it stays the same difference (quarantined or halting) later runs
say nothing; the first run that no longer sees it appends PositionDiscrepancyResolved and lifts the
quarantine. A ``fix`` is reported once and applied at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime

from eventstore import NewEvent, WrongExpectedVersion
from services.broker.views import position_view
from services.core.events import registry
from services.core.jobs.runner import JobContext
from services.model.accounting import Book
from services.model.events.positions import PositionReconciled
from services.model.events.strategy import PortfolioHalted
from services.model.market import BrokerPosition
from services.model.streams import discrepancy_stream
from services.positions.books import append_to_portfolio
from services.positions.planning import SymbolSyncState, evolve_sync_state
from services.positions.projection import PortfolioProjection, watched_symbols
from services.positions.reconcile import (
    Discrepancy,
    Holding,
    ReconcilePolicy,
    confirmed,
    find_discrepancies,
    plan_sync,
)
from services.positions.shell import PositionsShell

log = logging.getLogger(__name__)

SYNC_EVENT_TYPES = frozenset(
    {"PositionDiscrepancyDetected", "PositionDiscrepancyResolved", "SymbolQuarantined", "SymbolQuarantineLifted"}
)
MAX_ATTEMPTS = 50


@dataclass(frozen=True)
class _Comparison:
    """One look at our positions and the broker's (see PositionSync._compare)."""

    found: list[Discrepancy]
    holdings: list[Holding]
    at_broker: list[BrokerPosition]
    in_flight: frozenset[str]
    open_symbols: frozenset[str]
    portfolios: int


class PositionSync(PositionsShell):
    """The position_sync job (``position_sync``), run by the job runner for each of its ticks."""

    @property
    def policy(self) -> ReconcilePolicy:
        return self.settings.position_sync_policy

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
            known |= set(await watched_symbols(con)) | await self.reads.active_alert_symbols(con)
            in_flight = {r["symbol"] for r in await con.fetch("SELECT DISTINCT symbol FROM unbooked_fills")}
            in_flight |= await self.reads.open_order_symbols(con)
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
