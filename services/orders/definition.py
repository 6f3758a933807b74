"""What the orders service provides to the host (:mod:`services.stack` lists every service):

It submits every OrderRequested to the broker and follows each order to a final state (order_status_check, and the
broker's trade updates).
"""

from __future__ import annotations

from services.core.host import ServiceDefinition
from services.core.jobs.types import JobType
from services.orders.projection import TradesProjection
from services.orders.service import setup

SERVICE = ServiceDefinition(
    name="orders",
    setup=setup,
    projections=(TradesProjection,),
    job_types=(JobType.ORDER_STATUS_CHECK,),
    commands=(),
)
