"""The list of openbell's read-model projections, for the services that run them and for ``openbell replay``.

Each entry is ``module:factory``; the factory returns a ``Projection`` instance.
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime

from eventstore import ANY, EventStore
from eventstore.projections import Projection, ProjectionRunner
from services.core import metrics

PROJECTION_FACTORIES: tuple[str, ...] = (
    "services.core.jobs.projection:JobsProjection",
    "services.strategy.projection:StrategyProjection",
    "services.strategy.projection:EvaluationsProjection",
    "services.orders.projection:TradesProjection",
    "services.positions.projection:PortfolioProjection",
    "services.alerts.projection:AlertsProjection",
)


def known_projections() -> list[Projection]:
    projections: list[Projection] = []
    for entry in PROJECTION_FACTORIES:
        module_name, _, factory = entry.partition(":")
        projections.append(getattr(importlib.import_module(module_name), factory)())
    return projections


def report_stops(runner: ProjectionRunner, store: EventStore) -> None:
    """A projection that stops is also a metric (``openbell_projection_stopped``) and a notification
    (``openbell notifications``), besides the error in the log; ``openbell doctor`` shows it too."""

    async def on_stopped(name: str, position: int, reason: str) -> None:
        from services.core.events import new_event
        from services.model.events.alerts import NotificationRaised

        metrics.PROJECTION_STOPPED.labels(name).set(1)
        notification = NotificationRaised(
            kind="projection_stopped",
            portfolio_id=None,
            title=f"projection {name} stopped: its read model no longer follows the log",
            body=f"cannot apply the events after position {position}: {reason}",
            ref=f"{name}@{position}",
            at=datetime.now(UTC),  # when it was seen: a fact about this process, not a trading decision
        )
        await store.append(f"projection-{name}", [new_event(notification, name, str(position))], ANY)

    runner.on_stopped = on_stopped
