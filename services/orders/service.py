"""The orders service: submission of requested orders, the order_status_check job, the fill stream.

Every order lives in ``order-<client_order_id>``: OrderRequested (appended by the strategy service), then
what the broker said. Each step folds the stream, decides with the pure rules of ``lifecycle`` and appends
with the folded version, so polling, the trade_updates stream, redeliveries and several workers never
count a fill twice or skip one.

Submission never sends an order twice: the broker sees our deterministic client order id; a submit with
no definite answer is recorded as OrderSubmitUnknown and resolved later by a lookup by that id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from eventstore import DuplicateEventId, EventStore, NewEvent, RecordedEvent, WrongExpectedVersion
from eventstore.faults import is_retryable
from eventstore.relay import envelope_decoder
from services.broker.errors import (
    AmbiguousSubmit,
    BrokerError,
    BrokerUnavailable,
    DuplicateClientOrderId,
    OrderRejected,
    RateLimited,
)
from services.broker.models import Order, OrderSide, TimeInForce
from services.broker.models import OrderRequest as BrokerOrderRequest
from services.broker.models import OrderType as BrokerOrderType
from services.broker.views import order_view
from services.clock import calendar
from services.core import metrics
from services.core.events import registry
from services.core.host import ServiceContext
from services.core.jobs.consumer import Delivery, Reject, Retry, subscribe_durable, subscribe_ticks
from services.core.jobs.runner import JobContext
from services.core.jobs.types import JobType
from services.model.events.strategy import OrderRequested
from services.model.streams import order_stream
from services.model.vocabulary import OPEN_ORDER_STATUSES, OrderType
from services.orders.lifecycle import (
    OrderState,
    OrderStatus,
    apply_broker_order,
    evolve,
    rejected,
    resolve_unknown,
    submit_unknown,
    too_late_to_send,
)

log = logging.getLogger(__name__)

SERVICE = "orders"


def fold_order(events: Sequence[RecordedEvent]) -> OrderState | None:
    state: OrderState | None = None
    for recorded in events:
        event = registry.decode(recorded)
        if isinstance(event, OrderRequested):
            state = OrderState.from_request(event)
        elif state is not None:
            state = evolve(state, event)
    return state


async def load_order(store: EventStore, client_order_id: str) -> tuple[OrderState | None, int]:
    events = [e async for e in store.read_stream(order_stream(client_order_id))]
    return fold_order(events), (events[-1].version if events else -1)


async def append_order_events(store: EventStore, client_order_id: str, events: list[NewEvent], version: int) -> bool:
    """Append with the folded version; False when another worker changed the order first (the next
    poll or stream update reconciles it again)."""
    if not events:
        return False
    try:
        await store.append(order_stream(client_order_id), events, version)
    except (WrongExpectedVersion, DuplicateEventId):
        # Another writer got there first (the submit and a status check can both record the broker's
        # OrderSubmitted, with the same event id): what it wrote stands; nothing is retried.
        return False
    return True


# ------------------------------------------------------------------------------------------ submission


def broker_request(state: OrderState) -> BrokerOrderRequest:
    return BrokerOrderRequest(
        client_order_id=state.client_order_id,
        symbol=state.symbol,
        side=OrderSide(state.side.value),
        qty=state.qty,
        type=BrokerOrderType.LIMIT if state.order_type is OrderType.LIMIT else BrokerOrderType.MARKET,
        limit_price=state.limit_price if state.order_type is OrderType.LIMIT else None,
        time_in_force=TimeInForce.DAY,
    )


async def submit_requested(ctx: ServiceContext, client_order_id: str, at: datetime) -> list[str]:
    """Submit the order if it is still only requested; returns the types of the events appended."""
    store = ctx.rt.store
    state, version = await load_order(store, client_order_id)
    if state is None:
        raise Reject(f"order {client_order_id} has no OrderRequested")
    if state.status is not OrderStatus.REQUESTED:
        return []  # submitted already (redelivery, or another worker)
    broker = await ctx.at(at)
    events: list[NewEvent]
    if broker.real_time:
        # A broker trading in real time: the simulator's market moves with the ticks' times instead, and
        # an offline run (a demo, a replay) must give the same orders however fast each service keeps up.
        now = broker.now
        session = calendar.session(calendar.exchange_date(state.requested_at))
        refusal = too_late_to_send(
            state, now, timedelta(seconds=ctx.settings.order_max_age_seconds), session and session.close
        )
        if refusal is not None:
            # A worker that died after the broker accepted it, before recording so, left it "requested":
            # only an order the broker does not have is refused.
            existing = await broker.get_order_by_client_id(client_order_id)
            events = apply_broker_order(state, order_view(existing)) if existing is not None else [refusal]
            if existing is None:
                log.warning("order %s not sent: %s", client_order_id, refusal.data.reason)
            return await _record_submission(store, client_order_id, events, version)
    try:
        order = await broker.submit_order(broker_request(state))
        events = apply_broker_order(state, order_view(order))
    except DuplicateClientOrderId as exc:
        # Sent before (a crash after the broker accepted it, before we recorded it): the existing order
        # is ours when it is the same order, found by our deterministic id.
        existing: Order | None = getattr(exc, "existing", None)
        if existing is None:
            existing = await broker.get_order_by_client_id(client_order_id)
        if existing is None:
            events = [submit_unknown(state, f"duplicate client order id but no order found: {exc.message}", at)]
        else:
            events = apply_broker_order(state, order_view(existing))
    except OrderRejected as exc:
        events = [rejected(state, exc.message, definite=True, at=at)]
    except RateLimited as exc:
        # A 429 is a definite "not now": nothing was created; try the same order again after the reset.
        delay = (
            1.0
            if exc.reset_at is None
            else max(0.1, (exc.reset_at - datetime.now(exc.reset_at.tzinfo)).total_seconds())
        )
        raise Retry(f"rate limited submitting {client_order_id}", delay=delay) from None
    except (AmbiguousSubmit, BrokerUnavailable) as exc:
        events = [submit_unknown(state, exc.message, at)]
    return await _record_submission(store, client_order_id, events, version)


async def _record_submission(
    store: EventStore, client_order_id: str, events: list[NewEvent], version: int
) -> list[str]:
    """Append what the submission found, count it (once: not when another worker recorded it first)."""
    if await append_order_events(store, client_order_id, events, version):
        for event in events:
            metrics.ORDER_SUBMISSIONS.labels(event.type).inc()
    return [e.type for e in events]


# -------------------------------------------------------------------------------------- status checks


async def reconcile_order(
    ctx: ServiceContext, state: OrderState, version: int, found: Order | None, now: datetime
) -> list[NewEvent]:
    """Bring one order up to the broker's view of it; returns the events appended."""
    if state.status.is_terminal:
        return []
    if state.status is OrderStatus.UNKNOWN:
        if found is None:
            found = await (await ctx.broker()).get_order_by_client_id(state.client_order_id)
        events = resolve_unknown(state, order_view(found) if found is not None else None, now)
    elif found is None:
        # Not in the listing: submission still pending (REQUESTED), or an order older than the window.
        # "Not found" is never a cancel: leave it for a later check.
        return []
    else:
        events = apply_broker_order(state, order_view(found))
    if await append_order_events(ctx.rt.store, state.client_order_id, events, version):
        return events
    return []


