"""Portfolio views loaded incrementally (only the events after the cached view) are the views a full
fold of the stream gives, on a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from eventstore import EventStore
from services.strategy.commands import apply_all, set_portfolio_halted, set_strategy_enabled
from services.strategy.portfolio import PortfolioViewCache, load_portfolio
from tests.trading.helpers import portfolios

AT = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


async def test_a_cached_view_reads_only_what_came_after_it_and_equals_a_full_fold(pg_dsn: str) -> None:
    store = await EventStore.connect(pg_dsn)
    try:
        await _check(store)
    finally:
        await store.close()


async def _check(store: EventStore) -> None:
    spec = portfolios(1)[0]
    await apply_all(store, [spec], AT)
    cache = PortfolioViewCache()
    first = await load_portfolio(store, spec.name, cache)
    assert first is not None and cache.get(spec.name) == first
    # Changes written by anyone (here: commands on the store) are read on the next load.
    await set_portfolio_halted(store, spec.name, True, "test", AT)
    strategy = next(iter(first.strategies))
    await set_strategy_enabled(store, spec.name, strategy, False, AT)
    again = await load_portfolio(store, spec.name, cache)
    assert again == await load_portfolio(store, spec.name)  # the same as folding the whole stream
    assert again is not None and again.halted and not again.strategies[strategy].enabled
    assert again.version == first.version + 2
    # Nothing new: the cached view as it is; an older view never replaces a newer one.
    assert await load_portfolio(store, spec.name, cache) is again
    cache.put(first)
    assert cache.get(spec.name) is again
    assert await load_portfolio(store, "nobody", cache) is None
