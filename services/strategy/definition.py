"""What the strategy service provides to the host (:mod:`services.stack` lists every service):

``strategy_execution`` evaluates every enabled portfolio and requests its orders; the ``portfolio.*`` commands create,
change and list portfolios.
"""

from __future__ import annotations

from services.core.host import ServiceDefinition
from services.core.jobs.types import JobType
from services.strategy.projection import EvaluationsProjection, StrategyProjection
from services.strategy.service import setup

SERVICE = ServiceDefinition(
    name="strategy",
    setup=setup,
    projections=(StrategyProjection, EvaluationsProjection),
    job_types=(JobType.STRATEGY_EXECUTION,),
    commands=("portfolio.*",),
)
