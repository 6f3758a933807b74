"""An order's states and the pure rules that move it from one to the next.

The broker tells us about an order in two ways that overlap and arrive in any order: polling
(order_status_check) and, where the broker has one, the trade_updates stream. Both are reduced here to a
``BrokerOrderView`` (a snapshot of the order at the broker) and turned into new events by
``apply_broker_order``. Fills are applied by CUMULATIVE filled quantity: a fill is the increase of the
cumulative quantity over what we already know, so a snapshot seen twice, or a stale one with a lower
quantity, adds nothing. The shell appends the events to the order's stream with the version it loaded
(optimistic concurrency), so two workers racing on one order cannot both add the same increment.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

import msgspec

from eventstore import NewEvent
from services.core.events import event_id_for, new_event
from services.model.decimals import canonical_decimal
from services.model.events.orders import (
    OrderCanceled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
    OrderSubmitUnknown,
)
from services.model.events.strategy import OrderRequested
from services.model.market import BrokerOrderView, BrokerStatus
from services.model.vocabulary import OrderType, Side, require_aware

ZERO = Decimal(0)

# How long an order the broker does not know (by client order id) stays "unknown" before we conclude
# it was never received. alpaca-py retries a POST for up to ~9 s, and a new order can take a moment to
# become visible to the by-client-id lookup: a few minutes leaves a wide margin.
DEFAULT_UNKNOWN_GRACE = timedelta(minutes=5)


class OrderStatus(StrEnum):
    REQUESTED = "requested"
    SUBMITTED = "submitted"
    UNKNOWN = "unknown"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REJECTED = "rejected"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED})

# Every event passes through SUBMITTED first (apply_broker_order emits OrderSubmitted before anything
# else for an order we had not seen accepted), which keeps this table small.
ALLOWED_TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.REQUESTED: frozenset({OrderStatus.SUBMITTED, OrderStatus.UNKNOWN, OrderStatus.REJECTED}),
    OrderStatus.UNKNOWN: frozenset({OrderStatus.SUBMITTED, OrderStatus.REJECTED}),
    OrderStatus.SUBMITTED: frozenset(
        {
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELED,
            OrderStatus.EXPIRED,
            OrderStatus.REJECTED,
        }
    ),
    OrderStatus.PARTIALLY_FILLED: frozenset(
        {OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED}
    ),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELED: frozenset(),
    OrderStatus.EXPIRED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
}


class IllegalTransition(ValueError):
    pass


def can_transition(current: OrderStatus, new: OrderStatus) -> bool:
    return new in ALLOWED_TRANSITIONS[current]


# ------------------------------------------------------------------------------------------ state


class OrderState(msgspec.Struct, frozen=True, kw_only=True):
    """What we know about one order: folded from its OrderRequested and the events after it."""

    portfolio_id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType
    limit_price: Decimal | None
    status: OrderStatus
    broker_order_id: str | None = None
    filled_qty: Decimal = ZERO
    avg_fill_price: Decimal | None = None
    requested_at: datetime
    unknown_since: datetime | None = None  # when the submit became ambiguous

    @property
    def filled_notional(self) -> Decimal:
        """Money of everything filled so far, exactly as the broker's cumulative figures say."""
        return ZERO if self.avg_fill_price is None else self.filled_qty * self.avg_fill_price

    @classmethod
    def from_request(cls, request: OrderRequested) -> OrderState:
        return cls(
            portfolio_id=request.portfolio_id,
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            side=request.side,
            qty=request.qty,
            order_type=request.order_type,
            limit_price=request.limit_price,
            status=OrderStatus.REQUESTED,
            requested_at=request.at,
        )


