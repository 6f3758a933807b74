"""openbell runs on uvloop where it is built (services/core/eventloop.py), and the tests on the same loop."""

from __future__ import annotations

import asyncio

from services.core import eventloop


async def test_services_and_tests_run_on_uvloop() -> None:
    import uvloop

    assert eventloop.name() == "uvloop"
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


def test_run_returns_the_coroutines_result() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert eventloop.run(answer()) == 42