def listing_floor(oldest_open: datetime) -> datetime:
    """The ``after`` of order_status_check's listing: one microsecond (Alpaca's resolution) below the
    oldest open order, so that order is listed and a page ending on it is known to be the last."""
    return oldest_open - timedelta(microseconds=1)


async def open_orders(ctx: ServiceContext) -> list[tuple[str, datetime]]:
    """Our orders not yet final, oldest first: (client order id, requested at)."""
    await ctx.catch_up("trades")
    async with ctx.rt.store.pool.acquire() as con:
        rows = await con.fetch(
            "SELECT client_order_id, requested_at FROM trades WHERE status = ANY($1::text[]) ORDER BY requested_at",
            list(OPEN_ORDER_STATUSES),
        )
    return [(row[0], row[1]) for row in rows]


async def order_status_check(ctx: ServiceContext, job: JobContext) -> dict[str, int]:
    now = job.scheduled_at
    counters = {
        "orders_checked": 0,
        "orders_filled": 0,
        "orders_partially_filled": 0,
        "orders_canceled": 0,
        "orders_rejected": 0,
        "orders_expired": 0,
    }
    tracked = await open_orders(ctx)
    if not tracked:
        return counters
    pending = [coid for coid, _ in tracked]
    broker = await ctx.at(now)
    # One listing, paged by the broker layer (500 orders per call), never one call per order. Its floor
    # is just below our oldest open order (an order reaches the broker after it is requested): a floor a
    # whole second lower costs one more page call to prove the end when the pages are full.
    floor = listing_floor(tracked[0][1])
    listed = await broker.list_orders(status="all", after=floor)
    by_client_id = {order.client_order_id: order for order in listed}
    streams = [order_stream(coid) for coid in pending]
    recorded = await ctx.rt.store.read_events_of(streams)
    per_order: dict[str, list[RecordedEvent]] = {}
    for event in recorded:
        per_order.setdefault(event.stream_id, []).append(event)
    for coid in pending:
        events = per_order.get(order_stream(coid), [])
        state = fold_order(events)
        if state is None:
            continue
        counters["orders_checked"] += 1
        for event in await reconcile_order(ctx, state, events[-1].version, by_client_id.get(coid), now):
            key = {
                "OrderFilled": "orders_filled",
                "OrderPartiallyFilled": "orders_partially_filled",
                "OrderCanceled": "orders_canceled",
                "OrderRejected": "orders_rejected",
                "OrderExpired": "orders_expired",
            }.get(event.type)
            if key:
                counters[key] += 1
    return counters


