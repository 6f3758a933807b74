"""One request budget for the whole process, driven by Alpaca's ``X-Ratelimit-*`` response headers.

Alpaca allows 200 requests per minute per account. Every caller takes a token before a request, at its
priority: order submission > order status > position sync > quotes. Lower priorities keep a reserve free
for higher ones (they wait when the budget runs low) and, among waiters, the highest priority goes first.
After a 429 everyone waits until the reset time the server gave, and then the budget is full again: a
later response of an older window (a request answered slowly) cannot push that refill back.

The budget counts what it sends, numbering each request. A response's ``X-Ratelimit-Remaining`` was true
when the server counted that request, not for the requests sent since (a slow response arrives after later
ones, and concurrent requests are counted in any order): within a window it may lower the budget (other
clients of the account spend it too) but never raise it. A response of a newer window (a later reset time)
refills the budget to what it says, less the requests still unanswered. The request a response answers is known from
the thread that sent it (:meth:`RateLimiter.sending`).

The state is guarded by a threading lock, not asyncio primitives: the response hook that feeds it runs in
the worker threads where alpaca-py's blocking calls execute, and callers may live on any event loop.
Rate limits are about real time, so this reads the wall clock (injectable for tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime

DEFAULT_LIMIT_PER_MINUTE = 200
WINDOW_SECONDS = 60.0


class Priority(enum.IntEnum):
    """Lower value = more important."""

    ORDER_SUBMIT = 0
    ORDER_STATUS = 1
    POSITION_SYNC = 2
    QUOTES = 3


# Fraction of the budget each priority must leave untouched for the ones above it.
RESERVE_FRACTION: dict[Priority, float] = {
    Priority.ORDER_SUBMIT: 0.0,
    Priority.ORDER_STATUS: 0.05,
    Priority.POSITION_SYNC: 0.10,
    Priority.QUOTES: 0.20,
}


class RateLimiter:
    def __init__(
        self,
        limit_per_minute: int = DEFAULT_LIMIT_PER_MINUTE,
        clock: Callable[[], float] = time.time,
        poll_seconds: float = 0.01,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._poll = poll_seconds
        self.limit = limit_per_minute
        self.remaining = limit_per_minute
        self.reset_at = clock() + WINDOW_SECONDS  # epoch seconds
        self.blocked_until = 0.0  # epoch seconds; set by a 429
        self._refill_when_unblocked = False  # a 429's reset is when the server's budget is whole again
        self.sent = 0  # requests granted so far: the number of the latest one
        self._unanswered: set[int] = set()  # numbers of the requests granted and not answered yet
        self._server_reset: float | None = None  # the latest window end a response gave
        self._waiting: list[tuple[int, int]] = []
        self._tickets = itertools.count()
        self.granted: dict[Priority, int] = dict.fromkeys(Priority, 0)

    def _refill(self, now: float) -> None:
        if self._refill_when_unblocked and now >= self.blocked_until:
            self._refill_when_unblocked = False
            self.remaining = max(0, self.limit - len(self._unanswered))
            self.reset_at = max(self.reset_at, now + WINDOW_SECONDS)
        elif now >= self.reset_at:
            self.remaining = self.limit
            self.reset_at = now + WINDOW_SECONDS

    def _reserve(self, priority: Priority) -> int:
        return int(self.limit * RESERVE_FRACTION[priority])

    def try_acquire(self, priority: Priority, ticket: tuple[int, int] | None = None) -> float:
        """Take a token now and return 0, or return how long to wait before asking again."""
        return self._try_acquire(priority, ticket)[0]

    def _try_acquire(self, priority: Priority, ticket: tuple[int, int] | None = None) -> tuple[float, int]:
        """(0, the request's number) when granted, else (how long to wait, 0)."""
        wait = self._try(priority, ticket)
        return (wait, self.sent) if wait == 0.0 else (wait, 0)

    def _try(self, priority: Priority, ticket: tuple[int, int] | None) -> float:
        with self._lock:
            now = self._clock()
            self._refill(now)
            if now < self.blocked_until:
                return self.blocked_until - now
            if ticket is not None and self._waiting and self._waiting[0] != ticket:
                return self._poll  # someone more important (or earlier) is first in line
            if self.remaining > self._reserve(priority):
                self.remaining -= 1
                self.sent += 1
                self._unanswered.add(self.sent)
                self.granted[priority] += 1
                if ticket is not None:
                    heapq.heappop(self._waiting)
                return 0.0
            return max(self.reset_at - now, self._poll)

    async def acquire(self, priority: Priority) -> int:
        """Wait for a token; returns the request's number (pass it to :meth:`sending`)."""
        ticket = (int(priority), next(self._tickets))
        with self._lock:
            heapq.heappush(self._waiting, ticket)
        try:
            while True:
                wait, number = self._try_acquire(priority, ticket)
                if wait == 0.0:
                    return number
                # Poll in short steps: a higher-priority waiter or a header update may change the picture.
                await asyncio.sleep(min(wait, 0.25))
        except BaseException:
            with self._lock:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                    heapq.heapify(self._waiting)
            raise

    @contextlib.contextmanager
    def sending(self, number: int) -> Iterator[None]:
        """The requests made in this thread inside the block are request ``number`` (the response hook,
        called in the same thread, then knows which request its headers describe)."""
        _sending.number = number
        try:
            yield
        finally:
            _sending.number = None
            with self._lock:
                self._unanswered.discard(number)  # answered, or never will be (timeout, reset)

    def update_from_headers(self, headers: Mapping[str, str], status: int) -> None:
        """Feed one response's headers (called from the requests response hook)."""
        limit = _int(headers.get("X-Ratelimit-Limit"))
        remaining = _int(headers.get("X-Ratelimit-Remaining"))
        reset = _int(headers.get("X-Ratelimit-Reset"))
        number = getattr(_sending, "number", None)
        with self._lock:
            now = self._clock()
            if limit is not None and limit > 0:
                self.limit = limit
            # A later window end than any response gave before: the server's window rolled over.
            newer_window = (
                reset is not None and self._server_reset is not None and reset > self._server_reset + 0.5
            )
            if reset is not None:
                self._server_reset = max(self._server_reset or 0.0, float(reset))
            self._unanswered.discard(number)  # type: ignore[arg-type]
            if remaining is not None:
                if newer_window:
                    self.remaining = max(0, remaining - len(self._unanswered))
                else:
                    # Within a window a response may lower the budget (other clients of the account spend
                    # it too), never raise it: its count was true when the server counted that request,
                    # and concurrent requests are counted in any order, so even the answer to the latest
                    # request sent may have been counted before an earlier one.
                    self.remaining = max(0, min(self.remaining, remaining))
            if reset is not None and reset > now:
                self.reset_at = float(reset)
            if status == 429:
                self.remaining = 0
                # Without a usable reset header, back off one second rather than hammering.
                self.blocked_until = float(reset) if reset is not None and reset > now else now + 1.0
                self._refill_when_unblocked = True

    def reset_time(self) -> datetime:
        with self._lock:
            moment = max(self.blocked_until, self.reset_at)
        return datetime.fromtimestamp(moment, UTC)


# The number of the request the current thread is sending (see RateLimiter.sending).
_sending = threading.local()


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


_shared: RateLimiter | None = None
_shared_lock = threading.Lock()


def shared_rate_limiter(limit_per_minute: int = DEFAULT_LIMIT_PER_MINUTE) -> RateLimiter:
    """The process-wide budget (Alpaca counts requests per account, not per client object)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = RateLimiter(limit_per_minute)
        return _shared