def evolve(state: OrderState, event: OrderEvent) -> OrderState:
    """The order's state after one of its events (a fold step; refuses an illegal transition)."""
    if event.client_order_id != state.client_order_id:
        raise ValueError(f"event of order {event.client_order_id} applied to order {state.client_order_id}")
    match event:
        case OrderSubmitted():
            return _moved(state, OrderStatus.SUBMITTED, broker_order_id=event.broker_order_id)
        case OrderSubmitUnknown():
            return _moved(state, OrderStatus.UNKNOWN, unknown_since=event.at)
        case OrderRejected():
            return _moved(state, OrderStatus.REJECTED)
        case OrderPartiallyFilled() | OrderFilled():
            if event.cumulative_qty < state.filled_qty:
                raise IllegalTransition(
                    f"order {state.client_order_id}: cumulative filled qty cannot go down "
                    f"({state.filled_qty} -> {event.cumulative_qty})"
                )
            status = OrderStatus.FILLED if isinstance(event, OrderFilled) else OrderStatus.PARTIALLY_FILLED
            return _moved(state, status, filled_qty=event.cumulative_qty, avg_fill_price=event.avg_price)
        case OrderCanceled():
            return _moved(state, OrderStatus.CANCELED)
        case OrderExpired():
            return _moved(state, OrderStatus.EXPIRED)
    raise TypeError(f"not an order event: {type(event).__name__}")


def _moved(state: OrderState, status: OrderStatus, **changes: object) -> OrderState:
    if not can_transition(state.status, status):
        raise IllegalTransition(f"order {state.client_order_id}: {state.status} -> {status} is not allowed")
    return msgspec.structs.replace(state, status=status, **changes)


# ------------------------------------------------------------------------------------------ the broker's view


def apply_broker_order(known: OrderState, broker: BrokerOrderView) -> list[NewEvent]:
    """The new events that bring our order up to the broker's snapshot, in order: OrderSubmitted (if we
    had not seen it accepted), a fill (if the cumulative quantity grew), then the terminal event (if the
    broker closed it). Empty when the snapshot tells us nothing new, is stale, or the order is over."""
    if broker.client_order_id != known.client_order_id:
        raise ValueError(f"broker view of {broker.client_order_id} applied to order {known.client_order_id}")
    if known.status.is_terminal:
        return []

    events: list[NewEvent] = []
    base = _identity(known)
    if known.status in (OrderStatus.REQUESTED, OrderStatus.UNKNOWN):
        events.append(
            new_event(
                OrderSubmitted(**base, broker_order_id=broker.broker_order_id, submitted_at=broker.updated_at),
                known.client_order_id,
            )
        )

    fill = _fill_event(known, broker)
    if fill is not None:
        events.append(fill)

    is_filled = fill is not None and isinstance(fill.data, OrderFilled)
    if not is_filled:
        terminal = _terminal_event(known, broker, base)
        if terminal is not None:
            events.append(terminal)
    return events


def _fill_event(known: OrderState, broker: BrokerOrderView) -> NewEvent | None:
    increment = broker.filled_qty - known.filled_qty
    completes = broker.status is BrokerStatus.FILLED or broker.filled_qty >= known.qty
    if broker.filled_qty == 0 or increment < 0:
        return None  # nothing filled yet, or a stale snapshot: never go backwards
    if increment == 0 and broker.status is not BrokerStatus.FILLED:
        return None  # a repeated snapshot: this quantity is counted already
    assert broker.filled_avg_price is not None  # guaranteed by BrokerOrderView once filled_qty > 0
    new_notional = broker.filled_qty * broker.filled_avg_price
    fill_notional = new_notional - known.filled_notional
    if increment > 0 and fill_notional <= 0:
        # Inconsistent figures from the broker (an average that fell below what was already paid):
        # price the increment at the broker's average rather than at a nonsense negative price.
        fill_notional = increment * broker.filled_avg_price
    fill_price = fill_notional / increment if increment > 0 else broker.filled_avg_price
    event_type = OrderFilled if completes else OrderPartiallyFilled
    data = event_type(
        **_identity(known),
        fill_qty=increment,
        fill_price=fill_price,
        fill_notional=fill_notional,
        cumulative_qty=broker.filled_qty,
        avg_price=broker.filled_avg_price,
        filled_at=broker.updated_at,
    )
    if increment == 0:
        # The broker confirms the completion of quantities already counted as partial fills: the fill
        # id of this cumulative quantity is taken by that partial fill, so this one has its own cause.
        return new_event(data, known.client_order_id, "completed")
    event_id = fill_event_id(known.client_order_id, broker.filled_qty)
    return NewEvent(type=event_type.__name__, data=data, event_id=event_id)


