"""Alpaca's trade-update stream: alpaca-py's TradingStream on the caller's event loop, as an async iterator
of openbell TradeUpdates, saying an outage in one warning line instead of a traceback per reconnect.

The stream is the fast path only (what is sent while it is down is lost); the adapter's REST calls, polled
by order_status_check, are the backfill.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from alpaca.trading.stream import TradingStream

from services.broker.alpaca.mapping import trade_update_from_alpaca
from services.broker.alpaca.settings import AlpacaSettings
from services.broker.errors import BrokerUnavailable
from services.broker.models import TradeUpdate

log = logging.getLogger(__name__)


async def stream_trade_updates(settings: AlpacaSettings) -> AsyncIterator[TradeUpdate]:
    """alpaca-py's TradingStream on this event loop. It reconnects by itself; what is sent while it is
    down is lost, and it does not wait for the listen acknowledgement: polling is the backfill."""
    key = settings.api_key_id.get_secret_value()  # type: ignore[union-attr]
    secret = settings.api_secret_key.get_secret_value()  # type: ignore[union-attr]
    stream = QuietTradingStream(
        key, secret, paper=settings.trading_mode == "paper", url_override=settings.api_stream_url
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
