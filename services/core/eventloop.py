"""The event loop openbell runs on: uvloop where it is available, asyncio's own elsewhere.

Every service of a process shares one loop, and on the path from a tick to an order most of the time goes
to the loop's own machinery (tasks, futures, socket callbacks): uvloop does that work in C. The benchmark
in bench/README.md records the difference. The tests run on the same loop as the services.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

try:
    import uvloop
except ImportError:  # not built for every platform (Windows): asyncio's loop works the same, slower
    uvloop = None  # type: ignore[assignment]


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on openbell's event loop."""
    if uvloop is not None:
        return uvloop.run(main)
    return asyncio.run(main)


def new_loop() -> asyncio.AbstractEventLoop:
    """A new loop of that kind (for test runners that create loops themselves)."""
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


def name() -> str:
    return "uvloop" if uvloop is not None else "asyncio"
