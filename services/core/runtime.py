"""Connecting a process to openbell's servers: the event store, NATS and JetStream streams.

When ``OPENBELL_NATS_URL`` / ``OPENBELL_DATABASE_URL`` are unset, the embedded nats-server and PostgreSQL
under ``OPENBELL_DATA_DIR`` are started (or reused when already running for that data dir).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from eventstore import AppendResult, EventStore
from services.core import metrics
from services.core.embedded import EmbeddedNats, EmbeddedPostgres
from services.core.settings import Settings, load_settings, split_nats_urls
from services.core.subjects import Subjects

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "openbell"


@dataclass
class Servers:
    """Where the servers are, and which of them this process started."""

    database_url: str
    nats_url: str
    embedded_postgres: EmbeddedPostgres | None = None
    embedded_nats: EmbeddedNats | None = None

    def describe(self) -> dict[str, str]:
        def origin(server: EmbeddedPostgres | EmbeddedNats | None) -> str:
            if server is None:
                return "external (from the environment)"
            return "embedded, started now" if server.started_here else "embedded, already running (reused)"

        return {"postgres": origin(self.embedded_postgres), "nats": origin(self.embedded_nats)}


async def _ensure_database(admin_dsn: str, name: str) -> None:
    con = await asyncpg.connect(admin_dsn)
    try:
        if not await con.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()


async def ensure_servers(settings: Settings) -> Servers:
    embedded_pg = embedded_nats = None
    if settings.database_url is not None:
        database_url = settings.database_url.get_secret_value()
    else:
        data_dir = settings.data_dir.resolve()
        embedded_pg = await asyncio.to_thread(EmbeddedPostgres(data_dir / "postgres").start)
        await _ensure_database(embedded_pg.dsn(), EMBEDDED_DATABASE)
        database_url = embedded_pg.dsn(EMBEDDED_DATABASE)
    if settings.nats_url is not None:
        nats_url = settings.nats_url
    else:
        embedded_nats = await asyncio.to_thread(EmbeddedNats(settings.data_dir.resolve() / "nats").start)
        nats_url = embedded_nats.url
    return Servers(database_url, nats_url, embedded_pg, embedded_nats)


@dataclass
class Runtime:
    settings: Settings
    servers: Servers
    store: EventStore
    nc: NatsClient
    js: JetStreamContext
    subjects: Subjects
    # Names this process in its append notices, so that it can ignore its own.
    instance: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def appended_subject(self) -> str:
        """Core-NATS notice published after each append, so relays in other processes wake at once. The
        body is ``<instance>:<global position>`` (see :func:`parse_append_notice`)."""
        return f"{self.subjects.prefix}.store.appended"


def parse_append_notice(body: bytes) -> tuple[str, int | None]:
    """(the appending process's instance, the append's global position or None when not given)."""
    instance, _, position = body.decode(errors="replace").partition(":")
    return instance, int(position) if position.isdigit() else None


async def connect_nats(url: str, name: str) -> NatsClient:
    """Connect to ``url``: one server, or the comma-separated servers of a cluster (any one will do, and the
    client fails over between them)."""
    return await nats.connect(
        split_nats_urls(url),
        name=name,
        max_reconnect_attempts=-1,  # a service waits out a NATS restart instead of dying
        reconnect_time_wait=0.5,
        connect_timeout=5,
    )


@contextlib.asynccontextmanager
async def connect_runtime(
    settings: Settings | None = None, *, name: str = "openbell", pool_size: int = 10
) -> AsyncIterator[Runtime]:
    settings = settings or load_settings()
    servers = await ensure_servers(settings)
    store = await EventStore.connect(servers.database_url, max_size=pool_size)
    try:
        nc = await connect_nats(servers.nats_url, name)
    except BaseException:
        await store.close()
        raise
    try:
        js = nc.jetstream()
        subjects = Subjects(settings.subject_prefix)
        await subjects.ensure_streams(
            js, dedupe_window=settings.dedupe_window_seconds, replicas=settings.stream_replicas
        )
        runtime = Runtime(settings, servers, store, nc, js, subjects)

        pending: set[asyncio.Task[None]] = set()  # keeps each notice alive until sent

        def announce(result: AppendResult) -> None:
            if nc.is_connected:
                body = f"{runtime.instance}:{result.last_global_position}".encode()
                task = asyncio.get_running_loop().create_task(nc.publish(runtime.appended_subject, body))
                pending.add(task)
                task.add_done_callback(pending.discard)

        store.add_append_listener(announce)
        store.add_append_listener(lambda result: metrics.appended(result.last_global_position))
        yield runtime
    finally:
        with contextlib.suppress(nats.errors.Error, OSError):
            await nc.drain()
        await store.close()
