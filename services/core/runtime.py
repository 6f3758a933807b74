"""Connecting a process to openbell's servers: the event store, NATS and JetStream streams.

When ``OPENBELL_NATS_URL`` / ``OPENBELL_DATABASE_URL`` are unset, the embedded nats-server and PostgreSQL
under ``OPENBELL_DATA_DIR`` are used when running, started detached when not (``services.core.servers``).
Every connect is bounded: a server that cannot be reached within a few seconds ends the command with one
line (:class:`ServerUnreachable`); once connected, a NATS outage is one warning line, not a traceback per
reconnect attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
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
from services.core.servers import CONNECT_TIMEOUT_SECONDS, ServerUnreachable, ensure_embedded, redact_url
from services.core.settings import Settings, load_settings
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
            return "embedded, started now" if server.started_here else "embedded, already running (used)"

        return {"postgres": origin(self.embedded_postgres), "nats": origin(self.embedded_nats)}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "no answer"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text or type(exc).__name__


# What asyncpg raises when it cannot connect: refused, unknown host, wrong role or password, no database.
_PG_CONNECT_ERRORS = (OSError, TimeoutError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def connect_postgres(dsn: str, *, timeout: float = CONNECT_TIMEOUT_SECONDS) -> asyncpg.Connection:
    """One connection, or :class:`ServerUnreachable` within ``timeout``."""
    try:
        return await asyncpg.connect(dsn, timeout=timeout)
    except _PG_CONNECT_ERRORS as exc:
        raise ServerUnreachable(f"cannot reach PostgreSQL at {redact_url(dsn)}: {_reason(exc)}") from None


async def connect_store(dsn: str, *, max_size: int = 10, timeout: float = CONNECT_TIMEOUT_SECONDS) -> EventStore:
    """The event store, or :class:`ServerUnreachable` when its server does not answer within ``timeout``."""
    # A first connection with a timeout: the pool's own connects would wait a minute each.
    con = await connect_postgres(dsn, timeout=timeout)
    await con.close()
    try:
        return await asyncio.wait_for(EventStore.connect(dsn, max_size=max_size), timeout * 4)
    except _PG_CONNECT_ERRORS as exc:
        raise ServerUnreachable(f"cannot reach PostgreSQL at {redact_url(dsn)}: {_reason(exc)}") from None


async def _ensure_database(admin_dsn: str, name: str) -> None:
    con = await connect_postgres(admin_dsn)
    try:
        if not await con.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()


async def ensure_servers(settings: Settings) -> Servers:
    embedded_pg: EmbeddedPostgres | None = None
    embedded_nats: EmbeddedNats | None = None
    database_url = nats_url = ""
    if settings.database_url is not None:
        database_url = settings.database_url.get_secret_value()
    if settings.nats_url is not None:
        nats_url = settings.nats_url
    embedded = None
    if settings.database_url is None or settings.nats_url is None:
        embedded = await asyncio.to_thread(
            ensure_embedded, settings.data_dir,
            postgres=settings.database_url is None, nats=settings.nats_url is None,
        )
        embedded_pg, embedded_nats = embedded.postgres, embedded.nats
    if embedded_pg is not None:
        await _ensure_database(embedded_pg.dsn(), EMBEDDED_DATABASE)
        database_url = embedded_pg.dsn(EMBEDDED_DATABASE)
    if embedded_nats is not None:
        nats_url = embedded_nats.url
    return Servers(database_url, nats_url, embedded_pg, embedded_nats)


class _OncePerOutage(logging.Filter):
    """asyncpg's pool logs a traceback every time it fails to reconnect its minimum connections: one line
    (no traceback) per minute of outage is enough; whoever uses the pool reports the outage itself."""

    def __init__(self, every: float = 60.0) -> None:
        super().__init__()
        self.every = every
        self.last = -every

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        now = time.monotonic()
        if now - self.last < self.every:
            return False
        self.last = now
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            record.msg, record.args = f"{record.getMessage()} ({reason})", ()
        record.exc_info = None
        record.exc_text = None
        return True


logging.getLogger("asyncpg.pool").addFilter(_OncePerOutage())


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


async def connect_nats(url: str, name: str, *, timeout: float = CONNECT_TIMEOUT_SECONDS) -> NatsClient:
    """A client that waits out NATS restarts once connected (one warning line when the connection is lost,
    one when it is back), or :class:`ServerUnreachable` when the first connect does not succeed within
    ``timeout`` (at once when refused)."""
    where = redact_url(url)
    errors: list[BaseException] = []
    refused = asyncio.Event()
    state = {"connected": False, "down": False}

    async def on_error(exc: Exception) -> None:
        # nats-py reports every failed reconnect attempt here: kept for the one-line message, not logged.
        errors.append(exc)
        del errors[:-1]
        # A refused connection or credentials will not change within seconds: say so at once.
        if isinstance(exc, nats.errors.AuthorizationError | ConnectionRefusedError) and not state["connected"]:
            refused.set()
        log.debug("nats %s: %r", where, exc)

    async def on_disconnected() -> None:
        if state["connected"] and not state["down"] and not (nc.is_closed or nc.is_draining):
            state["down"] = True
            log.warning("lost NATS at %s; reconnecting every 0.5s until it is back", where)

    async def on_reconnected() -> None:
        if state["down"]:
            state["down"] = False
            log.warning("NATS at %s is back", where)

    nc = NatsClient()
    connecting = asyncio.ensure_future(nc.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,  # a service waits out a NATS restart instead of dying
        reconnect_time_wait=0.5,
        connect_timeout=min(2.0, timeout),
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
    ))
    refusal = asyncio.ensure_future(refused.wait())
    try:
        await asyncio.wait({connecting, refusal}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        refusal.cancel()
    if connecting.done() and connecting.exception() is None:
        state["connected"] = True
        return nc
    connecting.cancel()
    await asyncio.gather(connecting, return_exceptions=True)  # (a cancellation of ours still propagates)
    with contextlib.suppress(nats.errors.Error, OSError):
        await nc.close()
    if connecting.done() and not connecting.cancelled() and connecting.exception() is not None:
        errors.append(connecting.exception())  # type: ignore[arg-type]
    reason = _reason(errors[-1]) if errors else f"no answer within {timeout:.0f}s"
    raise ServerUnreachable(f"cannot reach NATS at {where}: {reason}")


@contextlib.asynccontextmanager
async def connect_runtime(
    settings: Settings | None = None, *, name: str = "openbell", pool_size: int = 10
) -> AsyncIterator[Runtime]:
    settings = settings or load_settings()
    servers = await ensure_servers(settings)
    store = await connect_store(servers.database_url, max_size=pool_size)
    try:
        nc = await connect_nats(servers.nats_url, name)
    except BaseException:
        await store.close()
        raise
    try:
        js = nc.jetstream()
        subjects = Subjects(settings.subject_prefix)
        await subjects.ensure_streams(js, dedupe_window=settings.dedupe_window_seconds)
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
