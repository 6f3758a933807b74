"""What the positions service provides to the host (:mod:`services.stack` lists every service):

Fills into the books, position_sync against the broker, price_update and the day's portfolio_snapshot.
"""

from __future__ import annotations

from services.core.host import ServiceDefinition
from services.core.jobs.types import JobType
from services.positions.projection import PortfolioProjection
from services.positions.service import setup

SERVICE = ServiceDefinition(
    name="positions",
    setup=setup,
    projections=(PortfolioProjection,),
    job_types=(JobType.POSITION_SYNC, JobType.PRICE_UPDATE, JobType.PORTFOLIO_SNAPSHOT),
    commands=(),
)
