"""Keeps every read model caught up with the log (services also catch up before they read)."""

from __future__ import annotations

from services.core.host import ServiceContext, ServiceDefinition


async def setup(ctx: ServiceContext) -> None:
    ctx.background(ctx.projections.run(ctx.stop), "projections")


SERVICE = ServiceDefinition(name="projections", setup=setup)
