"""The relay as a service: one active relay per database and prefix (the others stand by)."""

from __future__ import annotations

from nats.aio.msg import Msg

from eventstore.relay import Relay
from services.core.host import ServiceContext


async def setup(ctx: ServiceContext) -> None:
    relay = Relay(ctx.rt.store, ctx.rt.nc, ctx.rt.subjects)

    async def on_appended(_msg: Msg) -> None:
        relay.wake()

    # Appends in other processes announce themselves on core NATS: wake at once instead of polling.
    await ctx.rt.nc.subscribe(ctx.rt.appended_subject, cb=on_appended)
    ctx.background(relay.run(ctx.stop), "relay")
