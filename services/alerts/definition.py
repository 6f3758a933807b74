"""What the alerts service provides to the host (:mod:`services.stack` lists every service):

``alert_price_check`` fires each alert once; the ``alert.*`` commands create, cancel and list alerts.
"""

from __future__ import annotations

from services.alerts.projection import AlertsProjection
from services.alerts.service import setup
from services.core.host import ServiceDefinition
from services.core.jobs.types import JobType

SERVICE = ServiceDefinition(
    name="alerts",
    setup=setup,
    projections=(AlertsProjection,),
    job_types=(JobType.ALERT_PRICE_CHECK,),
    commands=("alert.*",),
)
