"""What ``openbell serve`` says about itself: a heartbeat line, ``/healthz`` and ``/readyz``.

The heartbeat (at start, every ``OPENBELL_HEARTBEAT_SECONDS``, and a line on stop) names the services up,
whether the market is open, and each job's next tick in New York and UTC. ``/healthz`` answers 200 while
the process serves; ``/readyz`` answers 200 only when its servers answer, its durable consumers are bound
and fetching, and the relay is not far behind the log (503 otherwise, with the failing checks as JSON).
Both are served beside ``/metrics`` on ``OPENBELL_METRICS_PORT``. The line and the checks are pure
functions of what the shell gathers.

The in-process health of a service host: which background loops run, and whether one died.

Every long-lived loop of a process (the relay, the projection runner, each durable consumer's fetch loop,
the trade-update stream, the clock) registers here when it starts. A loop waits out any error of its
servers by itself (``eventstore.faults.is_retryable``), so a loop that ends while the process is not
stopping is a bug: it is recorded as the process's failure, and ``openbell serve`` then exits non-zero
so that a supervisor restarts it, instead of leaving a process that looks alive and does nothing.

A readiness check reads :func:`current` (the health of the services started last in this process)::

    health = current()
    ready = health is not None and health.ready   # every loop running, none died
    health.snapshot()   # {"ready": bool, "failure": str | None, "loops": {name: "running" | "stopped: ..."}}
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import asyncpg
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from services.clock import calendar
from services.clock.schedule import JobType, next_slot_after, to_new_york

if TYPE_CHECKING:
    from services.core.host import ServiceContext

log = logging.getLogger(__name__)

RUNNING = "running"


class HostHealth:
    def __init__(self) -> None:
        self.loops: dict[str, str] = {}
        self.failure: str | None = None
        self.failed = asyncio.Event()  # set once a loop died: the host stops, the process exits non-zero
        self.stopping = False  # set when the host stops: loops ending then are not failures

    @property
    def ready(self) -> bool:
        return self.failure is None and not self.stopping and all(state == RUNNING for state in self.loops.values())

    def snapshot(self) -> dict[str, Any]:
        return {"ready": self.ready, "failure": self.failure, "loops": dict(self.loops)}

    def watch(self, task: asyncio.Task[Any], name: str | None = None) -> None:
        """Track ``task`` as the loop ``name`` (default: the task's name) until it ends."""
        loop_name = name or task.get_name()
        self.loops[loop_name] = RUNNING
        task.add_done_callback(lambda done: self._ended(loop_name, done))

    def _ended(self, name: str, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            self.loops[name] = "stopped: cancelled"
            if not self.stopping:
                self.died(name, "cancelled")
            return
        error = task.exception()
        reason = f"{type(error).__name__}: {error}" if error is not None else "returned"
        self.loops[name] = f"stopped: {reason}"
        if error is not None:
            log.error("background loop %s died: %r", name, error, exc_info=error)
        if not self.stopping:
            self.died(name, reason if error is not None else "ended while the process was not stopping")

    def died(self, name: str, reason: str) -> None:
        if self.failure is None:
            self.failure = f"background loop {name} stopped ({reason})"
            log.critical("%s: stopping the process", self.failure)
        self.failed.set()


_current: HostHealth | None = None


def current() -> HostHealth | None:
    """The health of the services started last in this process (None before any)."""
    return _current


def set_current(health: HostHealth | None) -> None:
    global _current
    _current = health


# /readyz fails when the active relay of this process is more events than this behind the log.
MAX_READY_RELAY_LAG = 1000


@dataclass(frozen=True)
class Readiness:
    nats: bool
    postgres: bool
    consumers_bound: int
    consumers_expected: int
    relay_lag: int | None  # None: no active relay in this process
    loops_stopped: tuple[str, ...] = ()  # background loops of this process that ended

    @property
    def failing(self) -> list[str]:
        failures = []
        if not self.nats:
            failures.append("nats unreachable")
        if not self.postgres:
            failures.append("postgres unreachable")
        if self.consumers_bound < self.consumers_expected:
            failures.append(f"{self.consumers_bound} of {self.consumers_expected} consumers fetching")
        if self.relay_lag is not None and self.relay_lag > MAX_READY_RELAY_LAG:
            failures.append(f"relay {self.relay_lag} events behind")
        failures += [f"{name} stopped" for name in self.loops_stopped]
        return failures

    @property
    def ready(self) -> bool:
        return not self.failing

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "loops_stopped": list(self.loops_stopped), "ready": self.ready,
                "failing": self.failing}


def _both_zones(instant: datetime) -> str:
    return f"{to_new_york(instant):%a %Y-%m-%d %H:%M} New York ({instant.astimezone(UTC):%H:%M} UTC)"


def market_state(now: datetime) -> str:
    """``market open until ...`` or ``market closed, opens ...``."""
    today = calendar.session(calendar.exchange_date(now))
    if today is not None and today.open <= now < today.close:
        return f"market open until {_both_zones(today.close)}"
    for session in calendar.sessions_from(calendar.exchange_date(now)):
        if session.open > now:
            return f"market closed, opens {_both_zones(session.open)}"
    return "market closed"


def heartbeat_line(
    now: datetime, services: Sequence[str], readiness: Readiness, job_statuses: dict[str, str]
) -> str:
    """One line: services up, readiness, the market, and every job's next tick (or why it has none)."""
    ticks = []
    for job in JobType:
        status = job_statuses.get(job.value, "enabled")
        if status != "enabled":
            ticks.append(f"{job.value} {status}")
            continue
        nxt = next_slot_after(job, now)
        ticks.append(f"{job.value} {to_new_york(nxt):%a %H:%M} NY / {nxt.astimezone(UTC):%H:%M} UTC")
    health = "ready" if readiness.ready else "NOT READY: " + ", ".join(readiness.failing)
    return (
        f"heartbeat: {', '.join(services)} up, {health}; {market_state(now)}; next ticks: {'; '.join(ticks)}"
    )


# ------------------------------------------------------------------------------------------- shell


@dataclass
class HealthState:
    """What the HTTP thread answers: the latest readiness the event loop measured."""

    readiness: Readiness | None = None
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set(self, readiness: Readiness) -> None:
        with self.lock:
            self.readiness = readiness

    def get(self) -> Readiness | None:
        with self.lock:
            return self.readiness


def serve_health(port: int, address: str, state: HealthState) -> tuple[int, Callable[[], None]]:
    """``/metrics``, ``/healthz`` and ``/readyz`` from a background thread. Returns the port and a stop."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                uptime = time.monotonic() - state.started
                self._json(200, {"status": "ok", "uptime_seconds": round(uptime, 1)})
            elif path == "/readyz":
                readiness = state.get()
                if readiness is None:
                    self._json(503, {"ready": False, "failing": ["starting"]})
                else:
                    self._json(200 if readiness.ready else 503, readiness.as_json())
            else:
                self._json(404, {"error": f"no such path {path!r}: /metrics, /healthz, /readyz"})

        def _json(self, code: int, body: dict[str, Any]) -> None:
            self._send(code, json.dumps(body).encode(), "application/json")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("health http: " + format, *args)

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="openbell-health", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return int(server.server_address[1]), stop


async def measure(ctx: ServiceContext) -> Readiness:
    """The readiness checks, each bounded by a short timeout."""
    postgres = True
    try:
        async with asyncio.timeout(2):
            async with ctx.rt.store.pool.acquire() as con:
                await con.fetchval("SELECT 1")
            head = await ctx.rt.store.head_position()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):  # not ready, reported
        postgres = False
        head = None
    consumers = ctx.consumers
    nc = consumers._nc
    bound = sum(1 for task in consumers._tasks if not task.done()) if nc is not None and nc.is_connected else 0
    lag = None
    from services.core import metrics

    leaders = [relay for relay in metrics._relays.relays if relay.is_leader.is_set()]
    if leaders and head is not None:
        lag = max(0, head - max(relay.published_position for relay in leaders))
    # The loops this process's health watches (relay, projections, consumers, streams) that have ended.
    stopped = tuple(name for name, state in ctx.health.loops.items() if state != RUNNING)
    return Readiness(ctx.rt.nc.is_connected, postgres, bound, len(consumers._consumers), lag, stopped)


async def job_statuses(ctx: ServiceContext) -> dict[str, str]:
    try:
        async with asyncio.timeout(2), ctx.rt.store.pool.acquire() as con:
            if not await con.fetchval("SELECT to_regclass('scheduled_jobs') IS NOT NULL"):
                return {}
            rows = await con.fetch("SELECT job_type::text, status::text FROM scheduled_jobs")
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        # the heartbeat still says what it can; readiness reports the database
        return {}
    return {row[0]: row[1] for row in rows}


async def heartbeat(
    ctx: ServiceContext, services: Sequence[str], state: HealthState, *, every: float, check_every: float = 5.0
) -> None:
    """Measure readiness every ``check_every`` seconds (for /readyz), log the heartbeat every ``every``."""
    last_line = -float("inf")
    while not ctx.stop.is_set():
        readiness = await measure(ctx)
        state.set(readiness)
        if time.monotonic() - last_line >= every:
            last_line = time.monotonic()
            line = heartbeat_line(datetime.now(UTC), services, readiness, await job_statuses(ctx))
            log.info("%s", line)
        try:
            await asyncio.wait_for(ctx.stop.wait(), min(check_every, every))
        except TimeoutError:
            continue
