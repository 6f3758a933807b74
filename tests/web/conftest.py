"""A runtime on the test's servers and the web service on a free port (with an operator token)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.core.runtime import Runtime
from services.core.settings import load_settings
from services.stack import connect_runtime
from services.web.server import WebServer

OPERATOR_TOKEN = "test-operator-token-0123456789"


@pytest.fixture
async def rt(pg_dsn: str, nats_url: str, subject_prefix: str, nc: object) -> AsyncIterator[Runtime]:
    settings = load_settings(
        nats_url=nats_url, database_url=pg_dsn, subject_prefix=subject_prefix, web_token=OPERATOR_TOKEN,
        web_port=0,
    )
    async with connect_runtime(settings, name="test-web") as runtime:
        yield runtime


@pytest.fixture
async def web(rt: Runtime) -> AsyncIterator[WebServer]:
    server = WebServer(rt)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
