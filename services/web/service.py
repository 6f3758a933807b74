"""``openbell serve web``: the dashboard and HTTP API (``OPENBELL_WEB_ADDRESS``:``OPENBELL_WEB_PORT``)."""

from __future__ import annotations

from services.core.host import ServiceContext, ServiceDefinition


async def setup(ctx: ServiceContext) -> None:
    # Loaded here, not with the list of services: every command imports that list, few serve the web app.
    from services.web.server import WebServer

    server = WebServer(ctx.rt)
    await server.start()  # binds now: a port in use stops the command before anything else runs
    ctx.background(server.run_until(ctx.stop), name="web")


SERVICE = ServiceDefinition(name="web", setup=setup, nats_role="web")