async def follow_trade_updates(ctx: ServiceContext) -> None:
    """Apply the broker's fill stream as it comes; polling stays the backfill for anything missed."""
    delay = 1.0
    while not ctx.stop.is_set():
        try:
            broker = await ctx.broker()
            async for update in broker.trade_updates():
                state, version = await load_order(ctx.rt.store, update.order.client_order_id)
                if state is None:
                    continue  # not one of ours (another tool trading the same account)
                await reconcile_order(ctx, state, version, update.order, update.timestamp)
                delay = 1.0
        except Exception as exc:
            # The broker's stream, or our own servers (PostgreSQL, NATS) down: wait and follow again (polling
            # backfills what was missed). Anything else is a bug: the loop ends and the host exits with it.
            if not isinstance(exc, BrokerError) and not is_retryable(exc):
                raise
            log.warning("trade updates interrupted (%s); reconnecting in %.0fs", exc, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), delay)
        delay = min(delay * 2, 60.0)


# --------------------------------------------------------------------------------------------- setup


async def setup(ctx: ServiceContext) -> None:
    subjects = ctx.rt.subjects

    async def on_order_requested(delivery: Delivery) -> None:
        try:
            envelope = envelope_decoder.decode(delivery.data)
            request: Any = registry.decode_data(envelope.type, envelope.data)
        except Exception as exc:  # noqa: BLE001 - any undecodable message is dead-lettered with the reason
            raise Reject(f"malformed OrderRequested: {type(exc).__name__}: {exc}") from None
        if not isinstance(request, OrderRequested):
            raise Reject(f"expected OrderRequested, got {envelope.type}")
        await submit_requested(ctx, request.client_order_id, request.at)

    subscribe_durable(
        ctx.consumers,
        subjects=subjects,
        service=SERVICE,
        subject=subjects.event("order", "OrderRequested"),
        stream=subjects.events_stream,
        handler=on_order_requested,
        durable=f"{SERVICE}_submit",
        batch_size=16,
        ack_wait=ctx.settings.ack_wait_seconds,
    )
    subscribe_ticks(
        ctx.consumers,
        subjects=subjects,
        service=SERVICE,
        job_type=JobType.ORDER_STATUS_CHECK,
        runner=ctx.jobs,
        job=partial(order_status_check, ctx),
        ack_wait=ctx.settings.ack_wait_seconds,
    )
    if not ctx.virtual:
        # In virtual time the simulator's fills are settled by the ticks themselves; polling covers them.
        ctx.background(follow_trade_updates(ctx), "trade-updates")
