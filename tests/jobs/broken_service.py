"""A service whose setup starts a background loop, then fails (tests/jobs/test_host.py)."""

from __future__ import annotations

import asyncio

from services.core.host import ServiceContext

stopped: list[str] = []


async def setup(ctx: ServiceContext) -> None:
    async def loop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.append("loop")

    ctx.background(loop(), "broken-loop")
    await asyncio.sleep(0)
    raise RuntimeError("setup failed")
