"""The price_update job: quotes every symbol held, watched or alerted on at the tick's time, records them
as the tick's one QuotesObserved (``quotes-<tick_id>``) and publishes ``<prefix>.feed.price.<SYMBOL>``.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from eventstore import NO_STREAM
from services.broker.quotes import QuotesUnavailable, fetch_quotes
from services.core.feeds import feed_key
from services.core.jobs.runner import JobContext
from services.model.streams import quotes_stream
from services.positions.planning import price_feed
from services.positions.projection import PortfolioProjection, held_symbols, watched_symbols
from services.positions.shell import PositionsShell
from services.positions.valuation import quotes_observed

log = logging.getLogger(__name__)


class PriceUpdate(PositionsShell):
    """The price_update job (``price_update``), run by the job runner for each of its ticks."""

    async def price_update(self, job: JobContext) -> dict[str, int]:
        at, tick_id = job.scheduled_at, job.tick.tick_id
        await self.ctx.catch_up(PortfolioProjection.name, "alerts")
        async with self.store.pool.acquire() as con:
            symbols = set(await held_symbols(con)) | set(await watched_symbols(con))
            symbols |= await self.reads.active_alert_symbols(con)
        if not symbols:
            return {"symbols_checked": 0, "symbols_updated": 0, "quote_problems": 0}
        broker = await self.ctx.at(at)
        check = await fetch_quotes(
            broker,
            symbols,
            at=at,
            batch_size=self.settings.quote_batch_size,
            max_age=timedelta(seconds=self.settings.quote_max_age_seconds),
        )
        event = quotes_observed(tick_id, check, at)
        await self.store.append(quotes_stream(tick_id), [event], NO_STREAM)
        for symbol, price in sorted(check.prices.items()):
            quote = check.fresh[symbol]
            await self.publish("price", feed_key(symbol), price_feed(symbol, price, quote, tick_id, at))
        if check.problems:
            log.warning(
                "price_update %s: no usable quote for %s",
                tick_id,
                ", ".join(f"{s} ({p})" for s, p in sorted(check.problems.items())),
            )
        if not check.prices:
            raise QuotesUnavailable(f"no usable quote for any of {len(check.problems)} symbols")
        return {
            "symbols_checked": check.symbols_checked,
            "symbols_updated": check.symbols_updated,
            "quote_problems": len(check.problems),
        }
