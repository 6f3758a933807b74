"""The platform's own read model (the job history) and how a projection that stops is reported.

Each service names the projections of the read models it owns in its ``ServiceDefinition``; the
composition root (:mod:`services.stack`) gathers them all for the host and for ``openbell replay``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from eventstore import ANY, EventStore
from eventstore.projections import Projection, ProjectionRunner
from services.core import metrics
from services.core.jobs.projection import JobsProjection

# The job history's projection: it belongs to the platform (every job of every service records there).
PLATFORM_PROJECTIONS: tuple[Callable[[], Projection], ...] = (JobsProjection,)


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
