"""A service whose background loop dies of a bug once started (tests/faults/test_loops.py)."""

from __future__ import annotations

import asyncio

from services.core.host import ServiceContext


async def setup(ctx: ServiceContext) -> None:
    async def loop() -> None:
        await asyncio.sleep(0.2)
        raise ValueError("a bug in the loop")

    ctx.background(loop(), "dying-loop")
