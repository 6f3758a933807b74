"""Compatibility between the pinned libraries, applied once when the service host is imported.

nats-py (2.16) raises a bare ``asyncio.TimeoutError`` from ``PullSubscription.fetch`` when a batch fetch
expires with nothing to deliver, while FastStream's pull loop (0.7) only expects nats-py's own
``nats.errors.TimeoutError`` there: every idle second, the consumer task would crash and be restarted by
FastStream's supervisor with an error logged. An empty fetch is not an error: re-raise it as the nats-py
error FastStream handles. (``nats.errors.TimeoutError`` is a subclass of ``asyncio.TimeoutError``, so any
other caller sees no difference.)
"""

from __future__ import annotations

import functools
from typing import Any

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.client import JetStreamContext

_PullSubscription = JetStreamContext.PullSubscription


def _patch_fetch() -> None:
    original = _PullSubscription.fetch
    if getattr(original, "_openbell_compat", False):
        return

    @functools.wraps(original)
    async def fetch(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await original(self, *args, **kwargs)
        except NatsTimeoutError:
            raise
        except TimeoutError:
            raise NatsTimeoutError from None

    fetch._openbell_compat = True  # type: ignore[attr-defined]
    _PullSubscription.fetch = fetch  # type: ignore[method-assign]


_patch_fetch()
