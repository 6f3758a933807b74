"""The one async interface the trading loop talks to; implemented by AlpacaBroker and SimBroker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import date, datetime
from typing import Literal, Protocol, runtime_checkable

from services.broker.models import (
    Account,
    Bar,
    CalendarDay,
    Clock,
    Order,
    OrderRequest,
    Position,
    Quote,
    TradeUpdate,
)

OrderQueryStatus = Literal["open", "closed", "all"]
# Alpaca's bar timeframes that both brokers understand.
Timeframe = Literal["1Min", "5Min", "15Min", "1Hour", "1Day"]

# Alpaca returns at most this many orders per GET /v2/orders.
ORDERS_PAGE_LIMIT = 500


@runtime_checkable
class Broker(Protocol):
    # True when the broker trades in real time (Alpaca): an order request can reach it too late to be sent.
    # False for the simulator, whose market moves with the ticks' times (offline runs, demos, replays).
    real_time: bool

    @property
    def now(self) -> datetime:
        """The broker's current time: the wall clock for Alpaca (or the clock it was given, for a fake server
        in simulated time), the simulated time for the simulator."""
        ...

    async def submit_order(self, request: OrderRequest) -> Order:
        """Submit once, with our client order id. Raises OrderRejected (definite), DuplicateClientOrderId
        (an order with this id existed before this call; ``existing`` attached), AmbiguousSubmit (outcome
        unknown even after lookup: record UNKNOWN, never resubmit with a new id), RateLimited."""
        ...

    async def get_order(self, order_id: str) -> Order:
        """Raises NotFound (which is not a cancel)."""
        ...

    async def get_order_by_client_id(self, client_order_id: str) -> Order | None: ...

    async def list_orders(
        self,
        status: OrderQueryStatus = "open",
        after: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Order]:
        """Every matching order (newest first), fetched in pages of 500, never one call per order.

        ``after``/``until`` are exclusive bounds on submitted_at. A caller that knows the oldest order it
        cares about may pass ``after`` just below it: paging then stops without a final empty page."""
        ...

    async def cancel_order(self, order_id: str) -> None:
        """Request a cancel. Raises NotFound or OrderNotCancelable. Read the order to see the outcome."""
        ...

    async def list_positions(self) -> list[Position]: ...

    async def get_account(self) -> Account: ...

    async def get_clock(self) -> Clock: ...

    async def get_calendar(self, start: date, end: date) -> list[CalendarDay]: ...

    async def latest_quotes(self, symbols: Sequence[str]) -> dict[str, Quote]:
        """Batched: many symbols per request. Unknown symbols are absent from the result."""
        ...

    async def latest_bars(self, symbols: Sequence[str]) -> dict[str, Bar]: ...

    async def get_bars(
        self, symbols: Sequence[str], start: datetime, end: datetime, timeframe: Timeframe = "1Min"
    ) -> dict[str, list[Bar]]: ...

    def trade_updates(self) -> AsyncIterator[TradeUpdate]:
        """The fill stream. Events sent while disconnected are lost: polling remains the backfill."""
        ...

    def time_moved(self) -> None:
        """The ticks' time moved forward. The simulator, whose market moves with that time, settles its open
        orders up to it in the background (as a real broker fills between our calls); Alpaca does nothing."""
        ...

    def seen_at(self, moment: datetime) -> Broker:
        """This broker for a decision at ``moment`` (a tick's time). The simulator in simulated time answers
        as of exactly that moment (orders submitted, prices, fills), so what it is asked is the same whichever
        process asks and however late; a real-time broker (Alpaca, or a simulator standing in for one) is
        itself."""
        ...

    async def aclose(self) -> None: ...
