"""position_sync: compare the broker's positions with ours and decide what to do about differences.

One broker account may hold the positions of several portfolios, so the broker's quantity per symbol
is compared with the SUM of every portfolio's quantity (the "unassigned" bucket included). A symbol
with an order still in flight is skipped: its fill may have reached the broker and not us yet.

Kinds of discrepancy:

- ``missing``: the broker holds a symbol we know (a universe or alert symbol) and no portfolio holds it;
- ``unknown_at_broker``: the broker holds a symbol none of our portfolios knows at all;
- ``closed_at_broker``: we hold a symbol the broker does not;
- ``quantity``: both hold it, in different quantities;
- ``price``: same quantity, different average cost beyond a tolerance. Only checked when exactly one
  portfolio holds the symbol: the broker's single average over a shared account depends on which
  portfolio sold what, so it cannot be compared with several portfolios' own averages. For the same
  reason the caller may restrict it further (``price_comparable``) to symbols no other portfolio has
  traded either: another portfolio's round trip leaves the broker's average changed and our holder's not.

Each kind has a policy: ``fix`` (set our books to the broker's, as PositionReconciled for the owning
portfolio, or for the "unassigned" bucket when several or none own the symbol), ``quarantine`` (no new
orders on the symbol until the difference is gone) or ``halt`` (halt the owning portfolios; with no
owner there is nobody to halt, so the symbol is quarantined instead).

A discrepancy that is left open (quarantine, halt) is reported once: later syncs that find the same
difference say nothing, and the first sync that no longer finds it resolves it (and lifts the
quarantine; a halted portfolio stays halted until an operator resumes it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from eventstore import NewEvent
from services.core.events import new_event
from services.model.events.positions import (
    UNASSIGNED_PORTFOLIO,
    PositionDiscrepancyDetected,
    PositionDiscrepancyResolved,
    PositionReconciled,
    SymbolQuarantined,
    SymbolQuarantineLifted,
)
from services.model.events.strategy import PortfolioHalted
from services.model.market import BrokerPosition
from services.model.vocabulary import require_aware

ZERO = Decimal(0)


class DiscrepancyKind(StrEnum):
    MISSING = "missing"
    QUANTITY = "quantity"
    PRICE = "price"
    CLOSED_AT_BROKER = "closed_at_broker"
    UNKNOWN_AT_BROKER = "unknown_at_broker"


class PolicyAction(StrEnum):
    FIX = "fix"
    QUARANTINE = "quarantine"
    HALT = "halt"


class ReconcilePolicy(BaseModel):
    """What to do with each kind of discrepancy. The default is to fix them all."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    missing: PolicyAction = PolicyAction.FIX
    quantity: PolicyAction = PolicyAction.FIX
    price: PolicyAction = PolicyAction.FIX
    closed_at_broker: PolicyAction = PolicyAction.FIX
    unknown_at_broker: PolicyAction = PolicyAction.FIX
    # Relative difference of average cost tolerated before a price discrepancy (0.001 = 0.1 %).
    price_tolerance: Decimal = Field(default=Decimal("0.001"), ge=0)

    def action_for(self, kind: DiscrepancyKind) -> PolicyAction:
        return PolicyAction(getattr(self, kind.value))


class Holding(msgspec.Struct, frozen=True, kw_only=True):
    """One portfolio's position in one symbol, as our books have it."""

    portfolio_id: str
    symbol: str
    qty: Decimal
    cost_basis: Decimal


