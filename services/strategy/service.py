"""The strategy service: portfolio commands and the strategy_execution job.

strategy_execution fans out per portfolio so that several workers share a tick:

1. The tick's job (one worker, through the job ledger) lists the portfolios with enabled strategies and
   publishes one work item per portfolio on ``<prefix>.work.strategy_execution`` (``Nats-Msg-Id`` =
   tick id + portfolio, so a redelivered tick publishes nothing new).
2. Any worker of the service takes a work item, folds the portfolio, fetches the tick's market data (once
   per tick and process), calls the pure ``decide_portfolio`` and appends, in one atomic append: each
   OrderRequested to its ``order-<client_order_id>`` stream, a halt to the portfolio stream, and the
   signals, refusals and a closing ``PortfolioEvaluated`` to ``evaluation-<portfolio>@<tick>`` with
   NO_STREAM: a portfolio is evaluated once per tick, whatever the redeliveries or the number of workers.
3. The tick's job waits until every portfolio has its PortfolioEvaluated, then records the counters.

Below ``FAN_OUT_FROM`` portfolios the tick's worker evaluates them itself: the queue's round trip would
cost more than it shares. The evaluation is the same function either way, exactly once per portfolio.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import msgspec
from faststream.nats.annotations import NatsMessage

from eventstore import ANY, NO_STREAM, DuplicateEventId, NewEvent, WrongExpectedVersion
from eventstore.projections import checkpoint_name
from services.broker.views import bar_view
from services.clock.calendar import exchange_date
from services.core.events import new_event, registry
from services.core.host import ServiceContext
from services.core.jobs.consumer import Delivery, Reject, subscribe_durable, subscribe_ticks
from services.core.jobs.runner import JobContext, safe_error
from services.core.jobs.types import JobType, Tick, WorkItem
from services.core.limits import decode_command, error_reply, reason_text
from services.model.events.strategy import OrderRequested, PortfolioEvaluated, PortfolioHalted
from services.model.market import Bar
from services.model.streams import evaluation_stream, order_stream, portfolio_stream
from services.model.symbols import validate_name
from services.model.text import one_line, shown
from services.model.vocabulary import OPEN_ORDER_STATUSES, Side
from services.strategy import commands
from services.strategy.config import ConfigError, parse_portfolio_spec
from services.strategy.decide import (
    MarketData,
    PendingOrder,
    PortfolioState,
    TradingControls,
    decide_portfolio,
)
from services.strategy.decide import Tick as DecisionTick
from services.strategy.portfolio import (
    PortfolioView,
    PortfolioViewCache,
    global_halt,
    load_portfolio,
)

log = logging.getLogger(__name__)

SERVICE = "strategy"
WORK_QUEUE = "strategy_execution"
BAR_TIMEFRAME = "15Min"
BAR_WIDTH = timedelta(minutes=15)
BAR_LOOKBACK = timedelta(days=4)  # the first fetch: enough 15-minute bars across a weekend
MAX_BARS = 300  # kept per symbol; the built-in strategies need at most their longest window + 1
EVALUATION_TIMEOUT = 120.0  # seconds the tick's job waits for every portfolio's evaluation
# From this many portfolios on, a tick fans out over the work queue (shared by the service's workers).
FAN_OUT_FROM = 8


_work_decoder = msgspec.json.Decoder(WorkItem)


# ---------------------------------------------------------------------------------------- read models


async def portfolios_to_evaluate(ctx: ServiceContext) -> list[str]:
    """Portfolios with at least one enabled strategy, from the log (a portfolio's first event is
    PortfolioOpened; its strategies are folded per portfolio by the worker)."""
    await ctx.catch_up("strategy")
    async with ctx.rt.store.pool.acquire() as con:
        rows = await con.fetch("SELECT DISTINCT portfolio_id FROM portfolio_strategies WHERE enabled ORDER BY 1")
    return [row[0] for row in rows]


class TickControls(msgspec.Struct, frozen=True):
    """What every portfolio of one tick shares: the global halt, the quarantined symbols, the equity
    each portfolio had at the day's start (the last snapshot before the tick's trading day) and the
    orders of earlier ticks not yet in the books."""

    global_halt: bool
    quarantined: frozenset[str]
    day_start_equity: dict[str, Decimal]
    # Per portfolio: what earlier ticks' orders still commit beyond the books (open or unbooked).
    pending: dict[str, tuple[PendingOrder, ...]]


class TickControlsCache:
    """Loaded once per tick and process (four queries), not once per portfolio."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._entries: dict[str, TickControls] = {}
        self._lock = asyncio.Lock()

    async def get(self, ctx: ServiceContext, tick_id: str, at: datetime) -> TickControls:
        async with self._lock:
            controls = self._entries.get(tick_id)
            if controls is None:
                controls = self._entries[tick_id] = await _load_controls(ctx, at)
                while len(self._entries) > self.keep:
                    self._entries.pop(next(iter(self._entries)))
            return controls


