"""The relay as a service: one active relay per database and prefix (the others stand by)."""

from __future__ import annotations

from nats.aio.msg import Msg

from eventstore.relay import Relay
from services.core import event_feeds, metrics
from services.core.host import ServiceContext, ServiceDefinition
from services.core.runtime import parse_append_notice

# Published as soon as they are appended in the relay's process (see eventstore.relay): an order request
# is the first event of its own stream, and the orders service submits it a read sooner.
EARLY_TYPES = ("OrderRequested",)


async def setup(ctx: ServiceContext) -> None:
    # The event log is published as the relay, the one NATS role allowed to (README, "Security").
    nc = await ctx.rt.connect_as("relay", "openbell-relay")
    relay = Relay(ctx.rt.store, nc, ctx.rt.subjects, early_types=EARLY_TYPES)

    async def on_appended(msg: Msg) -> None:
        instance, position = parse_append_notice(msg.data)
        if instance == ctx.rt.instance:
            return  # this process's own append: the relay heard of it directly
        if position is None:
            relay.wake()
        else:
            relay.notice(position)

    # Appends in other processes announce themselves on core NATS: wake at once instead of polling.
    await nc.subscribe(ctx.rt.appended_subject, cb=on_appended)
    metrics.watch_relay(relay)

    async def run() -> None:
        try:
            await relay.run(ctx.stop)
        finally:
            metrics.unwatch_relay(relay)

    ctx.background(run(), "relay")
    # Halts, order lifecycle, risk refusals and discrepancies as feeds (from the events the relay publishes).
    await event_feeds.setup(ctx)


SERVICE = ServiceDefinition(name="relay", setup=setup, nats_role="relay")
