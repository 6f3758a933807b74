"""AlpacaBroker: the Broker protocol on alpaca-py (paper or live).

What this layer adds to alpaca-py (see DESIGN.md, "Alpaca pitfalls"):
- blocking calls run in a small thread pool, off the event loop;
- every HTTP request gets a (connect, read) timeout (alpaca-py sets none);
- alpaca-py's own retries are off (it retries POST on 429/504): 429s wait for the reset time and retry
  (a 429 was not processed), and an ambiguous order submit is resolved by looking the client order id up;
- one rate-limit budget per process, fed by the X-Ratelimit-* headers of every response;
- every exception becomes one of services.broker.errors, with HTTP status and Alpaca code, keys redacted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import pydantic
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.requests import StockBarsRequest, StockLatestBarRequest, StockLatestQuoteRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide as AlpacaOrderSide
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.enums import TimeInForce as AlpacaTimeInForce
from alpaca.trading.requests import GetCalendarRequest, GetOrdersRequest, LimitOrderRequest, MarketOrderRequest
from alpaca.trading.stream import TradingStream
from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.broker.errors import (
    AmbiguousSubmit,
    BrokerConfigError,
    BrokerError,
    BrokerUnavailable,
    DuplicateClientOrderId,
    NotFound,
    OrderNotCancelable,
    OrderRejected,
    RateLimited,
    redact,
)
from services.broker.models import (
    Account,
    Bar,
    CalendarDay,
    Clock,
    Order,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
    Quote,
    TimeInForce,
    TradeUpdate,
    TradeUpdateEvent,
    to_decimal,
)
from services.broker.protocol import ORDERS_PAGE_LIMIT, OrderQueryStatus, Timeframe
from services.broker.ratelimit import Priority, RateLimiter, shared_rate_limiter
from services.clock.calendar import NEW_YORK
from services.core.redaction import register_secrets

log = logging.getLogger(__name__)

PAPER_URL = "https://paper-api.alpaca.markets"
LIVE_URL = "https://api.alpaca.markets"
# Symbols per latest-quotes/bars request: keeps the URL well under common proxy limits.
SYMBOLS_PER_REQUEST = 100
DUPLICATE_CLIENT_ORDER_ID = "client_order_id must be unique"
T = TypeVar("T")


class AlpacaSettings(BaseSettings):
    """Alpaca's conventional APCA_* names for keys and URLs; OPENBELL_* for the rest."""

    model_config = SettingsConfigDict(env_prefix="OPENBELL_", extra="ignore", frozen=True)

    api_key_id: SecretStr | None = Field(default=None, validation_alias=AliasChoices("APCA_API_KEY_ID", "api_key_id"))
    api_secret_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("APCA_API_SECRET_KEY", "api_secret_key")
    )
    trading_mode: Literal["paper", "live"] = "paper"
    live_trading: Literal["yes", "no"] = "no"
    api_base_url: str | None = Field(default=None, validation_alias=AliasChoices("APCA_API_BASE_URL", "api_base_url"))
    api_data_url: str | None = Field(default=None, validation_alias=AliasChoices("APCA_API_DATA_URL", "api_data_url"))
    api_stream_url: str | None = Field(
        default=None, validation_alias=AliasChoices("APCA_API_STREAM_URL", "api_stream_url")
    )
    alpaca_connect_timeout: float = Field(default=5.0, gt=0)
    alpaca_read_timeout: float = Field(default=15.0, gt=0)
    alpaca_data_feed: Literal["iex", "sip"] = "iex"
    alpaca_rate_limit_per_minute: int = Field(default=200, gt=0)
    # How often a 429 is waited out and retried before RateLimited reaches the caller.
    alpaca_max_rate_limit_retries: int = Field(default=3, ge=0)
    # Delays before each by-client-order-id lookup after an ambiguous submit.
    alpaca_submit_lookup_delays: tuple[float, ...] = (0.0, 0.5, 2.0)
    alpaca_threads: int = Field(default=8, gt=0)

    def secrets(self) -> tuple[str, ...]:
        return tuple(s.get_secret_value() for s in (self.api_key_id, self.api_secret_key) if s is not None)


