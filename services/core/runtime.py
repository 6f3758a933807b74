"""Connecting a process to openbell's servers: the event store, NATS and JetStream streams.

When ``OPENBELL_NATS_URL`` / ``OPENBELL_DATABASE_URL`` are unset, the embedded nats-server and PostgreSQL
under ``OPENBELL_DATA_DIR`` are used when running, started detached when not (``services.core.servers``).
Every connect is bounded: a server that cannot be reached within a few seconds ends the command with one
line (:class:`ServerUnreachable`); once connected, a NATS outage is one warning line, not a traceback per
reconnect attempt The embedded servers' generated
credentials are used: each NATS connection authenticates as a role (services/core/nats_auth.py), the event
store is migrated by the owner role and used through the service role (services/core/dbroles.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from eventstore import AppendResult, EventStore
from eventstore.projections import Projection
from services.core import metrics
from services.core.dbroles import ensure_roles, migrate_and_grant, role_of
from services.core.embedded import PG_OWNER_ROLE, PG_SERVICE_ROLE, EmbeddedNats, EmbeddedPostgres
from services.core.servers import CONNECT_TIMEOUT_SECONDS, ServerUnreachable, ensure_embedded, redact_url
from services.core.settings import Settings, SettingsError, load_settings, split_nats_urls, websocket_origins
from services.core.subjects import Subjects

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "openbell"


@dataclass(frozen=True)
class NatsCredentials:
    """How this process's NATS connections authenticate: the embedded server's generated password of each
    role, or the one identity the settings give for an external server (OPENBELL_NATS_*)."""

    role_passwords: dict[str, str] | None = field(default=None, repr=False)
    options: dict[str, Any] = field(default_factory=dict, repr=False)

    def connect_options(self, role: str) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` (and FastStream's NatsBroker) as ``role``."""
        if self.role_passwords is not None:
            if role not in self.role_passwords:
                raise ValueError(f"unknown NATS role {role!r}")
            return {"user": role, "password": self.role_passwords[role]}
        return dict(self.options)

    @property
    def per_role(self) -> bool:
        """True when each role has an identity of its own (the embedded server)."""
        return self.role_passwords is not None


def external_nats_credentials(settings: Settings) -> NatsCredentials:
    options: dict[str, Any] = {}
    if settings.nats_user is not None:
        options["user"] = settings.nats_user
        if settings.nats_password is not None:
            options["password"] = settings.nats_password.get_secret_value()
    if settings.nats_token is not None:
        options["token"] = settings.nats_token.get_secret_value()
    if settings.nats_nkey_seed is not None:
        options["nkeys_seed_str"] = settings.nats_nkey_seed.get_secret_value()
    if settings.nats_creds_file is not None:
        options["user_credentials"] = str(settings.nats_creds_file)
    if settings.nats_tls_ca is not None or settings.nats_tls_cert is not None:
        context = ssl.create_default_context(
            cafile=str(settings.nats_tls_ca) if settings.nats_tls_ca is not None else None)
        if settings.nats_tls_cert is not None:
            key = str(settings.nats_tls_key) if settings.nats_tls_key is not None else None
            context.load_cert_chain(str(settings.nats_tls_cert), key)
        options["tls"] = context
    return NatsCredentials(options=options)


def faststream_options(options: dict[str, Any]) -> dict[str, Any]:
    """``nats.connect`` credentials (:meth:`NatsCredentials.connect_options`) as FastStream's ``security``."""
    from faststream.nats.security import NatsCredentials as CredsFile
    from faststream.nats.security import NatsNKey, NatsSecurity, NatsToken, NatsUserPassword

    tls = options.get("tls")
    security: NatsSecurity | None = None
    if "user" in options:
        security = NatsUserPassword(username=options["user"], password=options.get("password", ""), ssl_context=tls)
    elif "token" in options:
        security = NatsToken(token=options["token"], ssl_context=tls)
    elif "nkeys_seed_str" in options:
        security = NatsNKey.from_seed(options["nkeys_seed_str"], ssl_context=tls)
    elif "user_credentials" in options:
        security = CredsFile.from_file(options["user_credentials"], ssl_context=tls)
    elif tls is not None:
        security = NatsSecurity(ssl_context=tls)
    return {} if security is None else {"security": security}