_EXISTING_TABLES: set[str] = set()


async def _table_exists(con: Any, table: str) -> bool:
    """Whether another service's read model exists yet (once it does, it stays: remembered per process)."""
    if table not in _EXISTING_TABLES and await con.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
        _EXISTING_TABLES.add(table)
    return table in _EXISTING_TABLES


async def _load_controls(ctx: ServiceContext, at: datetime) -> TickControls:
    halted, quarantined, equity, pending = await asyncio.gather(
        global_halt(ctx.rt.store), _quarantined_symbols(ctx), _day_start_equity(ctx, at), _pending_orders(ctx)
    )
    return TickControls(halted[0], quarantined, equity, pending)


async def _pending_orders(ctx: ServiceContext) -> dict[str, tuple[PendingOrder, ...]]:
    async with ctx.rt.store.pool.acquire() as con:
        if not await _table_exists(con, "trades"):
            await ctx.catch_up("trades")  # creates it
        return await read_pending_orders(con)


async def read_pending_orders(con: Any) -> dict[str, tuple[PendingOrder, ...]]:
    """Every portfolio's orders that still commit cash or shares the books do not show: open ones, and
    fills the positions service has not booked yet, summed per symbol and side, apart for the market
    orders' rest (valued at the tick's price).

    From the trades read model as projected, and, in the same statement (one snapshot), the order
    requests the projection has not reached yet, counted whole: no catch-up transaction on the path of
    every tick. Other events not projected yet (fills, cancels, bookings) can only make these figures
    too high for a moment, never too low: a check may refuse an order that would just have fitted,
    never let through one that does not."""
    pending: dict[str, list[PendingOrder]] = {}
    for row in await con.fetch(_PENDING, list(OPEN_ORDER_STATUSES), checkpoint_name("trades")):
        orders = pending.setdefault(row["portfolio_id"], [])
        symbol, side = row["symbol"], Side(row["side"])
        if row["priced_qty"]:
            orders.append(PendingOrder(symbol=symbol, side=side, qty=row["priced_qty"], notional=row["notional"]))
        if row["market_qty"]:
            orders.append(PendingOrder(symbol=symbol, side=side, qty=row["market_qty"], notional=None))
    return {pid: tuple(orders) for pid, orders in pending.items()}


# Per portfolio, symbol and side: what is filled but not booked (at the fill price), what open limit
# orders may still take (at their limits), and what open market orders may still take (no price yet);
# the requests after the projection's checkpoint are open orders with nothing filled.
_PENDING = """
WITH checkpoint AS (
    SELECT coalesce(max(position), 0) AS position, coalesce(max(tx), 0) AS tx
    FROM eventstore_checkpoints WHERE name = $2
), parts AS (
    SELECT portfolio_id, symbol, side, filled_qty - booked_qty AS qty, (filled_qty - booked_qty) * avg_fill_price
        AS notional FROM trades WHERE filled_qty > booked_qty
    UNION ALL
    SELECT portfolio_id, symbol, side, qty - filled_qty, (qty - filled_qty) * limit_price FROM trades
    WHERE status = ANY($1::text[]) AND qty > filled_qty
    UNION ALL
    SELECT e.data->>'portfolio_id', e.data->>'symbol', e.data->>'side', (e.data->>'qty')::numeric,
        (e.data->>'qty')::numeric * (e.data->>'limit_price')::numeric
    FROM events e, checkpoint c
    WHERE e.event_type = 'OrderRequested' AND (e.tx_id, e.global_position) > (c.tx::text::xid8, c.position)
)
SELECT portfolio_id, symbol, side,
    coalesce(sum(qty) FILTER (WHERE notional IS NOT NULL), 0) AS priced_qty,
    coalesce(sum(notional), 0) AS notional,
    coalesce(sum(qty) FILTER (WHERE notional IS NULL), 0) AS market_qty
FROM parts GROUP BY portfolio_id, symbol, side
"""


