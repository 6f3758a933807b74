"""Finding: OPENBELL_ACK_WAIT_SECONDS was honoured only by the orders service (strategy hard-coded 60 s,
positions and alerts 30 s), so a killed worker's message waited that long whatever was configured."""

from __future__ import annotations

from nats.aio.client import Client as NatsClient

from services import stack
from services.core.jobs.types import JobType
from services.core.settings import load_settings
from services.core.subjects import Subjects
from tests.positions.helpers import sim_factory


async def test_every_consumer_of_every_service_uses_the_configured_ack_wait(
    pg_dsn: str, nats_url: str, nc: NatsClient, subject_prefix: str
) -> None:
    settings = load_settings(
        nats_url=nats_url, database_url=pg_dsn, subject_prefix=subject_prefix, ack_wait_seconds=7.0, max_deliver=3
    )
    services = ["strategy", "orders", "positions", "alerts"]
    async with stack.hosted(services, settings, broker_factory=sim_factory(pg_dsn), virtual=True):
        pass
    subjects = Subjects(subject_prefix)
    js = nc.jetstream()
    seen: dict[str, tuple[float, int]] = {}
    for stream in (subjects.ticks_stream, subjects.events_stream, subjects.work_stream):
        for info in await js.consumers_info(stream):
            seen[info.name] = (info.config.ack_wait, info.config.max_deliver)
    # every service has consumers, and all of them wait 7 s; none is dropped by the server after a few
    # deliveries (openbell dead-letters after OPENBELL_MAX_DELIVER failures of a handler's own)
    assert {name.split("_", 1)[0] for name in seen} == set(services)
    assert set(seen.values()) == {(7.0, -1)}, seen
    # ... and each service consumes exactly the ticks its definition declares (services/stack.py).
    ticks = {name for name in seen if name.endswith(tuple(job.value for job in JobType))}
    declared = {f"{d.name}_{job.value}" for d in stack.SERVICES.resolve(services) for job in d.job_types}
    assert ticks == declared and len(declared) == len(JobType)
