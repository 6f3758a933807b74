"""The service host: runs one or more openbell services in one process.

Every service declares what it provides in a :class:`ServiceDefinition` (its ``definition.py``, or beside
its setup for the platform's own services): ``setup(ctx)``, which registers its durable JetStream consumers
on ``ctx.consumers``, its request/reply commands on ``ctx.bus`` and its background loops with
``ctx.background``; the projections of the read models it owns; the job types whose ticks it consumes; and
the commands it answers. The host knows no service by name: the composition root (:mod:`services.stack`)
passes it the one list of them (a :class:`Catalog`). ``openbell serve <names>`` and ``openbell demo`` both
use it; the compose stack runs one service per container, and more copies of a service share its durable
consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from faststream.nats import NatsBroker

from eventstore.projections import Projection, ProjectionRunner
from services.broker.protocol import Broker
from services.broker.simulator import ManualClock
from services.core.health import HostHealth, set_current
from services.core.jobs.consumer import DurableConsumers
from services.core.jobs.runner import JobRunner
from services.core.jobs.types import JobType
from services.core.projections import PLATFORM_PROJECTIONS, report_stops
from services.core.runtime import Runtime, connect_runtime, faststream_options
from services.core.settings import Settings, SettingsError, load_settings, split_nats_urls
from services.model.reads import ReadModels

log = logging.getLogger(__name__)

class TickTime(ManualClock):
    """Simulated broker time: the latest tick time this process has seen; it never goes backwards (ticks
    of different jobs may be handled out of order)."""

    def set(self, moment: datetime) -> None:
        if moment > self():
            super().set(moment)


@dataclass
class ServiceContext:
    rt: Runtime
    bus: NatsBroker  # request/reply commands
    consumers: DurableConsumers  # durable JetStream consumers: ticks, events, work items
    jobs: JobRunner
    projections: ProjectionRunner
    stop: asyncio.Event
    broker_factory: Callable[[ServiceContext], Awaitable[Broker]] | None = None
    tick_time: TickTime = field(default_factory=lambda: TickTime(datetime(2000, 1, 1, tzinfo=UTC)))
    virtual: bool = False
    # Other services' read models, through their owners' query functions (given by the composition root).
    reads: ReadModels | None = None
    # Which background loops run; a loop that dies stops the host (see services.core.health).
    health: HostHealth = field(default_factory=HostHealth)
    _broker: Broker | None = None
    _broker_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.rt.settings

    async def broker(self) -> Broker:
        """The trading broker (simulator or Alpaca), created on first use and shared by the services."""
        async with self._broker_lock:
            if self._broker is None:
                if self.broker_factory is not None:
                    self._broker = await self.broker_factory(self)
                else:
                    from services.broker import create_broker

                    self._broker = await create_broker(dsn=self.rt.servers.database_url, now=self.tick_time)
            return self._broker

    async def at(self, moment: datetime) -> Broker:
        """The broker for a decision at ``moment`` (a tick's time). The simulator is seen at exactly that
        time (not at the latest tick this process has seen): what it is asked then (orders submitted,
        prices, fills) is the same whichever process asks and however late, so runs are repeatable."""
        broker = await self.broker()
        # The shared clock follows the latest tick: the simulator settles its orders up to it in the
        # background as soon as it moves (as a real broker fills between our calls).
        advanced = moment > self.tick_time()
        self.tick_time.set(moment)
        if advanced:
            broker.time_moved()
        return broker.seen_at(moment)

    @property
    def read_models(self) -> ReadModels:
        """Other services' read models through their owners' queries; a host without them cannot run a
        service that needs them (the composition root, services.stack, always gives them)."""
        if self.reads is None:
            raise RuntimeError("this service needs ServiceContext.reads (services.stack gives them)")
        return self.reads

    def background(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` until the host stops. It must wait out its servers' errors itself: if it ends
        before the host stops (an error it did not expect), the host stops and ``serve`` exits non-zero."""
        task = asyncio.create_task(coro, name=name)
        self.health.watch(task, name)
        self._tasks.append(task)

    async def catch_up(self, *names: str) -> None:
        """Bring these read models (all when none are named) up to date before deciding from them: only
        those with events of their own types pending are stepped (the projection service moves the rest)."""
        await self.projections.run_once(*names, relevant_only=True)


@dataclass(frozen=True)
class ServiceDefinition:
    """What one service provides to the host."""

    name: str
    setup: Callable[[ServiceContext], Awaitable[None]]
    # Factories of the read models it owns (each a ``Projection``); every host process knows them all, so a
    # reader catches a read model up wherever it runs, and ``openbell replay`` rebuilds them.
    projections: tuple[Callable[[], Projection], ...] = ()
    job_types: tuple[JobType, ...] = ()  # the ticks it consumes (its setup subscribes them)
    commands: tuple[str, ...] = ()  # the request/reply subjects it answers, below ``<prefix>.cmd.``
    # The NATS role of a process that hosts this service alone (services/core/nats_auth.py).
    nats_role: str = "services"


@dataclass(frozen=True)
class Catalog:
    """The services a process may host, in the order they start."""

    services: tuple[ServiceDefinition, ...]
    reads: ReadModels | None = None  # the owners' query functions, for services that read another's read model

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.services]

    def resolve(self, names: Sequence[str]) -> list[ServiceDefinition]:
        """The definitions of ``names`` (``all`` or none: every service), or ValueError naming the unknown."""
        by_name = {s.name: s for s in self.services}
        if not names or list(names) == ["all"]:
            return list(self.services)
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ValueError(f"unknown service {unknown[0]!r} (known: {', '.join(by_name)}, all)")
        return [by_name[n] for n in dict.fromkeys(names)]

    def projections(self) -> list[Projection]:
        """A fresh instance of every read model's projection: the platform's (job history) and each
        service's."""
        factories = [*PLATFORM_PROJECTIONS, *(f for s in self.services for f in s.projections)]
        return [factory() for factory in factories]

    def with_service(self, definition: ServiceDefinition) -> Catalog:
        return Catalog((*self.services, definition), self.reads)


