"""Small pure helpers of the positions jobs (no I/O, no clock reads): which trading day a snapshot
belongs to, batching of quote requests, broker quotes into valuation quotes, feed keys and payloads."""

from __future__ import annotations

from datetime import date, datetime

import msgspec

from services.clock import calendar
from services.model.events.positions import (
    PositionDiscrepancyDetected,
    PositionDiscrepancyResolved,
    SymbolQuarantined,
    SymbolQuarantineLifted,
)
from services.model.vocabulary import require_aware
from services.positions.reconcile import Discrepancy, DiscrepancyKind, PolicyAction

# Statuses of the ``trades`` read model of an order that may still fill.


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


def feed_key(symbol: str) -> str:
    """A symbol as a NATS subject token (``BRK.B`` -> ``BRK_B``: a dot separates tokens)."""
    return symbol.replace(".", "_")


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