def load_alpaca_settings(**overrides: Any) -> AlpacaSettings:
    """Settings from the environment; a bad value is one BrokerConfigError line that never echoes it."""
    try:
        return AlpacaSettings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "?"
        raise BrokerConfigError(f"invalid Alpaca setting {field}: {error['msg']}") from None


PAPER_HOST = "paper-api.alpaca.markets"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_live_gate(settings: AlpacaSettings) -> None:
    """The one gate before real money: trading against any host but Alpaca's paper host (the live host, a
    proxy, a local server alike) needs OPENBELL_TRADING_MODE=live AND OPENBELL_LIVE_TRADING=yes; every
    broker URL beyond this machine is https (wss for the stream). BrokerConfigError otherwise (one line)."""
    live = settings.trading_mode == "live"
    if live and settings.live_trading != "yes":
        raise BrokerConfigError(
            "OPENBELL_TRADING_MODE=live needs OPENBELL_LIVE_TRADING=yes as well: refusing to trade real money"
        )
    for variable, url in (
        ("APCA_API_BASE_URL", settings.api_base_url),
        ("APCA_API_DATA_URL", settings.api_data_url),
        ("APCA_API_STREAM_URL", settings.api_stream_url),
    ):
        if url is None:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
            raise BrokerConfigError(f"{variable} must be an https:// (or wss://) URL")
        if parts.scheme in ("http", "ws") and not _is_loopback(parts.hostname):
            raise BrokerConfigError(
                f"{variable} must use https:// (or wss://) beyond this machine, not {parts.scheme}://"
            )
    default_host = urlsplit(LIVE_URL if live else PAPER_URL).hostname
    trading_urls = (("APCA_API_BASE_URL", settings.api_base_url), ("APCA_API_STREAM_URL", settings.api_stream_url))
    for variable, url in trading_urls:
        host = urlsplit(url).hostname if url else default_host
        if host != PAPER_HOST and not (live and settings.live_trading == "yes"):
            raise BrokerConfigError(
                f"{variable} points at {host}, not Alpaca's paper host {PAPER_HOST}: trading there needs"
                " OPENBELL_TRADING_MODE=live and OPENBELL_LIVE_TRADING=yes"
            )


def check_settings(settings: AlpacaSettings) -> None:
    """Refuse to build a broker that could trade real money by accident, or that has no keys."""
    check_live_gate(settings)
    if settings.api_key_id is None or settings.api_secret_key is None:
        raise BrokerConfigError("APCA_API_KEY_ID and APCA_API_SECRET_KEY must both be set for the Alpaca broker")


