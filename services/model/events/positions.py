"""Domain events of positions: fills booked, broker reconciliation, quotes and daily snapshots."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import msgspec

from services.model.registry import domain_event
from services.model.vocabulary import AwareDatetime, Side, TimedEvent

# The owner of positions found at the broker that no single portfolio can claim.
UNASSIGNED_PORTFOLIO = "unassigned"



@domain_event
class FillApplied(TimedEvent, frozen=True, kw_only=True):
    """A fill booked into one portfolio: the position after it and the money it moved."""

    portfolio_id: str
    client_order_id: str
    cumulative_qty: Decimal  # the order's cumulative filled qty after this fill (its identity)
    symbol: str
    side: Side
    fill_qty: Decimal
    fill_notional: Decimal
    fees: Decimal
    cash_change: Decimal
    realized_pnl: Decimal  # realized by this fill
    position_qty: Decimal  # after the fill
    position_cost_basis: Decimal  # after the fill


@domain_event
class PositionDiscrepancyDetected(TimedEvent, frozen=True, kw_only=True):
    tick_id: str
    symbol: str
    kind: str  # missing | quantity | price | closed_at_broker | unknown_at_broker
    ours_qty: Decimal  # the sum over all portfolios
    ours_avg_cost: Decimal | None
    broker_qty: Decimal
    broker_avg_price: Decimal | None
    owners: tuple[str, ...]  # portfolios holding the symbol
    policy: str  # fix | quarantine | halt


@domain_event
class PositionReconciled(TimedEvent, frozen=True, kw_only=True):
    """A position set to the broker's numbers by the ``fix`` policy (no cash moves: what was paid is
    not known). ``portfolio_id`` may be ``UNASSIGNED_PORTFOLIO``."""

    tick_id: str
    portfolio_id: str
    symbol: str
    kind: str
    qty_before: Decimal
    qty_after: Decimal
    cost_basis_before: Decimal
    cost_basis_after: Decimal


@domain_event
class PositionDiscrepancyResolved(TimedEvent, frozen=True, kw_only=True):
    """An open (quarantined or halting) discrepancy is no longer seen at a sync."""

    tick_id: str
    symbol: str
    kind: str


@domain_event
class SymbolQuarantined(TimedEvent, frozen=True, kw_only=True):
    """No new orders on this symbol, in any portfolio, until the discrepancy is resolved."""

    tick_id: str
    symbol: str
    reason: str


@domain_event
class SymbolQuarantineLifted(TimedEvent, frozen=True, kw_only=True):
    tick_id: str
    symbol: str
    reason: str


class ObservedQuote(msgspec.Struct, frozen=True, kw_only=True):
    bid: Decimal | None
    ask: Decimal | None
    last: Decimal | None
    price: Decimal  # the price used for valuation (mid or last)
    timestamp: AwareDatetime


@domain_event
class QuotesObserved(TimedEvent, frozen=True, kw_only=True):
    """One per price_update tick: the usable quotes, and every symbol asked for without one."""

    tick_id: str
    quotes: dict[str, ObservedQuote]
    problems: dict[str, str]  # symbol -> missing | no_price | stale


@domain_event
class PortfolioSnapshotTaken(TimedEvent, frozen=True, kw_only=True):
    portfolio_id: str
    trading_day: date
    total_value: Decimal
    cash_balance: Decimal
    positions_value: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
