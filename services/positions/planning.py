"""Small pure helpers of the positions jobs (no I/O, no clock reads): which trading day a snapshot
belongs to, batching of quote requests, broker quotes into valuation quotes, feed keys and payloads."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date, datetime

import msgspec

from services.broker.models import Quote as BrokerQuote
from services.clock import calendar
from services.orders.types import require_aware
from services.positions.events import (
    PositionDiscrepancyDetected,
    PositionDiscrepancyResolved,
    SymbolQuarantined,
    SymbolQuarantineLifted,
)
from services.positions.reconcile import Discrepancy, DiscrepancyKind, PolicyAction
from services.positions.valuation import Quote

# Statuses of the ``trades`` read model of an order that may still fill.
IN_FLIGHT_STATUSES = ("requested", "submitted", "unknown", "partially_filled")


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


def batches(symbols: Iterable[str], size: int) -> Iterator[list[str]]:
    """Sorted, de-duplicated symbols in batches of at most ``size`` (one broker call each)."""
    if size < 1:
        raise ValueError("batch size must be >= 1")
    ordered = sorted(set(symbols))
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


def valuation_quote(quote: BrokerQuote) -> Quote:
    """A broker quote as the valuation logic sees it; a non-positive side is no price (never 0)."""
    bid = quote.bid_price if quote.bid_price > 0 else None
    ask = quote.ask_price if quote.ask_price > 0 else None
    return Quote(symbol=quote.symbol, bid=bid, ask=ask, last=None, timestamp=quote.timestamp)


def feed_key(symbol: str) -> str:
    """A symbol as a NATS subject token (``BRK.B`` -> ``BRK_B``: a dot separates tokens)."""
    return symbol.replace(".", "_")


_encoder = msgspec.json.Encoder(decimal_format="string")


def feed_payload(kind: str, data: msgspec.Struct, **extra: object) -> bytes:
    """The JSON body of a live feed message: ``{"kind": ..., **event fields, **extra}``."""
    body = msgspec.to_builtins(data, builtin_types=(datetime, date))
    if not isinstance(body, dict):
        raise TypeError("a feed payload must be a Struct")
    return _encoder.encode({"kind": kind, **body, **extra})


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
