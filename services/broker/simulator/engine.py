"""Pure order-lifecycle rules shared by the simulator broker and the fake Alpaca server.

No I/O and no clock reads: every function takes the time it works at. An order goes
accepted -> new -> (partially_filled ->)* filled, or ends canceled / expired. Fills happen at fill
attempts every ``fill_latency`` after submission; each attempt fills the next of ``partial_fill_steps``
tranches if the order is marketable at that minute's simulated quote (buy at the ask, sell at the bid).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal

import msgspec

from services.broker.errors import OrderRejected
from services.broker.models import (
    Order,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
    TradeUpdateEvent,
    utc,
)
from services.broker.simulator.calendar import session_close_after
from services.broker.simulator.market import MarketSimulator, minute_index, minute_start

PRICE_QUANTUM = Decimal("0.0001")
_MAX_ATTEMPTS_PER_CALL = 50_000


@dataclass(frozen=True, slots=True)
class FillPolicy:
    fill_latency: timedelta = timedelta(seconds=2)
    partial_fill_steps: int = 1

    def __post_init__(self) -> None:
        if self.fill_latency <= timedelta(0):
            raise ValueError("fill_latency must be positive")
        if self.partial_fill_steps < 1:
            raise ValueError("partial_fill_steps must be >= 1")


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    event: TradeUpdateEvent
    timestamp: datetime
    order: Order  # the order as it stood right after this event
    qty: Decimal | None = None  # this fill's quantity
    price: Decimal | None = None  # this fill's price


@dataclass(frozen=True, slots=True)
class Progress:
    order: Order
    events: tuple[LifecycleEvent, ...]
    checked_until: datetime  # fill attempts up to here are decided; persist it with the order


def order_id_for(seed: int, client_order_id: str) -> str:
    """A deterministic order id: the same seed and client order id give the same id in every run."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"openbell-sim:{seed}:{client_order_id}"))


def new_order(request: OrderRequest, order_id: str, now: datetime) -> Order:
    now = utc(now)
    return Order(
        id=order_id,
        client_order_id=request.client_order_id,
        symbol=request.symbol,
        side=request.side,
        type=request.type,
        qty=request.qty,
        limit_price=request.limit_price,
        time_in_force=request.time_in_force,
        status=OrderStatus.ACCEPTED,
        filled_qty=Decimal(0),
        filled_avg_price=None,
        submitted_at=now,
        updated_at=now,
    )


def expiry_time(order: Order) -> datetime | None:
    """A day order expires at the close of the session it was submitted in (or the next one)."""
    if order.time_in_force is not TimeInForce.DAY:
        return None
    return session_close_after(order.submitted_at)


def check_submit(
    request: OrderRequest,
    *,
    market: MarketSimulator,
    cash: Decimal,
    position_qty: Decimal,
    open_orders: Sequence[Order],
    now: datetime,
) -> None:
    """Alpaca's definite refusals, as OrderRejected with its status and code. No shorting in the simulator."""
    if not market.knows(request.symbol):
        raise OrderRejected(f'asset "{request.symbol}" not found', status=422, code=40010001)
    if request.side is OrderSide.BUY:
        price = request.limit_price or market.quote(request.symbol, now).ask_price
        available = cash - reserved_buying_power(open_orders, market, now)
        if request.qty * price > available:
            raise OrderRejected("insufficient buying power", status=403, code=40310000)
    else:
        available_qty = position_qty - reserved_sell_qty(open_orders, request.symbol)
        if request.qty > available_qty:
            raise OrderRejected(
                f"insufficient qty available for order (requested: {request.qty}, available: {available_qty})",
                status=403,
                code=40310000,
            )


def cumulative_target(qty: Decimal, step: int, steps: int) -> Decimal:
    """Filled quantity after ``step`` of ``steps`` tranches, in the order quantity's precision."""
    if step >= steps:
        return qty
    exponent = qty.as_tuple().exponent
    quantum = Decimal(1).scaleb(exponent if isinstance(exponent, int) and exponent < 0 else 0)
    return (qty * step / steps).quantize(quantum, ROUND_DOWN)


def fill_price(order: Order, market: MarketSimulator, moment: datetime) -> Decimal | None:
    """The price this order fills at during ``moment``'s minute, or None if not marketable."""
    quote = market.quote(order.symbol, moment)
    if order.side is OrderSide.BUY:
        price = quote.ask_price
        if order.type is OrderType.LIMIT and order.limit_price is not None and price > order.limit_price:
            return None
    else:
        price = quote.bid_price
        if order.type is OrderType.LIMIT and order.limit_price is not None and price < order.limit_price:
            return None
    return price