@dataclass
class Servers:
    """Where the servers are, and which of them this process started."""

    # The services' role (least privilege); never logged: it may hold a password.
    database_url: str = field(repr=False)
    nats_url: str
    embedded_postgres: EmbeddedPostgres | None = None
    embedded_nats: EmbeddedNats | None = None
    # The owner's URL, for migrations (None: the schema is someone else's to migrate).
    database_owner_url: str | None = field(default=None, repr=False)
    nats_credentials: NatsCredentials = field(default_factory=NatsCredentials)

    def nats_options(self, role: str) -> dict[str, Any]:
        return self.nats_credentials.connect_options(role)

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
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        raise CredentialsRefused(
            f"PostgreSQL at {redact_url(dsn)} refused the connection: {_reason(exc)}"
            " (OPENBELL_DATABASE_URL / OPENBELL_DATABASE_OWNER_URL or the data dir's credentials.json)") from None
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


async def ensure_servers(settings: Settings) -> Servers:
    embedded_pg: EmbeddedPostgres | None = None
    embedded_nats: EmbeddedNats | None = None
    owner_url: str | None = None
    database_url = nats_url = ""
    credentials = NatsCredentials()
    if settings.database_url is not None:
        database_url = settings.database_url.get_secret_value()
        if settings.database_owner_url is not None:
            owner_url = settings.database_owner_url.get_secret_value()
    if settings.nats_url is not None:
        nats_url = settings.nats_url
        credentials = external_nats_credentials(settings)
    if settings.database_url is None or settings.nats_url is None:
        embedded = await asyncio.to_thread(
            ensure_embedded, settings.data_dir,
            postgres=settings.database_url is None, nats=settings.nats_url is None,
            prefix=settings.subject_prefix, websocket_origins=websocket_origins(settings),
        )
        embedded_pg, embedded_nats = embedded.postgres, embedded.nats
    if embedded_pg is not None:
        passwords = {role: embedded_pg.password(role) for role in (PG_OWNER_ROLE, PG_SERVICE_ROLE)}
        await ensure_roles(embedded_pg.dsn(), EMBEDDED_DATABASE, embedded_pg.dsn(EMBEDDED_DATABASE),
                           passwords, PG_OWNER_ROLE, PG_SERVICE_ROLE)
        owner_url = embedded_pg.dsn(EMBEDDED_DATABASE, role=PG_OWNER_ROLE)
        database_url = embedded_pg.dsn(EMBEDDED_DATABASE, role=PG_SERVICE_ROLE)
    if embedded_nats is not None:
        nats_url = embedded_nats.url
        credentials = NatsCredentials(role_passwords=embedded_nats.passwords())
    return Servers(database_url, nats_url, embedded_pg, embedded_nats, owner_url, credentials)


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
    # The NATS role of ``nc`` (services/core/nats_auth.py).
    role: str = "operator"
    # Names this process in its append notices, so that it can ignore its own.
    instance: str = field(default_factory=lambda: uuid.uuid4().hex)
    _extra_connections: list[NatsClient] = field(default_factory=list, repr=False)

    def nats_options(self, role: str | None = None) -> dict[str, Any]:
        return self.servers.nats_options(role or self.role)

    async def connect_as(self, role: str, name: str) -> NatsClient:
        """A NATS connection as ``role``: this runtime's own when it is that role (or when every role
        shares one identity: an external server), else a new one, closed with the runtime."""
        if role == self.role or not self.servers.nats_credentials.per_role:
            return self.nc
        nc = await connect_nats(self.servers.nats_url, name, **self.nats_options(role))
        self._extra_connections.append(nc)
        return nc

    @property
    def appended_subject(self) -> str:
        """Core-NATS notice published after each append, so relays in other processes wake at once. The
        body is ``<instance>:<global position>`` (see :func:`parse_append_notice`)."""
        return f"{self.subjects.prefix}.store.appended"


def parse_append_notice(body: bytes) -> tuple[str, int | None]:
    """(the appending process's instance, the append's global position or None when not given)."""
    instance, _, position = body.decode(errors="replace").partition(":")
    return instance, int(position) if position.isdigit() else None



class CredentialsRefused(SettingsError):
    """A server refused this process's credentials: a misconfiguration, reported in one line (exit 2)."""


