"""AlpacaBroker: the Broker protocol on alpaca-py (paper or live).

What this layer adds to alpaca-py (see DESIGN.md, "Alpaca pitfalls"):
- blocking calls run in a small thread pool, off the event loop;
- every HTTP request gets a (connect, read) timeout (alpaca-py sets none; client.py);
- alpaca-py's own retries are off (it retries POST on 429/504): 429s wait for the reset time and retry
  (a 429 was not processed), and an ambiguous order submit is resolved by looking the client order id up;
- one rate-limit budget per process, fed by the X-Ratelimit-* headers of every response (client.py);
- every exception becomes one of services.broker.errors, with HTTP status and Alpaca code, keys redacted
  (errors.py).

This module is the calls and their order (retries, ambiguity, paging, chunking); the settings, clients,
error mapping, model conversions and the trade stream are in the modules next to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed
from alpaca.data.requests import StockBarsRequest, StockLatestBarRequest, StockLatestQuoteRequest
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.requests import GetCalendarRequest, GetOrdersRequest

from services.broker.alpaca.client import build_clients
from services.broker.alpaca.errors import map_error
from services.broker.alpaca.mapping import (
    TIMEFRAMES,
    account_from_alpaca,
    bar_from_alpaca,
    calendar_day_from_alpaca,
    clock_from_alpaca,
    order_from_alpaca,
    order_request_to_alpaca,
    position_from_alpaca,
    quote_from_alpaca,
)
from services.broker.alpaca.settings import AlpacaSettings, check_settings
from services.broker.alpaca.trade_updates import stream_trade_updates
from services.broker.errors import (
    AmbiguousSubmit,
    BrokerError,
    BrokerUnavailable,
    DuplicateClientOrderId,
    NotFound,
    OrderRejected,
    RateLimited,
)
from services.broker.models import Account, Bar, CalendarDay, Clock, Order, OrderRequest, Position, Quote, TradeUpdate
from services.broker.protocol import ORDERS_PAGE_LIMIT, OrderQueryStatus, Timeframe
from services.broker.ratelimit import Priority, RateLimiter, shared_rate_limiter
from services.core.redaction import register_secrets

log = logging.getLogger(__name__)

# Symbols per latest-quotes/bars request: keeps the URL well under common proxy limits.
SYMBOLS_PER_REQUEST = 100
T = TypeVar("T")


def _chunks(items: Sequence[str], size: int) -> list[list[str]]:
    unique = list(dict.fromkeys(items))
    return [unique[i : i + size] for i in range(0, len(unique), size)]


class AlpacaBroker:
    """Implements services.broker.protocol.Broker on alpaca-py."""

    real_time = True

    def __init__(
        self,
        settings: AlpacaSettings,
        rate_limiter: RateLimiter | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """``clock``: the broker's current time (default: the wall clock; a fake server in simulated time
        passes its own)."""
        check_settings(settings)
        self.settings = settings
        self._clock = clock or (lambda: datetime.now(UTC))
        self._secrets = settings.secrets()
        register_secrets(*self._secrets)  # redacted from every error text and log record of this process
        self.rate_limiter = rate_limiter or shared_rate_limiter(settings.alpaca_rate_limit_per_minute)
        self._trading, self._data = build_clients(settings, self.rate_limiter)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.alpaca_threads, thread_name_prefix="alpaca"
        )
        self._feed = DataFeed(settings.alpaca_data_feed)

    @property
    def now(self) -> datetime:
        return self._clock()

    def __repr__(self) -> str:
        return f"AlpacaBroker(mode={self.settings.trading_mode}, base_url={self.settings.api_base_url or 'default'})"

    def time_moved(self) -> None:
        """Alpaca trades in real time: a tick's time moving forward changes nothing here."""

    def seen_at(self, moment: datetime) -> AlpacaBroker:
        """Alpaca trades in real time: every decision sees the same broker."""
        return self

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        for client in (self._trading, self._data):
            client._session.close()

    # -- the one path every REST call takes ----------------------------------------------------------
    async def _call(self, operation: str, priority: Priority, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        retries = self.settings.alpaca_max_rate_limit_retries
        while True:
            number = await self.rate_limiter.acquire(priority)

            def send(number: int = number) -> T:
                with self.rate_limiter.sending(number):  # its response's headers describe this request
                    return fn(*args)

            try:
                return await loop.run_in_executor(self._executor, send)
            except (APIError, requests.exceptions.RequestException, ValueError, TypeError, KeyError) as exc:
                # ValueError covers a non-JSON 2xx body and a response that does not fit alpaca-py's models.
                error = map_error(exc, operation=operation, secrets=self._secrets)
            if isinstance(error, RateLimited) and retries > 0:
                # A 429 was not processed, so even an order POST may be sent again (same client order id).
                retries -= 1
                log.warning("%s: rate limited, waiting until %s", operation, self.rate_limiter.reset_time())
                continue
            raise error

    # -- orders --------------------------------------------------------------------------------------
    async def submit_order(self, request: OrderRequest) -> Order:
        alpaca_request = order_request_to_alpaca(request)
        try:
            raw = await self._call("submit_order", Priority.ORDER_SUBMIT, self._trading.submit_order, alpaca_request)
            return order_from_alpaca(raw)
        except DuplicateClientOrderId as exc:
            # The order existed before this call: report it, do not pretend this call created it.
            existing = await self._lookup_after_ambiguity(request, exc)
            raise DuplicateClientOrderId(
                exc.message, client_order_id=request.client_order_id, existing=existing, code=exc.code
            ) from None
        except (OrderRejected, RateLimited):
            raise
        except BrokerError as exc:
            # Timeout, 5xx, dropped connection, unreadable body: the order may exist. Never resubmit.
            existing = await self._lookup_after_ambiguity(request, exc)
            if _same_order(existing, request):
                log.info("submit %s was ambiguous (%s); found the order by lookup", request.client_order_id, exc)
                return existing  # type: ignore[return-value]  # _same_order checked it is not None
            raise DuplicateClientOrderId(
                "an order with this client_order_id exists but differs from the request",
                client_order_id=request.client_order_id,
                existing=existing,
                code=exc.code,
            ) from None

    async def _lookup_after_ambiguity(self, request: OrderRequest, cause: BrokerError) -> Order | None:
        """Find the order by client order id; AmbiguousSubmit if it cannot be found (or looked up)."""
        last_error: BrokerError = cause
        for delay in self.settings.alpaca_submit_lookup_delays:
            if delay:
                await asyncio.sleep(delay)
            try:
                found = await self.get_order_by_client_id(request.client_order_id)
            except BrokerUnavailable as exc:
                last_error = exc
                continue
            if found is not None:
                return found
        raise AmbiguousSubmit(
            f"outcome of order {request.client_order_id} unknown after {cause.message!s}"
            f" (last lookup: {last_error.message!s})",
            client_order_id=request.client_order_id,
            status=cause.status,
            code=cause.code,
        )

    async def get_order(self, order_id: str) -> Order:
        raw = await self._call("get_order", Priority.ORDER_STATUS, self._trading.get_order_by_id, order_id)
        return order_from_alpaca(raw)

    async def get_order_by_client_id(self, client_order_id: str) -> Order | None:
        try:
            raw = await self._call(
                "get_order_by_client_id", Priority.ORDER_STATUS, self._trading.get_order_by_client_id, client_order_id
            )
        except NotFound:
            return None
        return order_from_alpaca(raw)

    async def list_orders(
        self, status: OrderQueryStatus = "open", after: datetime | None = None, until: datetime | None = None
    ) -> list[Order]:
        """Pages of 500, newest first, each page ending where the previous one stopped (``until`` = the
        last order's submitted_at, exclusive), deduplicated by id."""
        seen: dict[str, Order] = {}
        cursor = until
        while True:
            page_request = GetOrdersRequest(
                status=QueryOrderStatus(status),
                limit=ORDERS_PAGE_LIMIT,
                after=after,
                until=cursor,
                direction="desc",
                nested=False,
            )
            raw_page = await self._call("list_orders", Priority.ORDER_STATUS, self._trading.get_orders, page_request)
            page = [order_from_alpaca(raw) for raw in raw_page]
            fresh = [order for order in page if order.id not in seen]
            for order in fresh:
                seen[order.id] = order
            if not next_page_needed(page, len(fresh), after):
                break
            cursor = min(order.submitted_at for order in page)
        return sorted(seen.values(), key=lambda o: (o.submitted_at, o.id), reverse=True)

    async def cancel_order(self, order_id: str) -> None:
        await self._call("cancel_order", Priority.ORDER_STATUS, self._trading.cancel_order_by_id, order_id)

    # -- account -------------------------------------------------------------------------------------
    async def list_positions(self) -> list[Position]:
        raw = await self._call("list_positions", Priority.POSITION_SYNC, self._trading.get_all_positions)
        return [position_from_alpaca(p) for p in raw]

    async def get_account(self) -> Account:
        raw = await self._call("get_account", Priority.POSITION_SYNC, self._trading.get_account)
        return account_from_alpaca(raw)

    async def get_clock(self) -> Clock:
        raw = await self._call("get_clock", Priority.ORDER_STATUS, self._trading.get_clock)
        return clock_from_alpaca(raw)

    async def get_calendar(self, start: date, end: date) -> list[CalendarDay]:
        raw = await self._call(
            "get_calendar", Priority.POSITION_SYNC, self._trading.get_calendar, GetCalendarRequest(start=start, end=end)
        )
        return [calendar_day_from_alpaca(day) for day in raw]

    # -- market data ---------------------------------------------------------------------------------
    async def latest_quotes(self, symbols: Sequence[str]) -> dict[str, Quote]:
        out: dict[str, Quote] = {}
        for chunk in _chunks(symbols, SYMBOLS_PER_REQUEST):
            request = StockLatestQuoteRequest(symbol_or_symbols=chunk, feed=self._feed)
            raw = await self._call("latest_quotes", Priority.QUOTES, self._data.get_stock_latest_quote, request)
            out.update({symbol: quote_from_alpaca(symbol, q) for symbol, q in raw.items()})
        return out

    async def latest_bars(self, symbols: Sequence[str]) -> dict[str, Bar]:
        out: dict[str, Bar] = {}
        for chunk in _chunks(symbols, SYMBOLS_PER_REQUEST):
            request = StockLatestBarRequest(symbol_or_symbols=chunk, feed=self._feed)
            raw = await self._call("latest_bars", Priority.QUOTES, self._data.get_stock_latest_bar, request)
            out.update({symbol: bar_from_alpaca(symbol, b) for symbol, b in raw.items()})
        return out

    async def get_bars(
        self, symbols: Sequence[str], start: datetime, end: datetime, timeframe: Timeframe = "1Min"
    ) -> dict[str, list[Bar]]:
        out: dict[str, list[Bar]] = {}
        for chunk in _chunks(symbols, SYMBOLS_PER_REQUEST):
            request = StockBarsRequest(
                symbol_or_symbols=chunk, timeframe=TIMEFRAMES[timeframe], start=start, end=end, feed=self._feed
            )
            barset = await self._call("get_bars", Priority.QUOTES, self._data.get_stock_bars, request)
            for symbol, bars in barset.data.items():
                if bars:
                    out[symbol] = [bar_from_alpaca(symbol, b) for b in bars]
        return out

    # -- stream --------------------------------------------------------------------------------------
    def trade_updates(self) -> AsyncIterator[TradeUpdate]:
        """alpaca-py's TradingStream on this event loop (trade_updates.py): polling is the backfill."""
        return stream_trade_updates(self.settings)


def next_page_needed(page: Sequence[Order], fresh: int, after: datetime | None) -> bool:
    """Whether list_orders must ask for another page after ``page`` (pure, for property tests)."""
    if len(page) < ORDERS_PAGE_LIMIT:
        return False  # a short page is the last one
    if fresh == 0:
        # A full page of orders we have already seen: 500+ share one submitted_at and `until` cannot
        # move past them. Stop rather than loop; this cannot happen with Alpaca's microsecond stamps.
        raise BrokerError("cannot page orders: more than 500 share one submitted_at")
    oldest = min(order.submitted_at for order in page)
    # Nothing can lie strictly between `after` and the oldest order within one microsecond: done.
    return not (after is not None and oldest - after <= timedelta(microseconds=1))


def _same_order(found: Order | None, request: OrderRequest) -> bool:
    return (
        found is not None
        and found.symbol == request.symbol
        and found.side is request.side
        and found.qty == request.qty
        and found.type is request.type
    )
