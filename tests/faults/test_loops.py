"""Finding: the relay and projection loops died for good after a PostgreSQL crash (asyncpg's
InternalClientError was missing from their retry lists), while the process stayed up and only logged
"background task projections stopped"."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import nats
import pytest

from eventstore import EventStore, NewEvent, RecordedEvent
from eventstore.faults import is_retryable
from eventstore.projections import Projection, ProjectionRunner
from eventstore.relay import Relay
from services.core import host
from services.core.embedded import EmbeddedPostgres
from services.core.subjects import Subjects
from services.stack import SERVICES
from tests.faults import dying_service
from tests.positions.helpers import settings_for
from tests.waiting import until

SECOND = uuid.uuid4()  # appended once PostgreSQL is back (a retried append writes it once)


class Seen(Projection):
    name = "seen"
    tables = ("seen",)

    async def setup(self, con: asyncpg.Connection) -> None:
        await con.execute("CREATE TABLE IF NOT EXISTS seen (event_id uuid PRIMARY KEY)")

    async def apply(self, con: asyncpg.Connection, events: list[RecordedEvent]) -> None:
        await con.executemany("INSERT INTO seen VALUES ($1)", [(e.event_id,) for e in events])


def test_one_classification_counts_every_server_error_and_no_bug() -> None:
    assert is_retryable(asyncpg.InternalClientError("cannot switch to state 15; another operation is in progress"))
    assert is_retryable(asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"))
    assert is_retryable(asyncpg.CannotConnectNowError("the database system is starting up"))
    assert is_retryable(asyncpg.AdminShutdownError("terminating connection due to administrator command"))
    assert is_retryable(asyncpg.TooManyConnectionsError("sorry, too many clients already"))
    assert is_retryable(ConnectionRefusedError(111, "Connection refused"))
    assert is_retryable(TimeoutError())
    assert is_retryable(nats.errors.NoServersError())
    assert not is_retryable(asyncpg.UniqueViolationError("duplicate key"))
    assert not is_retryable(asyncpg.UndefinedTableError("relation does not exist"))
    assert not is_retryable(ValueError("a bug"))


async def test_relay_and_projections_survive_a_postgresql_crash(
    private_postgres: EmbeddedPostgres, nats_url: str, subject_prefix: str
) -> None:
    store = await EventStore.connect(private_postgres.dsn())
    nc = await nats.connect(nats_url)
    subjects = Subjects(subject_prefix)
    await subjects.ensure_streams(nc.jetstream())
    stop = asyncio.Event()
    relay = Relay(store, nc, subjects)
    projections = ProjectionRunner(store, [Seen()])
    await projections.setup()
    loops = [asyncio.create_task(relay.run(stop)), asyncio.create_task(projections.run(stop))]
    try:
        await store.append("counter-a", [NewEvent(type="Incremented", data={"by": 1}, event_id=uuid.uuid4())])

        async def caught_up(n: int) -> bool:
            async with store.pool.acquire() as con:
                seen = await con.fetchval("SELECT count(*) FROM seen")
            return relay.published >= n and seen >= n

        async def appended() -> bool:
            await store.append("counter-a", [NewEvent(type="Incremented", data={"by": 2}, event_id=SECOND)])
            return True

        await until(lambda: caught_up(1), 60, "the first event published and projected", tolerate=is_retryable)
        await asyncio.to_thread(private_postgres.kill)
        await asyncio.sleep(1.5)  # both loops meet the dead server (and its broken connections) meanwhile
        await asyncio.to_thread(private_postgres.start, reuse=False)
        await until(appended, 60, "an append once PostgreSQL is back", tolerate=is_retryable)
        await until(lambda: caught_up(2), 60, "the second event published and projected", tolerate=is_retryable)
        assert not any(loop.done() for loop in loops)
        info = await nc.jetstream().stream_info(subjects.events_stream)
        assert info.state.messages == 2
    finally:
        stop.set()
        await asyncio.gather(*loops, return_exceptions=True)
        await nc.close()
        await store.close()


async def test_a_loop_that_dies_stops_serve_with_an_error(
    pg_dsn: str, nats_url: str, subject_prefix: str
) -> None:
    """A loop ending while the services run is not left behind as a healthy-looking process: the health
    state says so (for /readyz), and `openbell serve` stops with an error (exit 1 from the command)."""
    catalog = SERVICES.with_service(host.ServiceDefinition("dying", dying_service.setup))
    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    with pytest.raises(host.ServiceLoopDied, match=r"dying-loop.*a bug in the loop"):
        await asyncio.wait_for(host.serve_forever(["relay", "dying"], settings, catalog=catalog), 30)
    from services.core.health import current

    health = current()
    assert health is not None and not health.ready
    snapshot = health.snapshot()
    assert snapshot["loops"]["dying-loop"].startswith("stopped: ValueError")