async def _quarantined_symbols(ctx: ServiceContext) -> frozenset[str]:
    async with ctx.rt.store.pool.acquire() as con:
        if not await _table_exists(con, "quarantined_symbols"):
            return frozenset()
        return frozenset(row[0] for row in await con.fetch("SELECT symbol FROM quarantined_symbols"))


async def _day_start_equity(ctx: ServiceContext, at: datetime) -> dict[str, Decimal]:
    async with ctx.rt.store.pool.acquire() as con:
        if not await _table_exists(con, "portfolio_snapshots"):
            return {}
        rows = await con.fetch(
            "SELECT DISTINCT ON (portfolio_id) portfolio_id, total_value FROM portfolio_snapshots"
            " WHERE trading_day < $1 ORDER BY portfolio_id, trading_day DESC",
            exchange_date(at),
        )
    return {row[0]: Decimal(row[1]) for row in rows}


# -------------------------------------------------------------------------------------- market data


class MarketDataCache:
    """Bars per symbol, kept across ticks: a tick fetches only the bars closed since the last one it has
    (one batched broker call), and every portfolio of that tick reads the same history."""

    def __init__(self, keep: int = MAX_BARS) -> None:
        self.keep = keep
        self._history: dict[str, tuple[Bar, ...]] = {}
        self._checked_until: dict[str, datetime] = {}
        self._lock = asyncio.Lock()

    async def bars(
        self, ctx: ServiceContext, tick_id: str, at: datetime, symbols: set[str]
    ) -> dict[str, tuple[Bar, ...]]:
        async with self._lock:
            stale = sorted(s for s in symbols if self._checked_until.get(s) != at)
            # Symbols with the same starting point share one call (usually all of them).
            starts: dict[datetime, list[str]] = {}
            for symbol in stale:
                history = self._history.get(symbol)
                start = history[-1].timestamp + BAR_WIDTH if history else at - BAR_LOOKBACK
                starts.setdefault(start, []).append(symbol)
            if starts:
                broker = await ctx.at(at)
                for start, group in starts.items():
                    if start >= at:
                        continue
                    fetched = await broker.get_bars(group, start, at, BAR_TIMEFRAME)
                    for symbol in group:
                        new = tuple(bar_view(b) for b in fetched.get(symbol, []))
                        if new:
                            self._history[symbol] = (self._history.get(symbol, ()) + new)[-self.keep :]
                for symbol in stale:
                    self._checked_until[symbol] = max(at, self._checked_until.get(symbol, at))
            result = {s: self._history.get(s, ()) for s in symbols}
        # A late (redelivered) older tick must not see bars from after its own time.
        return {
            s: b if not b or b[-1].timestamp + BAR_WIDTH <= at else tuple(x for x in b if x.timestamp + BAR_WIDTH <= at)
            for s, b in result.items()
        }


@dataclass(frozen=True)
class Caches:
    """What one strategy process keeps across ticks: bar history, each tick's controls, portfolio views."""

    market: MarketDataCache = field(default_factory=MarketDataCache)
    controls: TickControlsCache = field(default_factory=TickControlsCache)
    views: PortfolioViewCache = field(default_factory=PortfolioViewCache)
    # The portfolios the last tick evaluated here: the next tick starts reading their views at once.
    last_portfolios: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------- evaluation


def _route(
    pid: str, tick_id: str, events: list[NewEvent]
) -> tuple[list[tuple[str, NewEvent]], list[NewEvent], list[NewEvent]]:
    """Split a decision's events: orders to their own streams, halts to the portfolio, the rest to the
    evaluation stream."""
    orders: list[tuple[str, NewEvent]] = []
    portfolio: list[NewEvent] = []
    evaluation: list[NewEvent] = []
    for event in events:
        if isinstance(event.data, OrderRequested):
            orders.append((order_stream(event.data.client_order_id), event))
        elif isinstance(event.data, PortfolioHalted):
            portfolio.append(event)
        else:
            evaluation.append(event)
    return orders, portfolio, evaluation


class Evaluation(msgspec.Struct, frozen=True):
    """One portfolio's decision at one tick, ready to append: decided, nothing written yet."""

    evaluated: PortfolioEvaluated
    appends: list[tuple[str, list[NewEvent], int]]


