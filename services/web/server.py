"""Serving the web app with uvicorn inside an openbell process (its event loop, its runtime)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn

from services.core.runtime import Runtime
from services.core.settings import SettingsError
from services.web.app import create_app

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The openbell process owns SIGINT/SIGTERM (services/core/host.py); uvicorn must not take them.
        yield


def bind(address: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts: a port in use is one line (exit 2)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart rebinds at once
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise SettingsError(
            f"cannot serve the dashboard on {address}:{port} (OPENBELL_WEB_PORT): {exc.strerror or exc}"
        ) from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class WebServer:
    """The dashboard and API on ``address:port`` (port 0: a free one, see :attr:`port`)."""

    def __init__(self, rt: Runtime, address: str | None = None, port: int | None = None) -> None:
        self.rt = rt
        self.address = address if address is not None else rt.settings.web_address
        self.requested_port = port if port is not None else rt.settings.web_port
        self.port = 0
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        self._sock = bind(self.address, self.requested_port)
        self.port = self._sock.getsockname()[1]
        self.requested_port = self.port  # a restart listens where the pages reconnect to
        config = uvicorn.Config(
            # lifespan off: stop() ends the live streams itself, and a Ctrl-C does not print its cancellation.
            create_app(self.rt), log_level="warning", access_log=False, lifespan="off",
            timeout_graceful_shutdown=2, ws="none",
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]), name="web")
        while not self._server.started:
            if self._task.done():
                await self._task  # raises what stopped it
                raise RuntimeError("the web server stopped while starting")
            await asyncio.sleep(0.01)
        log.info("dashboard on %s", self.url)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.config.app.state.stop.set()  # the live streams end first: nothing to wait for
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sock is not None:
            self._sock.close()
        self._server = self._task = self._sock = None

    async def run_until(self, stop: asyncio.Event) -> None:
        try:
            await stop.wait()
        finally:
            await asyncio.shield(self.stop())
