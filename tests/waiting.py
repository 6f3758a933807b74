"""Waiting in tests for something to happen: poll a check until it holds, never sleep a guessed time.

``until`` (async) and ``until_sync`` (for tests driving subprocesses from plain functions) call ``check``
every ``interval`` seconds until it returns a truthy value, and return that value. After ``timeout``
seconds they fail with an AssertionError naming ``what`` was awaited and the last value seen (or the last
error tolerated), so a failure says what did not happen instead of "condition not reached".
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

INTERVAL = 0.05  # seconds between two checks


def _failure(what: str, timeout: float, value: object, error: Exception | None) -> AssertionError:
    last = f"last error: {error!r}" if error is not None else f"last value: {value!r}"
    return AssertionError(f"timed out after {timeout:g}s waiting for {what} ({last})")


async def until(
    check: Callable[[], T | Awaitable[T]],
    timeout: float = 15.0,
    what: str = "the condition",
    *,
    interval: float = INTERVAL,
    tolerate: Callable[[Exception], bool] | None = None,
) -> T:
    """Call ``check`` (a plain or an async function) until it returns a truthy value, and return it.

    ``tolerate``: errors of ``check`` that mean "not yet" (a server restarting), checked again later;
    any other error fails at once."""
    deadline = time.monotonic() + timeout
    while True:
        value: T | None = None
        error: Exception | None = None
        try:
            result = check()
            value = await result if inspect.isawaitable(result) else result  # type: ignore[assignment]
        except Exception as exc:
            if tolerate is None or not tolerate(exc):
                raise
            error = exc
        if error is None and value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise _failure(what, timeout, value, error)
        await asyncio.sleep(interval)


def until_sync(
    check: Callable[[], T], timeout: float = 15.0, what: str = "the condition", *, interval: float = INTERVAL
) -> T:
    """``until`` for code without an event loop (a test watching a subprocess)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise _failure(what, timeout, value, None)
        time.sleep(interval)