class TimeoutSession(requests.Session):
    """A requests session that gives every request a default (connect, read) timeout."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__()
        self.default_timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self.default_timeout)
        return super().request(method, url, *args, **kwargs)


def _prepare_client(client: Any, settings: AlpacaSettings, limiter: RateLimiter) -> None:
    session = TimeoutSession((settings.alpaca_connect_timeout, settings.alpaca_read_timeout))

    def on_response(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        limiter.update_from_headers(response.headers, response.status_code)

    session.hooks["response"].append(on_response)
    # alpaca-py exposes neither the session nor retry settings on TradingClient: set its attributes. Should
    # a release rename them, setting them would change nothing, and its blind retries of order POSTs and
    # its requests without a timeout would come back unnoticed: refuse to run on such a client instead.
    missing = [name for name in ("_session", "_retry") if not hasattr(client, name)]
    if missing:
        raise BrokerConfigError(
            f"unsupported alpaca-py client {type(client).__name__}: no {', '.join(missing)} attribute"
            " (openbell needs it to set request timeouts and turn off blind retries)"
        )
    client._session = session
    client._retry = 0  # never retry blindly, POST least of all; 429s are handled in AlpacaBroker._call


# -- error mapping (pure) -----------------------------------------------------------------------------
def map_error(exc: BaseException, *, operation: str, secrets: Sequence[str]) -> BrokerError:
    """Translate an alpaca-py / requests exception into the broker's own type, without secrets."""
    if isinstance(exc, BrokerError):
        return exc
    if isinstance(exc, APIError):
        return _map_api_error(exc, operation=operation, secrets=secrets)
    if isinstance(exc, requests.exceptions.Timeout):
        return BrokerUnavailable(redact(f"{operation}: timed out ({type(exc).__name__})", secrets))
    if isinstance(exc, requests.exceptions.ConnectionError):
        return BrokerUnavailable(redact(f"{operation}: connection failed ({type(exc).__name__})", secrets))
    if isinstance(exc, ValueError | json.JSONDecodeError | requests.exceptions.JSONDecodeError):
        # requests' JSONDecodeError is a ValueError: a 2xx answer whose body is not JSON (a proxy page).
        kind = "unexpected response shape" if isinstance(exc, pydantic.ValidationError) else "non-JSON response body"
        return BrokerUnavailable(f"{operation}: {kind} ({type(exc).__name__})")
    if isinstance(exc, requests.exceptions.RequestException):
        return BrokerUnavailable(redact(f"{operation}: request failed ({type(exc).__name__})", secrets))
    return BrokerError(f"{operation}: unexpected {type(exc).__name__}")


def _map_api_error(exc: APIError, *, operation: str, secrets: Sequence[str]) -> BrokerError:
    status = exc.status_code
    # Redacted whole, before anything is cut: a cut through a secret would leave a prefix of it behind.
    body = redact(str(exc), secrets)
    code: int | None = None
    try:
        parsed = json.loads(body)
        code = int(parsed["code"]) if isinstance(parsed, dict) and "code" in parsed else None
        message = redact(str(parsed.get("message", "")), secrets)[:500] if isinstance(parsed, dict) else body[:200]
    except (ValueError, TypeError):
        # APIError.code raises on a non-JSON body (an HTML 502 page): keep a short, redacted snippet.
        message = "non-JSON error body: " + " ".join(body[:120].split())
    message = redact(f"{operation}: HTTP {status}: {message}", secrets)
    if status == 429:
        reset_at = None
        response = exc.response
        if response is not None and (reset := response.headers.get("X-Ratelimit-Reset")):
            try:
                reset_at = datetime.fromtimestamp(float(reset), UTC)
            except ValueError:
                reset_at = None
        return RateLimited(message, reset_at=reset_at, status=status, code=code)
    if status is None or status >= 500:
        return BrokerUnavailable(message, status=status, code=code)
    if status == 404:
        return NotFound(message, status=status, code=code)
    if status == 422 and DUPLICATE_CLIENT_ORDER_ID in message:
        return DuplicateClientOrderId(message, client_order_id="", status=status, code=code)
    if operation == "submit_order":
        return OrderRejected(message, status=status, code=code)
    if operation == "cancel_order" and status == 422:
        return OrderNotCancelable(message, status=status, code=code)
    return BrokerError(message, status=status, code=code)


# -- conversion (pure) --------------------------------------------------------------------------------
def _enum_value(value: Any) -> str:
    return str(getattr(value, "value", value))