class ServiceLoopDied(Exception):
    """A background loop of the services ended while they were running: the process must exit non-zero."""


def runtime_role(services: Sequence[ServiceDefinition]) -> str:
    """The NATS role of a service process's main connection: a service's own role when it runs alone (the
    clock's, the relay's, the web's), else the services' (a process hosting the clock or the relay among
    others opens their connections too)."""
    return services[0].nats_role if len(services) == 1 else "services"


@contextlib.asynccontextmanager
async def hosted(
    names: Sequence[str],
    settings: Settings | None = None,
    *,
    catalog: Catalog,
    runtime: Runtime | None = None,
    broker_factory: Callable[[ServiceContext], Awaitable[Broker]] | None = None,
    virtual: bool = False,
    worker: str | None = None,
) -> AsyncIterator[ServiceContext]:
    """Start the named services of ``catalog`` in this process; they run until the context exits."""
    definitions = catalog.resolve(names)
    services = [d.name for d in definitions]
    async with contextlib.AsyncExitStack() as stack:
        if runtime is None:
            runtime = await stack.enter_async_context(
                connect_runtime(settings, name=f"openbell-{'+'.join(services)}", role=runtime_role(definitions),
                                projections=catalog.projections()))
        # FastStream logs each message at log_level (debug: quiet by default) and handler errors as errors;
        # its lifecycle chatter stays below warnings unless debugging.
        bus_logger = logging.getLogger("openbell.bus")
        bus_logger.setLevel(max(logging.WARNING, logging.getLogger().getEffectiveLevel()))
        # Commands and durable consumers: the services' NATS role (services/core/nats_auth.py).
        bus = NatsBroker(
            split_nats_urls(runtime.servers.nats_url),
            **faststream_options(runtime.nats_options("services")),
            max_reconnect_attempts=-1,
            logger=bus_logger,
            log_level=logging.DEBUG,
        )
        health = HostHealth()
        ctx = ServiceContext(
            rt=runtime,
            bus=bus,
            consumers=DurableConsumers(
                runtime.servers.nats_url,
                name=f"openbell-{'+'.join(services)}-consumers",
                credentials=runtime.nats_options("services"),
                health=health,
                max_deliver=runtime.settings.max_deliver,
                ack_wait=runtime.settings.ack_wait_seconds,
            ),
            jobs=JobRunner(
                runtime.store,
                nc=runtime.nc,
                subjects=runtime.subjects,
                worker=worker,
                lease=timedelta(seconds=runtime.settings.job_takeover_seconds),
            ),
            projections=ProjectionRunner(runtime.store, catalog.projections()),
            stop=asyncio.Event(),
            broker_factory=broker_factory,
            virtual=virtual,
            reads=catalog.reads,
            health=health,
        )
        report_stops(ctx.projections, runtime.store)
        set_current(health)
        try:
            # Inside the try: a setup or a start that fails still stops what was started before it.
            await ctx.projections.setup()
            for definition in definitions:
                await definition.setup(ctx)
            await bus.start()
            await ctx.consumers.start()
            log.info("services running: %s", ", ".join(services))
            yield ctx
        finally:
            health.stopping = True
            ctx.stop.set()
            for task in ctx._tasks:
                task.cancel()
            # Crashes were already logged by the health watch; cancellation is how they end here.
            await asyncio.gather(*ctx._tasks, return_exceptions=True)
            await ctx.consumers.stop()
            await bus.stop()
            if ctx._broker is not None:
                await ctx._broker.aclose()


