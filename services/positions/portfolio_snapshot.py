"""The portfolio_snapshot job: values each portfolio at the tick's time (the latest observed prices, the
broker's quotes for a symbol never observed) and appends the trading day's one PortfolioSnapshotTaken to
``snapshot-<portfolio_id>-<YYYY-MM-DD>`` (NO_STREAM), publishing ``<prefix>.feed.snapshot.<portfolio_id>``.
"""

from __future__ import annotations

from datetime import timedelta

from eventstore import NO_STREAM, WrongExpectedVersion
from services.broker.quotes import fetch_quotes
from services.core.jobs.runner import JobContext
from services.model.accounting import Book
from services.model.events.positions import PortfolioSnapshotTaken
from services.model.streams import snapshot_stream
from services.positions.books import load_book
from services.positions.planning import snapshot_day, snapshot_feed
from services.positions.projection import PortfolioProjection, latest_prices
from services.positions.shell import PositionsShell
from services.positions.valuation import MissingPrices, portfolio_snapshot, value_portfolio


class SnapshotsIncomplete(RuntimeError):
    """Some portfolios could not be snapshotted (no price for an open position): the run fails."""


class PortfolioSnapshot(PositionsShell):
    """The portfolio_snapshot job (``portfolio_snapshot``), run by the job runner for each of its ticks."""

    async def portfolio_snapshot(self, job: JobContext) -> dict[str, int]:
        at = job.scheduled_at
        day = snapshot_day(at)
        await self.ctx.catch_up(PortfolioProjection.name)
        async with self.store.pool.acquire() as con:
            portfolio_ids = [
                r["portfolio_id"] for r in await con.fetch("SELECT portfolio_id FROM portfolios ORDER BY portfolio_id")
            ]
            prices = {s: p for s, (p, _) in (await latest_prices(con)).items()}
        books: dict[str, Book] = {}
        for portfolio_id in portfolio_ids:
            if await self.store.stream_version(snapshot_stream(portfolio_id, day)) >= 0:
                continue  # taken already (a duplicate or manual tick, a restart)
            book, _ = await load_book(self.store, portfolio_id)
            if book is not None:
                books[portfolio_id] = book
        unpriced = {
            symbol
            for book in books.values()
            for symbol, p in book.positions.items()
            if not p.is_flat and symbol not in prices
        }
        if unpriced:  # never observed by price_update: ask the broker once (one call per batch)
            broker = await self.ctx.at(at)
            check = await fetch_quotes(
                broker,
                unpriced,
                at=at,
                batch_size=self.settings.quote_batch_size,
                max_age=timedelta(seconds=self.settings.quote_max_age_seconds),
            )
            prices.update(check.prices)
        created = 0
        failed: list[str] = []
        for portfolio_id, book in books.items():
            try:
                event = portfolio_snapshot(portfolio_id, day, value_portfolio(book, prices), at)
            except MissingPrices as exc:
                failed.append(str(exc))
                continue
            try:
                result = await self.store.append(snapshot_stream(portfolio_id, day), [event], NO_STREAM)
            except WrongExpectedVersion:
                continue  # another worker took it meanwhile
            if result.written:
                created += 1
                assert isinstance(event.data, PortfolioSnapshotTaken)
                await self.publish("snapshot", portfolio_id, snapshot_feed(event.data))
        if failed:
            raise SnapshotsIncomplete(f"{created} snapshot(s) taken; " + "; ".join(failed))
        return {"snapshots_created": created, "portfolios": len(portfolio_ids)}