def _dt(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _dec(value: Any) -> Any:
    return None if value is None or value == "" else to_decimal(value)


def order_from_alpaca(raw: Any) -> Order:
    submitted = _dt(raw.submitted_at) or _dt(raw.created_at)
    assert submitted is not None
    return Order(
        id=str(raw.id),
        client_order_id=raw.client_order_id,
        symbol=raw.symbol or "",
        side=OrderSide(_enum_value(raw.side)),
        type=OrderType(_enum_value(raw.type or raw.order_type)),
        qty=_dec(raw.qty) if raw.qty is not None else to_decimal(0),
        limit_price=_dec(raw.limit_price),
        time_in_force=TimeInForce(_enum_value(raw.time_in_force)),
        status=OrderStatus(_enum_value(raw.status)),
        filled_qty=_dec(raw.filled_qty) or to_decimal(0),
        filled_avg_price=_dec(raw.filled_avg_price),
        submitted_at=submitted,
        updated_at=_dt(raw.updated_at) or submitted,
        filled_at=_dt(raw.filled_at),
        canceled_at=_dt(raw.canceled_at),
        expired_at=_dt(raw.expired_at),
        failed_at=_dt(raw.failed_at),
    )


def position_from_alpaca(raw: Any) -> Position:
    return Position(
        symbol=raw.symbol,
        qty=to_decimal(raw.qty),
        avg_entry_price=to_decimal(raw.avg_entry_price),
        cost_basis=to_decimal(raw.cost_basis),
        market_value=_dec(raw.market_value),
        current_price=_dec(raw.current_price),
        unrealized_pl=_dec(raw.unrealized_pl),
    )


def account_from_alpaca(raw: Any) -> Account:
    return Account(
        id=str(raw.id),
        status=_enum_value(raw.status),
        currency=raw.currency or "USD",
        cash=to_decimal(raw.cash),
        buying_power=to_decimal(raw.buying_power),
        equity=to_decimal(raw.equity),
        portfolio_value=to_decimal(raw.portfolio_value),
        trading_blocked=bool(raw.trading_blocked),
    )


def calendar_day_from_alpaca(raw: Any) -> CalendarDay:
    # alpaca-py parses "09:30" into a naive datetime: that is New York wall time.
    return CalendarDay(
        date=raw.date,
        open=raw.open.replace(tzinfo=NEW_YORK).astimezone(UTC),
        close=raw.close.replace(tzinfo=NEW_YORK).astimezone(UTC),
    )


def quote_from_alpaca(symbol: str, raw: Any) -> Quote:
    return Quote(
        symbol=symbol,
        bid_price=to_decimal(raw.bid_price),
        ask_price=to_decimal(raw.ask_price),
        bid_size=to_decimal(raw.bid_size),
        ask_size=to_decimal(raw.ask_size),
        timestamp=_dt(raw.timestamp) or datetime.now(UTC),
    )


def bar_from_alpaca(symbol: str, raw: Any) -> Bar:
    return Bar(
        symbol=symbol,
        timestamp=_dt(raw.timestamp) or datetime.now(UTC),
        open=to_decimal(raw.open),
        high=to_decimal(raw.high),
        low=to_decimal(raw.low),
        close=to_decimal(raw.close),
        volume=to_decimal(raw.volume),
        trade_count=int(raw.trade_count) if raw.trade_count is not None else None,
        vwap=_dec(raw.vwap),
    )


def trade_update_from_alpaca(raw: Any) -> TradeUpdate:
    event = _enum_value(raw.event)
    return TradeUpdate(
        event=TradeUpdateEvent(event) if event in TradeUpdateEvent._value2member_map_ else TradeUpdateEvent.OTHER,
        order=order_from_alpaca(raw.order),
        timestamp=_dt(raw.timestamp) or datetime.now(UTC),
        qty=_dec(raw.qty),
        price=_dec(raw.price),
        position_qty=_dec(raw.position_qty),
    )


_TIMEFRAMES: dict[str, TimeFrame] = {
    "1Min": TimeFrame(1, TimeFrameUnit.Minute),
    "5Min": TimeFrame(5, TimeFrameUnit.Minute),
    "15Min": TimeFrame(15, TimeFrameUnit.Minute),
    "1Hour": TimeFrame(1, TimeFrameUnit.Hour),
    "1Day": TimeFrame(1, TimeFrameUnit.Day),
}


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
        key = settings.api_key_id.get_secret_value()  # type: ignore[union-attr]  # checked above
        secret = settings.api_secret_key.get_secret_value()  # type: ignore[union-attr]
        paper = settings.trading_mode == "paper"
        self._trading = TradingClient(key, secret, paper=paper, url_override=settings.api_base_url)
        self._data = StockHistoricalDataClient(key, secret, url_override=settings.api_data_url)
        for client in (self._trading, self._data):
            _prepare_client(client, settings, self.rate_limiter)
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
        common: dict[str, Any] = {
            "symbol": request.symbol,
            "qty": float(request.qty),
            "side": AlpacaOrderSide(str(request.side)),
            "time_in_force": AlpacaTimeInForce(str(request.time_in_force)),
            "client_order_id": request.client_order_id,
        }
        if request.type is OrderType.LIMIT:
            alpaca_request: MarketOrderRequest | LimitOrderRequest = LimitOrderRequest(
                limit_price=float(request.limit_price or 0), **common
            )
        else:
            alpaca_request = MarketOrderRequest(**common)
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
        return Clock(
            timestamp=_dt(raw.timestamp),  # type: ignore[arg-type]
            is_open=raw.is_open,
            next_open=_dt(raw.next_open),  # type: ignore[arg-type]
            next_close=_dt(raw.next_close),  # type: ignore[arg-type]
        )

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
                symbol_or_symbols=chunk, timeframe=_TIMEFRAMES[timeframe], start=start, end=end, feed=self._feed
            )
            barset = await self._call("get_bars", Priority.QUOTES, self._data.get_stock_bars, request)
            for symbol, bars in barset.data.items():
                if bars:
                    out[symbol] = [bar_from_alpaca(symbol, b) for b in bars]
        return out

    # -- stream --------------------------------------------------------------------------------------
    async def trade_updates(self) -> AsyncIterator[TradeUpdate]:
        """alpaca-py's TradingStream on this event loop. It reconnects by itself; what is sent while it is
        down is lost, and it does not wait for the listen acknowledgement: polling is the backfill."""
        key = self.settings.api_key_id.get_secret_value()  # type: ignore[union-attr]
        secret = self.settings.api_secret_key.get_secret_value()  # type: ignore[union-attr]
        stream = QuietTradingStream(
            key, secret, paper=self.settings.trading_mode == "paper", url_override=self.settings.api_stream_url
        )
        queue: asyncio.Queue[TradeUpdate] = asyncio.Queue()

        async def on_update(raw: Any) -> None:
            queue.put_nowait(trade_update_from_alpaca(raw))

        stream.subscribe_trade_updates(on_update)
        runner = asyncio.create_task(stream._run_forever(), name="alpaca-trade-updates")
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, runner}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    continue
                getter.cancel()
                runner.result()  # the stream task ended: surface its exception, if any
                raise BrokerUnavailable("trade_updates stream stopped")
        finally:
            await stream.stop_ws()
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            await stream.close()