async def evaluate_portfolio(ctx: ServiceContext, caches: Caches, item: WorkItem) -> PortfolioEvaluated | None:
    evaluation = await decide_evaluation(ctx, caches, item)
    return None if evaluation is None else await record_evaluation(ctx, evaluation)


async def decide_evaluation(
    ctx: ServiceContext, caches: Caches, item: WorkItem, view: PortfolioView | None = None
) -> Evaluation | None:
    """Read what the portfolio's decision needs and decide (no effect). ``view``: the portfolio as the
    tick's prefetch read it; otherwise it is read here, after checking whether the evaluation exists
    already (None: a redelivery, or another worker's)."""
    store = ctx.rt.store
    stream = evaluation_stream(item.portfolio_id, item.tick_id)
    if view is None:
        # Independent reads at once, each on its own connection.
        version, view, controls = await asyncio.gather(
            store.stream_version(stream),
            load_portfolio(store, item.portfolio_id, caches.views),
            caches.controls.get(ctx, item.tick_id, item.scheduled_at),
        )
        if version >= 0:
            return None  # evaluated already (a redelivery, or another worker)
    else:
        # The atomic NO_STREAM append below still refuses a second evaluation.
        controls = await caches.controls.get(ctx, item.tick_id, item.scheduled_at)
    if view is None:
        raise Reject(f"unknown portfolio {item.portfolio_id!r}")
    strategies = view.enabled_strategies
    symbols = {s for strategy in strategies for s in strategy.universe} | {
        s for s, p in view.book.positions.items() if not p.is_flat
    }
    bars = await caches.market.bars(ctx, item.tick_id, item.scheduled_at, symbols)
    prices = {s: b[-1].close for s, b in bars.items() if b}
    state = PortfolioState(
        portfolio_id=view.portfolio_id,
        cash=view.book.cash,
        positions=view.book.positions,
        risk_limits=view.risk_limits,
        strategies=strategies,
        halted=view.halted,
        # The last snapshot before this trading day; the starting cash before the first snapshot.
        day_start_equity=controls.day_start_equity.get(view.portfolio_id, view.starting_cash),
        pending=controls.pending.get(view.portfolio_id, ()),
    )
    decisions = decide_portfolio(
        state,
        MarketData(bars=bars, prices=prices),
        DecisionTick(tick_id=item.tick_id, scheduled_at=item.scheduled_at),
        TradingControls(global_halt=controls.global_halt, quarantined_symbols=controls.quarantined),
    )
    orders, portfolio_events, evaluation_events = _route(item.portfolio_id, item.tick_id, list(decisions.events))
    evaluated = PortfolioEvaluated(
        portfolio_id=item.portfolio_id,
        tick_id=item.tick_id,
        strategies_evaluated=len(strategies),
        signals_generated=decisions.signals_generated,
        trades_requested=decisions.trades_requested,
        orders_refused=decisions.orders_refused,
        strategy_errors=decisions.strategy_errors,
        strategy_failures=decisions.strategy_failures[:20],
        halted=view.halted or decisions.halted_by_daily_loss,
        at=item.scheduled_at,
    )
    # One atomic append (one commit): the orders, a halt, and the evaluation closed by PortfolioEvaluated
    # with NO_STREAM. A second evaluation of the same portfolio and tick (a redelivery, another worker)
    # writes nothing at all, not even orders its own view of the market would have made.
    appends: list[tuple[str, list[NewEvent], int]] = [(order_id, [event], ANY) for order_id, event in orders]
    if portfolio_events:
        appends.append((portfolio_stream(item.portfolio_id), portfolio_events, ANY))
    appends.append((stream, [*evaluation_events, new_event(evaluated, item.portfolio_id, item.tick_id)], NO_STREAM))
    return Evaluation(evaluated, appends)


async def record_evaluation(ctx: ServiceContext, evaluation: Evaluation) -> PortfolioEvaluated | None:
    try:
        await ctx.rt.store.append_many(evaluation.appends)
    except (WrongExpectedVersion, DuplicateEventId):
        return None  # another worker finished the same evaluation first
    return evaluation.evaluated


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


# ------------------------------------------------------------------------------------------ commands


# The fields each command takes besides the spec's own (``open`` and ``apply`` take a portfolio spec).
_COMMAND_FIELDS: dict[str, frozenset[str]] = {
    "attach": frozenset({"portfolio", "strategy"}),
    "enable": frozenset({"portfolio", "strategy"}),
    "disable": frozenset({"portfolio", "strategy"}),
    "halt": frozenset({"portfolio", "reason"}),
    "resume": frozenset({"portfolio", "reason"}),
}