async def connect_nats(
    url: str, name: str, *, timeout: float = CONNECT_TIMEOUT_SECONDS, **credentials: Any
) -> NatsClient:
    """A client that waits out NATS restarts once connected (one warning line when the connection is lost,
    one when it is back), or :class:`ServerUnreachable` when the first connect does not succeed within
    ``timeout`` (at once when refused). ``url``: one server, or the comma-separated servers of a cluster
    (any one will do, and the client fails over between them). ``credentials``: ``Servers.nats_options(role)``
    (user/password, token, nkey, creds file, TLS); a refused identity is :class:`CredentialsRefused` at once
    (nats-py would otherwise retry it forever: a service waits out a NATS restart, not a wrong password)."""
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
        split_nats_urls(url),
        name=name,
        max_reconnect_attempts=-1,  # a service waits out a NATS restart instead of dying
        reconnect_time_wait=0.5,
        connect_timeout=min(2.0, timeout),
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
        **credentials,
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
    if errors and isinstance(errors[-1], nats.errors.AuthorizationError):
        who = credentials.get("user") or "this identity"
        raise CredentialsRefused(
            f"NATS at {where} refused the credentials of {who} (OPENBELL_NATS_* settings or the data dir's"
            " credentials.json)")
    reason = _reason(errors[-1]) if errors else f"no answer within {timeout:.0f}s"
    raise ServerUnreachable(f"cannot reach NATS at {where}: {reason}")


def _where(url: str) -> str:
    """Host and port of a URL, without the credentials it may carry."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


async def _ensure_streams(servers: Servers, settings: Settings, subjects: Subjects, nc: NatsClient, name: str) -> None:
    """Streams are created and updated by the admin role only: with the embedded server this process
    holds its password and uses it for that; with an external server the process's own identity must
    be allowed to, or the streams must exist already."""
    if not servers.nats_credentials.per_role:
        await subjects.ensure_streams(
            nc.jetstream(), dedupe_window=settings.dedupe_window_seconds, replicas=settings.stream_replicas
        )
        return
    admin = await connect_nats(servers.nats_url, f"{name}-setup", **servers.nats_options("admin"))
    try:
        await subjects.ensure_streams(
            admin.jetstream(), dedupe_window=settings.dedupe_window_seconds, replicas=settings.stream_replicas
        )
    finally:
        await admin.close()


async def migrate_database(servers: Servers, projections: Sequence[Projection] = ()) -> None:
    """The owner runs the migrations (the event store's, and the tables of ``projections``' read models)
    and grants the service role its privileges (when we have its URL)."""
    if servers.database_owner_url is not None:
        await migrate_and_grant(servers.database_owner_url, role_of(servers.database_url), projections)


@contextlib.asynccontextmanager
async def connect_runtime(
    settings: Settings | None = None,
    *,
    name: str = "openbell",
    pool_size: int = 10,
    role: str = "operator",
    projections: Sequence[Projection] = (),
) -> AsyncIterator[Runtime]:
    """``role``: the NATS role of the runtime's connection (services/core/nats_auth.py): ``operator`` for
    the CLI, ``services``/``clock``/``relay`` for services, ``admin`` for the demo. ``projections``: the
    read models whose tables the owner creates if missing (the composition root, :mod:`services.stack`,
    passes them all)."""
    settings = settings or load_settings()
    servers = await ensure_servers(settings)
    try:
        await migrate_database(servers, projections)
        store = await connect_store(servers.database_url, max_size=pool_size)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        raise CredentialsRefused(
            f"PostgreSQL refused the connection: {str(exc).splitlines()[0]}"
            " (OPENBELL_DATABASE_URL / OPENBELL_DATABASE_OWNER_URL or the data dir's credentials.json)") from None
    try:
        nc = await connect_nats(servers.nats_url, name, **servers.nats_options(role))
    except BaseException:
        await store.close()
        raise
    runtime: Runtime | None = None
    try:
        js = nc.jetstream()
        subjects = Subjects(settings.subject_prefix)
        await _ensure_streams(servers, settings, subjects, nc, name)
        runtime = Runtime(settings, servers, store, nc, js, subjects, role=role)
        ready = runtime

        pending: set[asyncio.Task[None]] = set()  # keeps each notice alive until sent

        def announce(result: AppendResult) -> None:
            if nc.is_connected:
                body = f"{ready.instance}:{result.last_global_position}".encode()
                task = asyncio.get_running_loop().create_task(nc.publish(ready.appended_subject, body))
                pending.add(task)
                task.add_done_callback(pending.discard)

        store.add_append_listener(announce)
        store.add_append_listener(lambda result: metrics.appended(result.last_global_position))
        yield runtime
    finally:
        for extra in runtime._extra_connections if runtime is not None else []:
            with contextlib.suppress(nats.errors.Error, OSError):
                await extra.drain()
        with contextlib.suppress(nats.errors.Error, OSError):
            await nc.drain()
        await store.close()
