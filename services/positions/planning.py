"""Small pure helpers of the positions jobs (no I/O, no clock reads): which trading day a snapshot
belongs to, feed bodies, and a symbol's sync state folded from its discrepancy events."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import msgspec

from services.clock import calendar
from services.core import feeds
from services.model.events.positions import (
    FillApplied,
    PortfolioSnapshotTaken,
    PositionDiscrepancyDetected,
    PositionDiscrepancyResolved,
    SymbolQuarantined,
    SymbolQuarantineLifted,
)
from services.model.market import Quote
from services.model.vocabulary import require_aware
from services.positions.reconcile import Discrepancy, DiscrepancyKind, PolicyAction


def snapshot_day(at: datetime) -> date:
    """The trading day a snapshot taken at ``at`` belongs to: the latest session that opened at or
    before ``at``. A scheduled tick (close + 5 min) gives that day; a manual tick on a weekend, a holiday
    or before the open gives the previous session, so it can never create a second day's snapshot."""
    require_aware(at, "at")
    day = calendar.exchange_date(at)
    today = calendar.session(day)
    if today is not None and today.open <= at:
        return today.day
    return next(calendar.sessions_before(day)).day


def fill_feed(applied: FillApplied, cash: Decimal, *, booked: bool) -> bytes:
    """The body of ``<prefix>.feed.fill.<portfolio_id>`` (services/core/feeds.py): the fill, the position
    and the cash after it."""
    return feeds.encode(feeds.FillFeed(
        at=feeds.utc(applied.at), portfolio_id=applied.portfolio_id, client_order_id=applied.client_order_id,
        symbol=applied.symbol, side=applied.side.value, fill_qty=feeds.quantity(applied.fill_qty),
        fill_price=feeds.price(applied.fill_notional / applied.fill_qty) if applied.fill_qty else None,
        fill_notional=feeds.money(applied.fill_notional), cash_change=feeds.money(applied.cash_change),
        realized_pnl=feeds.money(applied.realized_pnl), position_qty=feeds.quantity(applied.position_qty),
        position_cost_basis=feeds.money(applied.position_cost_basis), cash=feeds.money(cash), booked=booked,
    ))


def snapshot_feed(snapshot: PortfolioSnapshotTaken) -> bytes:
    """The body of ``<prefix>.feed.snapshot.<portfolio_id>``."""
    return feeds.encode(feeds.SnapshotFeed(
        at=feeds.utc(snapshot.at), portfolio_id=snapshot.portfolio_id, trading_day=snapshot.trading_day,
        total_value=feeds.money(snapshot.total_value), cash_balance=feeds.money(snapshot.cash_balance),
        positions_value=feeds.money(snapshot.positions_value), realized_pnl=feeds.money(snapshot.realized_pnl),
        unrealized_pnl=feeds.money(snapshot.unrealized_pnl),
    ))


def price_feed(symbol: str, price: Decimal, quote: Quote, tick_id: str, at: datetime) -> bytes:
    """The body of ``<prefix>.feed.price.<SYMBOL>``: ``at`` is the tick's time."""
    return feeds.encode(feeds.PriceFeed(
        at=feeds.utc(at), symbol=symbol, price=feeds.price(price), bid=feeds.optional_price(quote.bid),
        ask=feeds.optional_price(quote.ask), quote_at=feeds.utc(quote.timestamp), tick_id=tick_id,
    ))


# ------------------------------------------------------------------------------------ position_sync


class SymbolSyncState(msgspec.Struct, frozen=True, kw_only=True):
    """What position_sync has said about one symbol (the fold of ``discrepancy-<SYMBOL>``): the open
    (reported, quarantined or halting, not yet resolved) discrepancy, and whether it is quarantined."""

    open: Discrepancy | None = None
    quarantined: bool = False


SyncEvent = PositionDiscrepancyDetected | PositionDiscrepancyResolved | SymbolQuarantined | SymbolQuarantineLifted


def discrepancy_of(event: PositionDiscrepancyDetected) -> Discrepancy:
    return Discrepancy(
        symbol=event.symbol,
        kind=DiscrepancyKind(event.kind),
        ours_qty=event.ours_qty,
        ours_avg_cost=event.ours_avg_cost,
        broker_qty=event.broker_qty,
        broker_avg_price=event.broker_avg_price,
        owners=tuple(event.owners),
    )


def evolve_sync_state(state: SymbolSyncState, event: SyncEvent) -> SymbolSyncState:
    match event:
        case PositionDiscrepancyDetected():
            if event.policy == PolicyAction.FIX.value:
                return state  # fixed at once: nothing stays open
            return msgspec.structs.replace(state, open=discrepancy_of(event))
        case PositionDiscrepancyResolved():
            return msgspec.structs.replace(state, open=None)
        case SymbolQuarantined():
            return msgspec.structs.replace(state, quarantined=True)
        case SymbolQuarantineLifted():
            return msgspec.structs.replace(state, quarantined=False)
    raise TypeError(f"not a position_sync event: {type(event).__name__}")
