"""The list of openbell's read-model projections, for the services that run them and for ``openbell replay``.

Each entry is ``module:factory``; the factory returns a ``Projection`` instance.
"""

from __future__ import annotations

import importlib

from eventstore.projections import Projection

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