def fill_event_id(client_order_id: str, cumulative_qty: Decimal) -> uuid.UUID:
    """The id of the fill that brings an order to ``cumulative_qty``: the same whether the fill is a
    partial or the final one, and whoever reports it (poll or stream), so it is stored at most once.
    ``10``, ``10.0`` and ``1E+1`` are one quantity, hence the normalized text."""
    return event_id_for("OrderFill", client_order_id, canonical_decimal(cumulative_qty))


def _terminal_event(known: OrderState, broker: BrokerOrderView, base: dict[str, object]) -> NewEvent | None:
    filled = max(known.filled_qty, broker.filled_qty)
    match broker.status:
        case BrokerStatus.CANCELED:
            return new_event(OrderCanceled(**base, filled_qty=filled, at=broker.updated_at), known.client_order_id)
        case BrokerStatus.EXPIRED:
            return new_event(OrderExpired(**base, filled_qty=filled, at=broker.updated_at), known.client_order_id)
        case BrokerStatus.REJECTED:
            reason = broker.reason or "rejected by the broker"
            return rejected(known, reason, definite=True, at=broker.updated_at)
    return None


def _identity(known: OrderState) -> dict[str, object]:
    return {
        "portfolio_id": known.portfolio_id,
        "client_order_id": known.client_order_id,
        "symbol": known.symbol,
        "side": known.side,
    }


# ------------------------------------------------------------------------------------------ submission


def submitted(known: OrderState, broker_order_id: str, at: datetime) -> NewEvent:
    """The broker accepted our submit."""
    return new_event(
        OrderSubmitted(**_identity(known), broker_order_id=broker_order_id, submitted_at=at), known.client_order_id
    )


def submit_unknown(known: OrderState, reason: str, at: datetime) -> NewEvent:
    """The submit had no definite answer: resolve later by client order id, never resubmit."""
    return new_event(OrderSubmitUnknown(**_identity(known), reason=reason, at=at), known.client_order_id)


def rejected(known: OrderState, reason: str, *, definite: bool, at: datetime) -> NewEvent:
    return new_event(OrderRejected(**_identity(known), reason=reason, definite=definite, at=at), known.client_order_id)


def too_late_to_send(
    known: OrderState, now: datetime, max_age: timedelta, session_close: datetime | None = None
) -> NewEvent | None:
    """The refusal of a request that reaches submission too late: more than ``max_age`` after its tick, or
    after the close of the session its tick was in (``session_close``; the broker would queue a day order
    for the next open). It was decided on the prices of its tick (the orders service was down, or behind),
    so it is not sent now, and the strategy decides again at its next tick. None while it is in time, or
    once it is no longer only requested. Not definite: only we concluded it; the broker never saw it."""
    require_aware(now, "now")
    if known.status is not OrderStatus.REQUESTED:
        return None
    age = now - known.requested_at
    if age > max_age:
        reason = (
            f"not sent: it reached submission {age.total_seconds():.0f} s after its tick"
            f" (at most {max_age.total_seconds():.0f} s; OPENBELL_ORDER_MAX_AGE_SECONDS)"
        )
    elif session_close is not None and known.requested_at < session_close <= now:
        reason = f"not sent: its session closed at {session_close:%Y-%m-%d %H:%M} UTC before it reached submission"
    else:
        return None
    return rejected(known, reason, definite=False, at=now)


def resolve_unknown(
    known: OrderState,
    found: BrokerOrderView | None,
    now: datetime,
    grace: timedelta = DEFAULT_UNKNOWN_GRACE,
) -> list[NewEvent]:
    """Resolve an order whose submit was ambiguous, from a lookup by client order id at ``now`` (the
    tick's time). Found: the broker has it, bring us up to its state. Not found: still unknown within
    ``grace`` of the ambiguous submit; after that, it was never received (a non-definite rejection)."""
    require_aware(now, "now")
    if known.status is not OrderStatus.UNKNOWN:
        return []
    if found is not None:
        return apply_broker_order(known, found)
    since = known.unknown_since or known.requested_at
    if now - since < grace:
        return []
    return [
        rejected(
            known,
            f"never received by the broker: not found by client order id {grace} after the ambiguous submit",
            definite=False,
            at=now,
        )
    ]