def progress(
    order: Order, market: MarketSimulator, policy: FillPolicy, checked_until: datetime, now: datetime
) -> Progress:
    """Everything that happens to ``order`` in (checked_until, now]."""
    now = utc(now)
    events: list[LifecycleEvent] = []
    if order.status in (OrderStatus.ACCEPTED, OrderStatus.PENDING_NEW):
        order = msgspec.structs.replace(order, status=OrderStatus.NEW, updated_at=order.submitted_at)
        events.append(LifecycleEvent(TradeUpdateEvent.NEW, order.submitted_at, order))
    if not order.is_open:
        return Progress(order, tuple(events), max(checked_until, now))

    expires = expiry_time(order)
    horizon = min(now, expires) if expires is not None else now
    latency = policy.fill_latency
    steps = policy.partial_fill_steps
    start = max(checked_until, order.submitted_at)
    attempt = (start - order.submitted_at) // latency + 1
    moment = order.submitted_at + attempt * latency
    attempts = 0
    while moment <= horizon and order.filled_qty < order.qty and attempts < _MAX_ATTEMPTS_PER_CALL:
        attempts += 1
        price = fill_price(order, market, moment)
        if price is None:
            # The price is constant within a minute: skip to the first attempt of the next minute.
            next_minute = minute_start(minute_index(moment) + 1)
            attempt = -(-(next_minute - order.submitted_at) // latency)
            moment = order.submitted_at + max(attempt, 1) * latency
            continue
        done = next(s for s in range(steps + 1) if cumulative_target(order.qty, s, steps) >= order.filled_qty)
        target = next(
            cumulative_target(order.qty, s, steps)
            for s in range(done + 1, steps + 1)
            if cumulative_target(order.qty, s, steps) > order.filled_qty
        )
        order, event = _fill(order, target - order.filled_qty, price, moment)
        events.append(event)
        moment += latency
    checked = moment - latency if attempts >= _MAX_ATTEMPTS_PER_CALL else horizon
    if order.is_open and expires is not None and now >= expires:
        order = msgspec.structs.replace(order, status=OrderStatus.EXPIRED, expired_at=expires, updated_at=expires)
        events.append(LifecycleEvent(TradeUpdateEvent.EXPIRED, expires, order))
    return Progress(order, tuple(events), max(checked_until, checked))


def _fill(order: Order, qty: Decimal, price: Decimal, moment: datetime) -> tuple[Order, LifecycleEvent]:
    filled = order.filled_qty + qty
    previous_notional = (order.filled_avg_price or Decimal(0)) * order.filled_qty
    average = ((previous_notional + price * qty) / filled).quantize(PRICE_QUANTUM)
    complete = filled >= order.qty
    order = msgspec.structs.replace(
        order,
        filled_qty=filled,
        filled_avg_price=average,
        status=OrderStatus.FILLED if complete else OrderStatus.PARTIALLY_FILLED,
        filled_at=moment if complete else order.filled_at,
        updated_at=moment,
    )
    event = TradeUpdateEvent.FILL if complete else TradeUpdateEvent.PARTIAL_FILL
    return order, LifecycleEvent(event, moment, order, qty=qty, price=price)


def cancel(order: Order, now: datetime) -> tuple[Order, LifecycleEvent] | None:
    """Cancel an open order at ``now``; None when it is no longer cancelable."""
    if not order.is_open:
        return None
    now = utc(now)
    order = msgspec.structs.replace(order, status=OrderStatus.CANCELED, canceled_at=now, updated_at=now)
    return order, LifecycleEvent(TradeUpdateEvent.CANCELED, now, order)


def apply_fill(
    position_qty: Decimal, avg_entry_price: Decimal, side: OrderSide, qty: Decimal, price: Decimal
) -> tuple[Decimal, Decimal, Decimal]:
    """(new position qty, new average entry price, cash delta) after one fill."""
    signed = qty if side is OrderSide.BUY else -qty
    new_qty = position_qty + signed
    cash_delta = -signed * price
    if new_qty == 0:
        return new_qty, Decimal(0), cash_delta
    if position_qty == 0 or (position_qty > 0) != (new_qty > 0):
        return new_qty, price, cash_delta  # opened, or flipped through zero
    if (position_qty > 0) == (signed > 0):
        average = ((avg_entry_price * abs(position_qty) + price * qty) / abs(new_qty)).quantize(PRICE_QUANTUM)
        return new_qty, average, cash_delta
    return new_qty, avg_entry_price, cash_delta  # reduced: the entry price of what is left is unchanged


def reserved_buying_power(open_orders: Iterable[Order], market: MarketSimulator, now: datetime) -> Decimal:
    """Cash held back by open buy orders (their unfilled quantity at the limit, or at the current ask)."""
    total = Decimal(0)
    for order in open_orders:
        if order.side is OrderSide.BUY and order.is_open:
            price = order.limit_price or market.quote(order.symbol, now).ask_price
            total += (order.qty - order.filled_qty) * price
    return total


def reserved_sell_qty(open_orders: Iterable[Order], symbol: str) -> Decimal:
    return sum(
        (o.qty - o.filled_qty for o in open_orders if o.side is OrderSide.SELL and o.symbol == symbol and o.is_open),
        Decimal(0),
    )
