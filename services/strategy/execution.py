"""The strategy_execution job: a tick's portfolios, evaluated here or fanned out, and the tick's totals.

strategy_execution fans out per portfolio so that several workers share a tick:

1. The tick's job (one worker, through the job ledger) lists the portfolios with enabled strategies and
   publishes one work item per portfolio on ``<prefix>.work.strategy_execution`` (``Nats-Msg-Id`` =
   tick id + portfolio, so a redelivered tick publishes nothing new).
2. Any worker of the service takes a work item and evaluates that portfolio (``evaluation``): it folds the
   portfolio, fetches the tick's market data (once per tick and process), calls the pure
   ``decide_portfolio`` and appends, in one atomic append: each OrderRequested to its
   ``order-<client_order_id>`` stream, a halt to the portfolio stream, and the signals, refusals and a
   closing ``PortfolioEvaluated`` to ``evaluation-<portfolio>@<tick>`` with NO_STREAM: a portfolio is
   evaluated once per tick, whatever the redeliveries or the number of workers.
3. The tick's job waits until every portfolio has its PortfolioEvaluated, then records the counters.

Below ``FAN_OUT_FROM`` portfolios the tick's worker evaluates them itself: the queue's round trip would
cost more than it shares. The evaluation is the same function either way, exactly once per portfolio.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import msgspec

from services.core.events import registry
from services.core.host import ServiceContext
from services.core.jobs.runner import JobContext
from services.core.jobs.types import Tick, WorkItem
from services.model.events.strategy import PortfolioEvaluated
from services.model.streams import evaluation_stream
from services.strategy.evaluation import Caches, Evaluation, decide_evaluation, evaluate_portfolio, record_evaluation
from services.strategy.portfolio import PortfolioView, load_portfolio

WORK_QUEUE = "strategy_execution"
EVALUATION_TIMEOUT = 120.0  # seconds the tick's job waits for every portfolio's evaluation
# From this many portfolios on, a tick fans out over the work queue (shared by the service's workers).
FAN_OUT_FROM = 8


async def portfolios_to_evaluate(ctx: ServiceContext) -> list[str]:
    """Portfolios with at least one enabled strategy, from the log (a portfolio's first event is
    PortfolioOpened; its strategies are folded per portfolio by the worker)."""
    await ctx.catch_up("strategy")
    async with ctx.rt.store.pool.acquire() as con:
        rows = await con.fetch("SELECT DISTINCT portfolio_id FROM portfolio_strategies WHERE enabled ORDER BY 1")
    return [row[0] for row in rows]


class Prefetched(msgspec.Struct, frozen=True):
    portfolios: list[str]
    # The decisions, when the tick's worker evaluates the portfolios inline (fewer than FAN_OUT_FROM).
    evaluations: dict[str, Evaluation]


async def prefetch_tick(ctx: ServiceContext, caches: Caches, tick: Tick) -> Prefetched:
    """What a strategy_execution run reads and decides first, started as soon as its tick arrives (while
    the job ledger records the start): the portfolios to evaluate, the tick's shared controls and, when
    the run evaluates them itself, their decisions. Reads and pure decisions only: nothing is appended
    before the run is recorded as started."""
    # The broker's clock moves to the tick first: the simulator settles its due fills in the background
    # meanwhile, rather than in the path of this tick's orders.
    await ctx.at(tick.scheduled_at)
    # Tasks, not gather(): when a shutdown cancels them, a task ends cancelled, silently, where a gather
    # would end with a CancelledError "never retrieved".
    controls = asyncio.ensure_future(caches.controls.get(ctx, tick.tick_id, tick.scheduled_at))

    def read(pid: str) -> asyncio.Future[PortfolioView | None]:
        return asyncio.ensure_future(load_portfolio(ctx.rt.store, pid, caches.views))

    # The views of the portfolios evaluated here last time are read while the list is (it rarely changes).
    reads = {pid: read(pid) for pid in caches.last_portfolios}
    try:
        portfolios = await portfolios_to_evaluate(ctx)
        evaluations: dict[str, Evaluation] = {}
        if len(portfolios) < FAN_OUT_FROM:
            for pid in portfolios:
                if pid not in reads:
                    reads[pid] = read(pid)
            for pid in portfolios:
                item = WorkItem(tick_id=tick.tick_id, scheduled_at=tick.scheduled_at, portfolio_id=pid)
                evaluation = await decide_evaluation(ctx, caches, item, await reads[pid])
                if evaluation is not None:
                    evaluations[pid] = evaluation
        caches.last_portfolios[:] = portfolios if len(portfolios) < FAN_OUT_FROM else []
        await controls
    finally:
        for pending in (controls, *reads.values()):
            pending.cancel()  # no-op once done
    return Prefetched(portfolios, evaluations)


async def strategy_execution(ctx: ServiceContext, caches: Caches, job: JobContext) -> dict[str, int]:
    tick = job.tick
    if job.prefetched is not None:
        prefetched: Prefetched = await job.prefetched
    else:
        prefetched = await prefetch_tick(ctx, caches, tick)
    portfolios = prefetched.portfolios
    items = [WorkItem(tick_id=tick.tick_id, scheduled_at=tick.scheduled_at, portfolio_id=pid) for pid in portfolios]
    if len(items) < FAN_OUT_FROM:
        # A few portfolios: evaluating them here is faster than a round trip through the work queue. The
        # prefetch decided them already: all of them, and the run's completion, in one atomic append when
        # the run's start is recorded by now (one commit for the whole tick).
        decided = [prefetched.evaluations[pid] for pid in portfolios if pid in prefetched.evaluations]
        if items and len(decided) == len(items) and job.complete is not None:
            totals = _totals(evaluation.evaluated for evaluation in decided)
            if await job.complete([append for evaluation in decided for append in evaluation.appends], totals):
                return totals
        evaluated = [
            await (
                record_evaluation(ctx, prefetched.evaluations[item.portfolio_id])
                if item.portfolio_id in prefetched.evaluations
                else evaluate_portfolio(ctx, caches, item)
            )
            for item in items
        ]
        if all(e is not None for e in evaluated):
            return _totals(e for e in evaluated if e is not None)
        # Some were evaluated before (a redelivered tick, or another worker): their results are in the log.
    else:
        subject = ctx.rt.subjects.work(WORK_QUEUE)
        acks = [
            await ctx.rt.js.publish_async(
                subject, msgspec.json.encode(item), headers={"Nats-Msg-Id": f"{tick.tick_id}|{item.portfolio_id}"}
            )
            for item in items
        ]
        await asyncio.gather(*acks)
    streams = [evaluation_stream(pid, tick.tick_id) for pid in portfolios]
    deadline = time.monotonic() + EVALUATION_TIMEOUT
    delay = 0.002
    while True:
        done = await ctx.rt.store.existing_streams(streams)
        if len(done) == len(streams):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(streams) - len(done)} of {len(streams)} portfolios not evaluated in time")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
    return _totals(
        registry.decode(recorded)
        for recorded in await ctx.rt.store.read_events_of(streams)
        if recorded.type == "PortfolioEvaluated"
    )


def _totals(evaluations: Iterable[PortfolioEvaluated]) -> dict[str, int]:
    """The tick's counters, summed over its portfolios' evaluations."""
    totals = {
        "portfolios_processed": 0,
        "signals_generated": 0,
        "trades_requested": 0,
        "orders_refused": 0,
        "strategy_errors": 0,
    }
    for evaluated in evaluations:
        totals["portfolios_processed"] += 1
        totals["signals_generated"] += evaluated.signals_generated
        totals["trades_requested"] += evaluated.trades_requested
        totals["orders_refused"] += evaluated.orders_refused
        totals["strategy_errors"] += evaluated.strategy_errors
    return totals
