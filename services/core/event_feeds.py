"""Feeds derived from stored events: halts and resumes, the order lifecycle, risk refusals, discrepancies.

Run with the relay (``openbell serve relay``): a durable consumer per event subject turns each event into
its feed body (:func:`feed_of`, pure) and publishes it through JetStream with ``Nats-Msg-Id`` =
``feed:<event id>``, so a redelivered event or a second relay process publishes nothing twice."""

from __future__ import annotations

from typing import Any

import msgspec
from nats.js.api import DeliverPolicy

from eventstore.codec import EventCodecError
from eventstore.relay import EventEnvelope
from services.core import feeds
from services.core.events import registry
from services.core.host import ServiceContext
from services.core.jobs.consumer import Delivery, Reject, subscribe_durable
from services.model.events.orders import (
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
    OrderSubmitUnknown,
)
from services.model.events.positions import PositionDiscrepancyDetected
from services.model.events.strategy import (
    OrderRejectedByRisk,
    OrderRequested,
    PortfolioHalted,
    PortfolioResumed,
    TradingHalted,
    TradingResumed,
)

SERVICE = "event_feeds"

# (category of the stream, event type) the feeds come from.
SOURCES: tuple[tuple[str, str], ...] = (
    ("order", ">"),
    ("evaluation", "OrderRejectedByRisk"),
    ("portfolio", "PortfolioHalted"),
    ("portfolio", "PortfolioResumed"),
    ("trading", ">"),
    ("discrepancy", "PositionDiscrepancyDetected"),
)

_envelope_decoder = msgspec.json.Decoder(EventEnvelope)


def feed_of(event: Any) -> tuple[str, feeds.Feed] | None:
    """(subject key, feed body) of a decoded domain event; None for an event with no feed."""
    match event:
        case TradingHalted() | TradingResumed():
            halted = isinstance(event, TradingHalted)
            return "all", feeds.HaltFeed(at=feeds.utc(event.at), scope="all", halted=halted, reason=event.reason)
        case PortfolioHalted():
            return event.portfolio_id, feeds.HaltFeed(
                at=feeds.utc(event.at), scope=event.portfolio_id, halted=True, reason=event.reason, rule=event.rule
            )
        case PortfolioResumed():
            return event.portfolio_id, feeds.HaltFeed(
                at=feeds.utc(event.at), scope=event.portfolio_id, halted=False, reason=event.reason
            )
        case OrderRejectedByRisk():
            return event.portfolio_id, feeds.RiskFeed(
                at=feeds.utc(event.at), portfolio_id=event.portfolio_id, client_order_id=event.client_order_id,
                tick_id=event.tick_id, strategy=event.strategy, symbol=event.symbol, side=event.side.value,
                qty=feeds.quantity(event.qty), rule=event.rule, detail=event.detail,
            )
        case PositionDiscrepancyDetected():
            return feeds.feed_key(event.symbol), feeds.DiscrepancyFeed(
                at=feeds.utc(event.at), tick_id=event.tick_id, symbol=event.symbol, discrepancy=event.kind,
                ours_qty=feeds.quantity(event.ours_qty), broker_qty=feeds.quantity(event.broker_qty),
                policy=event.policy,
            )
    return _order_feed(event)


def _order_feed(event: Any) -> tuple[str, feeds.Feed] | None:
    common: dict[str, Any]
    match event:
        case OrderRequested():
            common = {"at": event.at, "qty": feeds.quantity(event.qty)}
        case OrderSubmitted():
            common = {"at": event.submitted_at, "broker_order_id": event.broker_order_id}
        case OrderSubmitUnknown() | OrderRejected():
            common = {"at": event.at, "reason": event.reason}
        case OrderPartiallyFilled() | OrderFilled():
            common = {
                "at": event.filled_at, "filled_qty": feeds.quantity(event.cumulative_qty),
                "fill_price": feeds.price(event.fill_price),
            }
        case OrderCanceled() | OrderExpired():
            common = {"at": event.at, "filled_qty": feeds.quantity(event.filled_qty)}
        case _:
            return None
    common["at"] = feeds.utc(common["at"])
    return event.portfolio_id, feeds.OrderFeed(
        event=type(event).__name__, portfolio_id=event.portfolio_id, client_order_id=event.client_order_id,
        symbol=event.symbol, side=event.side.value, **common,
    )


async def setup(ctx: ServiceContext) -> None:
    subjects = ctx.rt.subjects

    async def on_event(delivery: Delivery) -> None:
        try:
            envelope = _envelope_decoder.decode(delivery.data)
        except msgspec.DecodeError as exc:
            raise Reject(f"malformed event envelope: {exc}") from None
        if envelope.type not in registry:
            return  # an event type this version does not know: no feed for it
        try:
            event = registry.decode_data(envelope.type, bytes(envelope.data), position=envelope.global_position)
        except (EventCodecError, ValueError) as exc:
            raise Reject(f"invalid {envelope.type}: {exc}") from None
        found = feed_of(event)
        if found is None:
            return
        key, body = found
        await ctx.rt.js.publish(
            subjects.feed(feeds.kind_of(type(body)), key), feeds.encode(body),
            stream=subjects.feeds_stream, headers={"Nats-Msg-Id": f"feed:{envelope.event_id}"},
        )

    for category, event_type in SOURCES:
        subject = f"{subjects.prefix}.event.{category}.{event_type}"
        subscribe_durable(
            ctx.consumers, subjects=subjects, service=SERVICE, subject=subject, stream=subjects.events_stream,
            handler=on_event, durable=f"{SERVICE}_{category}_{'all' if event_type == '>' else event_type}",
            batch_size=16,
            # From when feeds began: a new deployment does not replay its history onto the feeds.
            deliver_policy=DeliverPolicy.NEW,
        )
