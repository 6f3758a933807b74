"""The positions service's wiring: the fill consumer and the position_sync, price_update and
portfolio_snapshot jobs, each in a module of its own (``fills``, ``position_sync``, ``price_update``,
``portfolio_snapshot``, sharing ``shell``). The decisions are pure (``services.model.ledger``,
``reconcile``, ``valuation``, ``planning``); the job modules load state, call the broker, append events
and publish the live feeds.

Streams written:

- ``portfolio-<portfolio_id>``: FillApplied, PositionReconciled, PortfolioHalted (position_sync's halt
  policy), always at the version that was folded (``books.append_to_portfolio``);
- ``portfolio-unassigned``: PositionReconciled of positions no single portfolio owns;
- ``discrepancy-<SYMBOL>``: PositionDiscrepancyDetected / Resolved, SymbolQuarantined / QuarantineLifted,
  appended at the version folded, so two sync runs at once cannot report one discrepancy twice;
- ``quotes-<tick_id>``: the one QuotesObserved of a price_update tick;
- ``snapshot-<portfolio_id>-<YYYY-MM-DD>``: the one PortfolioSnapshotTaken of a trading day (NO_STREAM).

Feeds (core NATS, JSON): ``<prefix>.feed.fill.<portfolio_id>``, ``<prefix>.feed.price.<SYMBOL>`` (a dot
in a symbol becomes ``_``: ``BRK.B`` -> ``BRK_B``), ``<prefix>.feed.snapshot.<portfolio_id>``.
"""

from __future__ import annotations

from services.core.host import ServiceContext
from services.core.jobs.consumer import subscribe_durable, subscribe_ticks
from services.core.jobs.types import JobType
from services.positions.fills import FILL_EVENT_TYPES, FillConsumer
from services.positions.portfolio_snapshot import PortfolioSnapshot
from services.positions.position_sync import PositionSync
from services.positions.price_update import PriceUpdate
from services.positions.settings import load_positions_settings

SERVICE = "positions"


async def setup(ctx: ServiceContext) -> None:
    settings = load_positions_settings()
    fills = FillConsumer(ctx, settings)
    subjects = ctx.rt.subjects
    for event_type in FILL_EVENT_TYPES:
        subscribe_durable(
            ctx.consumers,
            subjects=subjects,
            service=SERVICE,
            subject=subjects.event("order", event_type),
            stream=subjects.events_stream,
            handler=fills.on_fill,
        )
    jobs = {
        JobType.POSITION_SYNC: PositionSync(ctx, settings).position_sync,
        JobType.PRICE_UPDATE: PriceUpdate(ctx, settings).price_update,
        JobType.PORTFOLIO_SNAPSHOT: PortfolioSnapshot(ctx, settings).portfolio_snapshot,
    }
    for job_type, job in jobs.items():
        subscribe_ticks(ctx.consumers, subjects=subjects, service=SERVICE, job_type=job_type, runner=ctx.jobs, job=job)