class _StreamOutage(logging.Filter):
    """alpaca-py logs a warning or a full traceback at every reconnect attempt of its trade stream: keep
    the last one's text for :class:`QuietTradingStream`'s single line and let none through (a secret is
    never in them, but a traceback per backoff buries everything else)."""

    def __init__(self) -> None:
        super().__init__()
        self.last_error = "unreachable"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        error = record.exc_info[1] if record.exc_info else None
        self.last_error = str(error or record.getMessage()).splitlines()[0][:200] or type(error).__name__
        return False


_stream_outage = _StreamOutage()
logging.getLogger("alpaca.trading.stream").addFilter(_stream_outage)


class QuietTradingStream(TradingStream):
    """alpaca-py's TradingStream saying a broker outage in one warning line, with the next retry time, and
    one line when it is connected again."""

    _down = False

    async def _wait_before_reconnect(self, retries: int) -> None:
        if not self._down:
            self._down = True
            retry_at = datetime.now(UTC) + timedelta(seconds=self._reconnect_delay(retries))
            log.warning(
                "Alpaca trade stream down (%s); reconnecting with backoff, next try at %s UTC"
                " (order_status_check polls fills meanwhile)", _stream_outage.last_error, f"{retry_at:%H:%M:%S}",
            )
        await super()._wait_before_reconnect(retries)

    async def _start_ws(self) -> None:
        await super()._start_ws()
        if self._down:
            self._down = False
            log.warning("Alpaca trade stream connected again")


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