class Discrepancy(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    kind: DiscrepancyKind
    ours_qty: Decimal
    ours_avg_cost: Decimal | None
    broker_qty: Decimal
    broker_avg_price: Decimal | None
    owners: tuple[str, ...]  # portfolios holding a non-zero quantity, sorted

    def same_difference(self, other: Discrepancy) -> bool:
        """True when ``other`` reports the same difference (so it is not reported twice)."""
        return (self.kind, self.ours_qty, self.broker_qty, self.broker_avg_price) == (
            other.kind,
            other.ours_qty,
            other.broker_qty,
            other.broker_avg_price,
        )


def confirmed(first: Iterable[Discrepancy], second: Iterable[Discrepancy]) -> list[Discrepancy]:
    """The discrepancies of a second look that the first found too, with the same difference. Our side is
    read before the broker's: a fill landing in between shows a difference for a moment, gone (or changed)
    a moment later. What both looks agree on is acted upon; the rest waits for the next sync."""
    earlier = {d.symbol: d for d in first}
    return [d for d in second if d.symbol in earlier and d.same_difference(earlier[d.symbol])]


def find_discrepancies(
    broker_positions: Iterable[BrokerPosition],
    holdings: Iterable[Holding],
    *,
    known_symbols: frozenset[str],
    in_flight_symbols: frozenset[str],
    price_tolerance: Decimal = Decimal("0.001"),
    price_comparable: frozenset[str] | None = None,
) -> list[Discrepancy]:
    """Every difference between the broker and the sum of our portfolios, sorted by symbol."""
    broker = {p.symbol: p for p in broker_positions if p.qty != 0}
    by_symbol: dict[str, list[Holding]] = defaultdict(list)
    for holding in holdings:
        if holding.qty != 0:
            by_symbol[holding.symbol].append(holding)

    found = []
    for symbol in sorted(set(broker) | set(by_symbol)):
        if symbol in in_flight_symbols:
            continue
        ours = by_symbol.get(symbol, [])
        ours_qty = sum((h.qty for h in ours), ZERO)
        ours_basis = sum((h.cost_basis for h in ours), ZERO)
        at_broker = broker.get(symbol)
        check_price = price_comparable is None or symbol in price_comparable
        kind = _classify(symbol, ours, ours_qty, ours_basis, at_broker, known_symbols,
                         price_tolerance if check_price else None)
        if kind is None:
            continue
        found.append(
            Discrepancy(
                symbol=symbol,
                kind=kind,
                ours_qty=ours_qty,
                ours_avg_cost=None if ours_qty == 0 else ours_basis / ours_qty,
                broker_qty=ZERO if at_broker is None else at_broker.qty,
                broker_avg_price=None if at_broker is None else at_broker.avg_entry_price,
                owners=tuple(sorted({h.portfolio_id for h in ours})),
            )
        )
    return found


def _classify(
    symbol: str,
    ours: list[Holding],
    ours_qty: Decimal,
    ours_basis: Decimal,
    at_broker: BrokerPosition | None,
    known_symbols: frozenset[str],
    price_tolerance: Decimal | None,
) -> DiscrepancyKind | None:
    if at_broker is None:
        return DiscrepancyKind.CLOSED_AT_BROKER if ours_qty != 0 else None
    if not ours:
        return DiscrepancyKind.MISSING if symbol in known_symbols else DiscrepancyKind.UNKNOWN_AT_BROKER
    if ours_qty != at_broker.qty:
        return DiscrepancyKind.QUANTITY
    if price_tolerance is not None and len(ours) == 1 and at_broker.avg_entry_price > 0:
        ours_avg = ours_basis / ours_qty
        if abs(ours_avg - at_broker.avg_entry_price) > price_tolerance * at_broker.avg_entry_price:
            return DiscrepancyKind.PRICE
    return None


# ------------------------------------------------------------------------------------------ the plan


class SyncOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """The events of one position_sync run and its counters."""

    events: tuple[NewEvent, ...]
    discrepancies_found: int  # newly reported this run
    discrepancies_fixed: int
    quarantined_symbols: tuple[str, ...]
    halted_portfolios: tuple[str, ...]


def plan_sync(
    discrepancies: Iterable[Discrepancy],
    holdings: Iterable[Holding],
    policy: ReconcilePolicy,
    *,
    open_discrepancies: Mapping[str, Discrepancy],
    quarantined_symbols: frozenset[str],
    skipped_symbols: frozenset[str],
    tick_id: str,
    at: datetime,
) -> SyncOutcome:
    """Decide the events of a position_sync run from what ``find_discrepancies`` found.

    ``open_discrepancies`` are those reported earlier and not fixed or resolved since (per symbol);
    ``skipped_symbols`` were not compared this run (orders in flight), so their open discrepancies stay.
    Event ids derive from the tick and the symbol (and portfolio), so a redelivered tick adds nothing.
    """
    require_aware(at, "at")
    by_portfolio: dict[tuple[str, str], Holding] = {(h.portfolio_id, h.symbol): h for h in holdings}
    events: list[NewEvent] = []
    found = fixed = 0
    quarantined: list[str] = []
    halted: set[str] = set()
    current = {d.symbol: d for d in discrepancies}

    for symbol, discrepancy in sorted(current.items()):
        previous = open_discrepancies.get(symbol)
        if previous is not None and previous.same_difference(discrepancy):
            continue  # reported already and still open: say nothing new
        action = policy.action_for(discrepancy.kind)
        found += 1
        events.append(new_event(_detected(discrepancy, action, tick_id, at), tick_id, symbol))
        if action is PolicyAction.FIX:
            fixed += 1
            events.extend(_fix(discrepancy, by_portfolio, tick_id, at))
            continue
        owners = [o for o in discrepancy.owners if o != UNASSIGNED_PORTFOLIO]
        if action is PolicyAction.HALT and owners:
            for portfolio_id in owners:
                halted.add(portfolio_id)
                reason = f"position_sync: {discrepancy.kind} discrepancy in {symbol}"
                halt = PortfolioHalted(portfolio_id=portfolio_id, reason=reason, rule="position_sync", at=at)
                events.append(new_event(halt, tick_id, portfolio_id, symbol))
        elif symbol not in quarantined_symbols:
            quarantined.append(symbol)
            reason = f"{discrepancy.kind} discrepancy: ours {discrepancy.ours_qty}, broker {discrepancy.broker_qty}"
            events.append(new_event(SymbolQuarantined(tick_id=tick_id, symbol=symbol, reason=reason, at=at), tick_id))

    for symbol, previous in sorted(open_discrepancies.items()):
        if symbol in current or symbol in skipped_symbols:
            continue
        events.append(
            new_event(
                PositionDiscrepancyResolved(tick_id=tick_id, symbol=symbol, kind=previous.kind, at=at), tick_id, symbol
            )
        )
        if symbol in quarantined_symbols:
            lifted = SymbolQuarantineLifted(tick_id=tick_id, symbol=symbol, reason="positions agree again", at=at)
            events.append(new_event(lifted, tick_id, symbol))

    return SyncOutcome(
        events=tuple(events),
        discrepancies_found=found,
        discrepancies_fixed=fixed,
        quarantined_symbols=tuple(quarantined),
        halted_portfolios=tuple(sorted(halted)),
    )


def _detected(d: Discrepancy, action: PolicyAction, tick_id: str, at: datetime) -> PositionDiscrepancyDetected:
    return PositionDiscrepancyDetected(
        tick_id=tick_id,
        symbol=d.symbol,
        kind=d.kind.value,
        ours_qty=d.ours_qty,
        ours_avg_cost=d.ours_avg_cost,
        broker_qty=d.broker_qty,
        broker_avg_price=d.broker_avg_price,
        owners=d.owners,
        policy=action.value,
        at=at,
    )


def _fix(d: Discrepancy, holdings: Mapping[tuple[str, str], Holding], tick_id: str, at: datetime) -> list[NewEvent]:
    """PositionReconciled events that make the sum of our positions equal the broker's."""
    broker_price = d.broker_avg_price or ZERO
    targets: list[tuple[str, Decimal, Decimal]]  # (portfolio, qty after, basis after)
    match d.kind:
        case DiscrepancyKind.CLOSED_AT_BROKER:
            # Every holder is flat at the broker's end: the only way our sum can be 0.
            targets = [(owner, ZERO, ZERO) for owner in d.owners]
        case DiscrepancyKind.PRICE:
            (owner,) = d.owners  # price discrepancies are only found with one owner
            targets = [(owner, d.ours_qty, d.ours_qty * broker_price)]
        case DiscrepancyKind.QUANTITY if len(d.owners) == 1:
            owner = d.owners[0]
            held = holdings[(owner, d.symbol)]
            targets = [(owner, d.broker_qty, _basis_after(held, d.broker_qty, broker_price))]
        case _:
            # missing / unknown (nobody owns it) or a quantity held by several portfolios: the
            # difference goes to the unassigned bucket, at the broker's average price.
            held = holdings.get((UNASSIGNED_PORTFOLIO, d.symbol)) or Holding(
                portfolio_id=UNASSIGNED_PORTFOLIO, symbol=d.symbol, qty=ZERO, cost_basis=ZERO
            )
            qty_after = held.qty + (d.broker_qty - d.ours_qty)
            targets = [(UNASSIGNED_PORTFOLIO, qty_after, _basis_after(held, qty_after, broker_price))]

    events = []
    for portfolio_id, qty_after, basis_after in targets:
        held = holdings.get((portfolio_id, d.symbol))
        reconciled = PositionReconciled(
            tick_id=tick_id,
            portfolio_id=portfolio_id,
            symbol=d.symbol,
            kind=d.kind.value,
            qty_before=ZERO if held is None else held.qty,
            qty_after=qty_after,
            cost_basis_before=ZERO if held is None else held.cost_basis,
            cost_basis_after=basis_after,
            at=at,
        )
        events.append(new_event(reconciled, tick_id, portfolio_id, d.symbol))
    return events


def _basis_after(held: Holding, qty_after: Decimal, broker_price: Decimal) -> Decimal:
    """Keep the holder's average cost while the position keeps its side; otherwise (new, flipped)
    take the broker's average price."""
    if qty_after == 0:
        return ZERO
    if held.qty != 0 and (held.qty > 0) == (qty_after > 0):
        return held.cost_basis * qty_after / held.qty
    return qty_after * broker_price
