"""``openbell serve web``: the dashboard and HTTP API (``OPENBELL_WEB_ADDRESS``:``OPENBELL_WEB_PORT``)."""

from __future__ import annotations

from services.core.host import ServiceContext, ServiceDefinition
from services.web.server import WebServer


async def setup(ctx: ServiceContext) -> None:
    server = WebServer(ctx.rt)
    await server.start()  # binds now: a port in use stops the command before anything else runs
    ctx.background(server.run_until(ctx.stop), name="web")


SERVICE = ServiceDefinition(name="web", setup=setup, nats_role="web")
