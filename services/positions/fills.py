"""The fill consumer of the positions service: books each order fill (OrderPartiallyFilled / OrderFilled,
as the relay publishes them) into its portfolio's stream as FillApplied (``services.model.ledger``), in log
order per portfolio, and publishes ``<prefix>.feed.fill.<portfolio_id>``.

Its own module because it is the service's one event consumer (the other three are clock jobs), with
its own ordering rule (``FillConsumer._wait_for_earlier_fills``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal

import msgspec

from eventstore import EventCodecError, NewEvent
from eventstore.relay import envelope_decoder
from services.core.events import registry
from services.core.jobs.consumer import Delivery, Reject
from services.model.accounting import Book
from services.model.events.orders import OrderFilled, OrderPartiallyFilled
from services.model.events.positions import FillApplied
from services.model.ledger import record_fill
from services.positions.books import append_to_portfolio
from services.positions.planning import fill_feed
from services.positions.projection import PortfolioProjection
from services.positions.shell import PositionsShell

log = logging.getLogger(__name__)

FILL_EVENT_TYPES = ("OrderPartiallyFilled", "OrderFilled")
FILL_ORDER_WAIT = 10.0  # seconds a fill waits for its portfolio's earlier fills to be booked


class FillConsumer(PositionsShell):
    """The handler of the positions service's durable consumers of OrderPartiallyFilled and OrderFilled."""

    async def on_fill(self, delivery: Delivery) -> None:
        """Book one order fill (OrderPartiallyFilled / OrderFilled envelope) into its portfolio."""
        try:
            envelope = envelope_decoder.decode(delivery.data)
        except msgspec.DecodeError as exc:
            raise Reject(f"not an event envelope: {exc}") from None
        if envelope.type not in FILL_EVENT_TYPES:
            raise Reject(f"{envelope.type} is not an order fill")
        try:
            fill = registry.decode_data(envelope.type, bytes(envelope.data))
        except (EventCodecError, ValueError) as exc:
            raise Reject(f"invalid {envelope.type}: {exc}") from None
        assert isinstance(fill, OrderPartiallyFilled | OrderFilled)
        await self._wait_for_earlier_fills(fill.portfolio_id, envelope.global_position)
        booked: list[tuple[FillApplied, Decimal]] = []

        def decide(book: Book, _version: int) -> list[NewEvent]:
            after, event = record_fill(book, fill)
            assert isinstance(event.data, FillApplied)
            booked[:] = [(event.data, after.cash)]
            return [event]

        result = await append_to_portfolio(self.store, fill.portfolio_id, decide)
        # Published when booked, and again on a redelivery (the first attempt may have died before it).
        if result is not None and (result.written or delivery.num_delivered > 1):
            applied, cash = booked[0]
            await self.publish("fill", fill.portfolio_id, fill_feed(applied, cash, booked=result.written))

    async def _wait_for_earlier_fills(self, portfolio_id: str, position: int) -> None:
        """Book a portfolio's fills in log order, whichever worker or durable (partial / filled) got
        them: wait while an earlier fill of the portfolio is unbooked. Quantities and cash do not depend
        on the order; the split of P&L between realized and cost basis does (a sale against which buys).
        After FILL_ORDER_WAIT the fill is booked anyway (an earlier one may be in a long retry backoff)."""
        deadline = time.monotonic() + FILL_ORDER_WAIT
        runner = self.ctx.projections
        while True:
            if await runner.position(PortfolioProjection.name) < position:
                await runner.run_once(PortfolioProjection.name)
            async with self.store.pool.acquire() as con:
                earlier = await con.fetchval(
                    "SELECT count(*) FROM unbooked_fills WHERE portfolio_id = $1 AND position < $2",
                    portfolio_id,
                    position,
                )
            if not earlier:
                return
            if time.monotonic() > deadline:
                log.warning(
                    "fills of %s: %d earlier fill(s) still unbooked after %.0fs; booking #%d now",
                    portfolio_id,
                    earlier,
                    FILL_ORDER_WAIT,
                    position,
                )
                return
            await asyncio.sleep(0.05)
