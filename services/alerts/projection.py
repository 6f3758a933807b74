"""Read models of alerts and notifications, derived from the event log alone (a rebuild equals live).

- ``alerts``: one row per alert: its spec, ``status`` (active | triggered | removed), ``active``, when
  and at which price it fired.
- ``notifications``: what a person is told: order fills, partial fills, cancels, expiries and rejections
  (from the order events themselves, through ``services.alerts.notifications``), refusals by risk,
  triggered alerts, tripped job breakers, halted portfolios, position discrepancies, and every
  NotificationRaised. The row id is the notification's event id, derived from its cause, so the same
  notification reached by two paths (an order event and a NotificationRaised made from it) is one row.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

import asyncpg

from eventstore import RecordedEvent
from eventstore.projections import Projection
from services.alerts.notifications import order_notification
from services.core.events import registry
from services.core.jobs.events import JobCircuitOpened
from services.model.events.alerts import AlertCreated, AlertRemoved, AlertTriggered, NotificationRaised
from services.model.events.orders import OrderCanceled, OrderExpired, OrderFilled, OrderPartiallyFilled, OrderRejected
from services.model.events.positions import PositionDiscrepancyDetected
from services.model.events.strategy import OrderRejectedByRisk, PortfolioHalted

DDL = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id text PRIMARY KEY,
    symbol text NOT NULL,
    condition text NOT NULL,
    threshold numeric NOT NULL,
    reference_price numeric,
    portfolio_id text,
    status text NOT NULL,
    active boolean NOT NULL,
    created_at timestamptz NOT NULL,
    triggered_at timestamptz,
    triggered_price numeric,
    removed_at timestamptz
);
CREATE INDEX IF NOT EXISTS alerts_active ON alerts (symbol) WHERE active;
CREATE TABLE IF NOT EXISTS notifications (
    id uuid PRIMARY KEY,
    position bigint NOT NULL,
    kind text NOT NULL,
    portfolio_id text,
    title text NOT NULL,
    body text NOT NULL,
    ref text NOT NULL,
    at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_recent ON notifications (position DESC);
"""

_ORDER_EVENTS = (OrderFilled, OrderPartiallyFilled, OrderCanceled, OrderRejected, OrderExpired, OrderRejectedByRisk)
_EVENTS = (
    AlertCreated, AlertRemoved, AlertTriggered, NotificationRaised, JobCircuitOpened, PortfolioHalted,
    PositionDiscrepancyDetected, *_ORDER_EVENTS,
)


class AlertsProjection(Projection):
    name: ClassVar[str] = "alerts"
    tables: ClassVar[tuple[str, ...]] = ("alerts", "notifications")
    event_types: ClassVar[frozenset[str] | None] = frozenset(cls.__name__ for cls in _EVENTS)

    async def setup(self, con: asyncpg.Connection) -> None:
        await con.execute(DDL)

    async def apply(self, con: asyncpg.Connection, events: list[RecordedEvent]) -> None:
        for recorded in events:
            await self._apply_one(con, recorded, registry.decode(recorded))

    async def _apply_one(self, con: asyncpg.Connection, recorded: RecordedEvent, event: Any) -> None:
        match event:
            case AlertCreated():
                await con.execute(
                    """INSERT INTO alerts (alert_id, symbol, condition, threshold, reference_price, portfolio_id,
                                           status, active, created_at)
                       VALUES ($1, $2, $3, $4, $5, $6, 'active', true, $7) ON CONFLICT DO NOTHING""",
                    event.alert_id, event.symbol, event.condition, event.threshold, event.reference_price,
                    event.portfolio_id, event.at,
                )
            case AlertRemoved():
                await con.execute(
                    """UPDATE alerts SET active = false, removed_at = $2,
                           status = CASE WHEN status = 'triggered' THEN status ELSE 'removed' END
                       WHERE alert_id = $1""",
                    event.alert_id, event.at,
                )
            case AlertTriggered():
                await con.execute(
                    """UPDATE alerts SET active = false, status = 'triggered', triggered_at = $2, triggered_price = $3
                       WHERE alert_id = $1 AND triggered_at IS NULL""",
                    event.alert_id, event.at, event.price,
                )
            case NotificationRaised():
                await _notify(con, recorded.event_id, recorded.global_position, event)
            case JobCircuitOpened():
                await _insert(
                    con, recorded.event_id, recorded.global_position, "breaker", None,
                    f"Job {event.job_type} stopped: circuit breaker open",
                    f"{event.consecutive_failures} consecutive failures; last: {event.last_error}; "
                    f"re-enable with `openbell jobs enable {event.job_type}`",
                    event.job_type, event.opened_at,
                )
            case PortfolioHalted():
                await _insert(
                    con, recorded.event_id, recorded.global_position, "halt", event.portfolio_id,
                    f"Portfolio {event.portfolio_id} halted", event.reason, event.rule or "operator", event.at,
                )
            case PositionDiscrepancyDetected():
                await _insert(
                    con, recorded.event_id, recorded.global_position, "discrepancy", None,
                    f"Position discrepancy in {event.symbol}: {event.kind} ({event.policy})",
                    f"ours {event.ours_qty}, broker {event.broker_qty}", event.symbol, event.at,
                )
            case _ if isinstance(event, _ORDER_EVENTS):
                made = order_notification(event)
                if made is not None:
                    assert isinstance(made.data, NotificationRaised)
                    await _notify(con, made.event_id, recorded.global_position, made.data)


async def _notify(con: asyncpg.Connection, event_id: uuid.UUID, position: int, n: NotificationRaised) -> None:
    await _insert(con, event_id, position, n.kind, n.portfolio_id, n.title, n.body, n.ref, n.at)


async def _insert(
    con: asyncpg.Connection, event_id: uuid.UUID, position: int, kind: str, portfolio_id: str | None,
    title: str, body: str, ref: str, at: datetime,
) -> None:
    await con.execute(
        """INSERT INTO notifications (id, position, kind, portfolio_id, title, body, ref, at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING""",
        event_id, position, kind, portfolio_id, title, body, ref, at,
    )