async def handle_command(ctx: ServiceContext, name: str, body: bytes) -> dict[str, Any]:
    """One ``<prefix>.cmd.portfolio.<name>`` request: JSON in, JSON out (``{"ok": ..}`` or a one-line
    ``{"error": ..}``, whatever the body: nothing a client sends goes unanswered or is echoed whole)."""
    from datetime import UTC

    at = datetime.now(UTC)  # operator commands happen now; trading decisions use tick times
    try:
        data = decode_command(body)
        allowed = _COMMAND_FIELDS.get(name)
        if allowed is not None and not set(data) <= allowed:
            unknown = sorted(set(data) - allowed)
            raise ConfigError(f"unknown field(s) {', '.join(shown(k) for k in unknown[:5])}")
        store = ctx.rt.store
        match name:
            case "open" | "apply":
                spec = parse_portfolio_spec(data)
                commands.check_trading_mode(spec, ctx.settings.trading_mode)
                if name == "open":
                    result = await commands.open_portfolio(store, spec, at)
                else:
                    result = await commands.apply_portfolio(store, spec, at)
            case "attach":
                strategy = data.get("strategy")
                if not isinstance(strategy, dict):
                    raise ConfigError("strategy: required (an object: kind, universe, ...)")
                result = await commands.attach_strategy(store, _name(data, "portfolio"), strategy, at)
            case "enable" | "disable":
                result = await commands.set_strategy_enabled(
                    store, _name(data, "portfolio"), _name(data, "strategy"), name == "enable", at
                )
            case "halt" | "resume":
                result = await commands.set_portfolio_halted(
                    store, _name(data, "portfolio"), name == "halt", reason_text(data.get("reason")), at
                )
            case _:
                raise ConfigError(
                    f"unknown command {shown(name)} (open, apply, attach, enable, disable, halt, resume)"
                )
    except (ValueError, RecursionError) as exc:  # InputRejected, ConfigError, CommandRefused, bad names
        return error_reply(exc)
    except Exception as exc:  # noqa: BLE001 - a request always gets an answer; the service keeps running
        log.error("portfolio command %s failed: %s", one_line(name, 40), safe_error(exc))
        return error_reply(commands.CommandRefused(f"portfolio command failed: {safe_error(exc)}"))
    return {"ok": True, "portfolio": result.portfolio_id, "changes": list(result.changes)}


def _name(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: required (a name)")
    return validate_name(value, key)


# --------------------------------------------------------------------------------------------- setup


async def setup(ctx: ServiceContext) -> None:
    subjects = ctx.rt.subjects
    caches = Caches()

    subscribe_ticks(
        ctx.consumers,
        subjects=subjects,
        service=SERVICE,
        job_type=JobType.STRATEGY_EXECUTION,
        runner=ctx.jobs,
        job=partial(strategy_execution, ctx, caches),
        prefetch=partial(prefetch_tick, ctx, caches),
        # Every evaluation is one atomic NO_STREAM append per portfolio and tick: a second run of a tick
        # writes nothing, so the job need not wait for its start to be recorded.
        idempotent_effects=True,
    )

    async def on_work(delivery: Delivery) -> None:
        try:
            item = _work_decoder.decode(delivery.data)
        except msgspec.DecodeError as exc:
            raise Reject(f"malformed work item: {exc}") from None
        await evaluate_portfolio(ctx, caches, item)

    subscribe_durable(
        ctx.consumers,
        subjects=subjects,
        service=SERVICE,
        subject=subjects.work(WORK_QUEUE),
        stream=subjects.work_stream,
        handler=on_work,
        durable=f"{SERVICE}_{WORK_QUEUE}",
        batch_size=8,
    )

    async def raw_body(message: NatsMessage) -> bytes:
        # The body as sent: decoded by handle_command, which answers whatever it is (FastStream's own
        # JSON decoding would raise on a deep or malformed body before the handler could answer).
        return message.body

    @ctx.bus.subscriber(subjects.cmd("portfolio.*"), queue=SERVICE, decoder=raw_body)
    async def on_command(message: NatsMessage) -> dict[str, Any]:
        raw = message.raw_message
        return await handle_command(ctx, raw.subject.rsplit(".", 1)[-1], raw.data)
