"""The composition root: the one list of openbell's services, and the host and read models built from it.

Every other module knows services only through what they declare (``ServiceDefinition``, in each service's
``definition.py``); this is the one place that names them all. Only the command line (``openbell serve``,
``demo``, ``replay``, ``setup``) and tests import it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from eventstore.projections import Projection
from services.alerts import queries as alerts_queries
from services.alerts.definition import SERVICE as ALERTS
from services.clock.service_host import SERVICE as CLOCK
from services.core import host, runtime
from services.core.host import Catalog, ServiceContext
from services.core.projection_service import SERVICE as PROJECTIONS
from services.core.relay_service import SERVICE as RELAY
from services.core.runtime import Runtime
from services.core.settings import Settings
from services.model.reads import ReadModels
from services.orders import queries as orders_queries
from services.orders.definition import SERVICE as ORDERS
from services.positions import queries as positions_queries
from services.positions.definition import SERVICE as POSITIONS
from services.strategy.definition import SERVICE as STRATEGY
from services.web.service import SERVICE as WEB

# What a service may read of another's read model: the owners' query functions.
READS = ReadModels(
    committed_orders=orders_queries.committed_orders,
    quarantined_symbols=positions_queries.quarantined_symbols,
    day_start_equity=positions_queries.day_start_equity,
    open_order_symbols=orders_queries.open_order_symbols,
    active_alert_symbols=alerts_queries.active_alert_symbols,
    latest_price=positions_queries.latest_price,
)

# In the order they start (it matters only for the logs).
SERVICES = Catalog((RELAY, PROJECTIONS, CLOCK, STRATEGY, ORDERS, POSITIONS, ALERTS, WEB), READS)


def all_projections() -> list[Projection]:
    """Every read model's projection (for ``openbell replay``, the demo, and the database setup)."""
    return SERVICES.projections()


def connect_runtime(
    settings: Settings | None = None, **options: Any
) -> contextlib.AbstractAsyncContextManager[Runtime]:
    """Connect to the servers as :func:`services.core.runtime.connect_runtime` does, with every read model's
    tables created if missing (a command may read one before any service ran)."""
    return runtime.connect_runtime(settings, projections=all_projections(), **options)


def hosted(
    names: Sequence[str], settings: Settings | None = None, *, catalog: Catalog = SERVICES, **options: Any
) -> contextlib.AbstractAsyncContextManager[ServiceContext]:
    """Start the named services in this process (see :func:`services.core.host.hosted`)."""
    return host.hosted(names, settings, catalog=catalog, **options)


async def serve_forever(
    names: Sequence[str],
    settings: Settings | None = None,
    *,
    catalog: Catalog = SERVICES,
    virtual: bool = False,
    until: Callable[[ServiceContext], Awaitable[None]] | None = None,
) -> None:
    """Run the named services until stopped (see :func:`services.core.host.serve_forever`)."""
    await host.serve_forever(names, settings, catalog=catalog, virtual=virtual, until=until)


__all__ = ["SERVICES", "all_projections", "connect_runtime", "hosted", "serve_forever"]