async def serve_forever(
    names: Sequence[str],
    settings: Settings | None = None,
    *,
    catalog: Catalog,
    virtual: bool = False,
    until: Callable[[ServiceContext], Awaitable[None]] | None = None,
) -> None:
    """Run the services until SIGINT/SIGTERM, or until ``until(ctx)`` returns (a virtual clock's run: the
    process then ends with it). ``virtual``: the services run in simulated time (see ``hosted``)."""
    import signal
    import time

    from services.core.health import HealthState, heartbeat, serve_health

    settings = settings or load_settings()
    services = [d.name for d in catalog.resolve(names)]
    health = HealthState()
    stop_http: Callable[[], None] | None = None
    if settings.metrics_port is not None:
        # Before any service starts: a port in use stops the command with one line, nothing half started.
        try:
            port, stop_http = serve_health(settings.metrics_port, settings.metrics_address, health)
        except OSError as exc:
            raise SettingsError(
                f"cannot serve metrics on {settings.metrics_address}:{settings.metrics_port}"
                f" (OPENBELL_METRICS_PORT): {exc.strerror or exc}"
            ) from None
        log.info("metrics, health and readiness on http://%s:%d/metrics, /healthz, /readyz",
                 settings.metrics_address, port)
    # Handled from the start: a SIGTERM (docker stop) while the services start still stops them cleanly,
    # once started, instead of killing the process halfway.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    try:
        async with hosted(services, settings, catalog=catalog, virtual=virtual) as ctx:
            ctx.background(heartbeat(ctx, services, health, every=settings.heartbeat_seconds), "heartbeat")
            # Until asked to stop (or the virtual clock's run ends), or until a background loop dies: then
            # the process exits non-zero, and a supervisor restarts it, rather than staying up with a loop gone.
            work = asyncio.ensure_future(stop.wait() if until is None else _until_done_or_stopped(until(ctx), stop))
            failed = asyncio.ensure_future(ctx.health.failed.wait())
            try:
                await asyncio.wait([work, failed], return_when=asyncio.FIRST_COMPLETED)
            finally:
                failed.cancel()
                if not work.done():
                    work.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await work
            if work.done() and not work.cancelled():
                work.result()  # the virtual clock's failure, if it failed
            log.info("stopping: %s", ", ".join(services))
        if ctx.health.failure is not None:
            raise ServiceLoopDied(ctx.health.failure)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if stop_http is not None:
            stop_http()
    log.info("stopped: %s after %.0fs; the servers keep running (openbell servers stop)",
             ", ".join(services), time.monotonic() - started)


async def _until_done_or_stopped(work: Awaitable[None], stop: asyncio.Event) -> None:
    """Await ``work``; a stop request cancels it. Its exception, if any, is the caller's."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.done() and not task.cancelled():
        task.result()
