"""Chaos runs: the whole stack as separate processes in virtual time, seeded faults, then the invariants.

A run starts a private nats-server and a private PostgreSQL (durable defaults: they are crashed) that
authenticate like production ones, runs ``openbell setup`` (the streams as the NATS admin, the migrations as
the database owner), applies demo portfolios, and starts ``openbell serve`` processes as the compose stack
(docker-compose.yml) runs them: relay, projections, two strategy, two orders, positions, alerts, and the
virtual clock (``openbell serve clock --virtual --from DATE --days N``), all on the simulator broker. Each
process connects as its own NATS role (``OPENBELL_NATS_USER``/``OPENBELL_NATS_PASSWORD``: the clock as
``clock``, the relay as ``relay``, the others as ``services``) and to PostgreSQL as the services'
least-privilege role; only the harness itself (the portfolios aside) uses the superuser and the NATS admin,
to inject faults and check the invariants. While virtual time
passes, a seeded plan of faults is carried out, each when the job ledger reaches its virtual instant:

- ``kill``: SIGKILL of a service process (or of the virtual clock), restarted after 0.5-3 s;
- ``stop``: SIGSTOP of a service process (or of the virtual clock) for 5-10 s, then SIGCONT;
- ``kill_nats`` / ``kill_postgres``: SIGKILL of nats-server / of the postmaster and its backends, restarted
  on the same data and port after 0.5-3 s (on a NATS cluster, of one node);
- ``lose_nats_node`` (cluster only): SIGKILL of the node leading the events stream, never restarted.

With ``nats_nodes=3`` the stack runs on a three-node nats-server cluster with R3 streams
(``OPENBELL_NATS_URL`` lists the three servers, ``OPENBELL_STREAM_REPLICAS=3``), every node with the same
users and permissions.

When the clock has run every slot and the stack is quiet, the services are stopped and the invariants are
checked on the database and JetStream (:func:`check_invariants`); a run with faults is also compared with
a fault-free run of the same seed (:func:`compare_outcomes`).

    python -m bench.chaos --seeds 10 --days 2 [--faults 8] [--portfolios 4] [--json out.json]

runs a fault-free reference, then one run with faults per seed, and prints (and writes) timings and
results. ``tests/chaos`` runs one quick seed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import nats
from nats.js.errors import NotFoundError

from eventstore import EventStore
from eventstore.projections import ProjectionRunner
from services.clock import schedule
from services.clock.virtual import virtual_span
from services.core.dbroles import ensure_roles
from services.core.embedded import PG_OWNER_ROLE, PG_SERVICE_ROLE, EmbeddedNats, EmbeddedPostgres
from services.core.events import registry
from services.core.jobs.consumer import H_REASON
from services.core.jobs.events import jobrun_stream
from services.core.jobs.types import parse_tick_id
from services.core.nats_cluster import NatsCluster
from services.core.subjects import Subjects
from services.demo import STARTING_CASH, demo_portfolios
from services.stack import all_projections
from services.strategy.commands import apply_all

PREFIX = "chaos"
DATABASE = "openbell"
# The stack as the compose file runs it: one process per entry (name -> services it serves). The relay
# runs alone: it connects as the ``relay`` role, the only one that may publish the event log.
STACK: dict[str, tuple[str, ...]] = {
    "relay": ("relay",),
    "projections": ("projections",),
    "strategy-1": ("strategy",),
    "strategy-2": ("strategy",),
    "orders-1": ("orders",),
    "orders-2": ("orders",),
    "positions": ("positions",),
    "alerts": ("alerts",),
}
FAULT_KINDS = ("kill", "stop", "kill_nats", "kill_postgres")
TERMINAL_ORDER_STATUSES = frozenset({"filled", "canceled", "rejected", "expired"})
# Identity settings a run sets itself: inherited ones would give its processes someone else's identity.
_IDENTITY_SETTINGS = ("OPENBELL_NATS_", "OPENBELL_DATABASE_")


def nats_role(process: str) -> str:
    """The NATS role a stack process connects as (docker-compose.yml, services/core/nats_auth.py)."""
    if process == "clock":
        return "clock"
    if STACK.get(process) == ("relay",):
        return "relay"
    return "services"


@dataclass(frozen=True)
class Fault:
    at: datetime  # virtual instant: carried out once the ledger has completed a tick at or after it
    kind: str  # one of FAULT_KINDS
    target: str  # a STACK process (kill, stop), "nats" or "postgres"
    seconds: float  # restart delay (kill*) or stop duration (stop)


@dataclass
class ChaosConfig:
    seed: int = 1
    days: int = 1
    portfolios: int = 3
    faults: int = 4
    first_day: date = date(2026, 11, 2)
    # Settings of every service process. A killed worker's message comes back after the ack wait, and a run
    # it started is taken over after the takeover time: short ones keep a run's wall time short.
    ack_wait_seconds: float = 10.0
    job_takeover_seconds: float = 15.0
    tick_timeout: float = 180.0
    quiet_timeout: float = 60.0
    # 1: one nats-server; 3: a three-node cluster with streams of three replicas
    nats_nodes: int = 1


def plan_faults(config: ChaosConfig) -> list[Fault]:
    """The seeded fault plan (pure): ``config.faults`` faults at virtual instants inside trading hours."""
    rng = random.Random(config.seed)
    start, end = virtual_span(config.first_day, config.days)
    slots = [s.scheduled_at for s in schedule.all_slots_between(start, end)]
    # Within the sessions, not on the first or the last few slots: a fault needs ticks before and after.
    window = slots[len(slots) // 20 : -len(slots) // 20 or None]
    instants = sorted(rng.sample(window, min(config.faults, len(window))))
    # Every kind once (in a seeded order) before any repeats, so that even a short plan covers them all.
    kinds = rng.sample(FAULT_KINDS, len(FAULT_KINDS)) + [rng.choice(FAULT_KINDS) for _ in instants]
    faults = []
    for at, kind in zip(instants, kinds, strict=False):
        if kind in ("kill", "stop"):
            target = rng.choice([*sorted(STACK), "clock"])
        elif kind == "kill_nats" and config.nats_nodes > 1:
            target = f"n{rng.randrange(config.nats_nodes) + 1}"  # a node of the cluster
        else:
            target = kind.removeprefix("kill_")
        seconds = rng.uniform(5, 10) if kind == "stop" else rng.uniform(0.5, 3)
        faults.append(Fault(at, kind, target, round(seconds, 2)))
    return faults


# ------------------------------------------------------------------------------------------ the stack


def _serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", "serve", *args]


@dataclass
class Stack:
    """Private servers and the service processes of one run."""

    workdir: Path
    config: ChaosConfig
    nats: EmbeddedNats = field(init=False)
    cluster: NatsCluster | None = field(init=False, default=None)
    postgres: EmbeddedPostgres = field(init=False)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    restarts: Counter[str] = field(default_factory=Counter)
    # Restarts by the supervisor (see :meth:`could_not_reach_servers`), as compose's restart policy does.
    supervisor_restarts: Counter[str] = field(default_factory=Counter)
    # Processes a fault is killing and restarting: not the supervisor's to restart.
    in_fault: set[str] = field(default_factory=set)
    lost_nodes: list[str] = field(default_factory=list)
    clock_spawned: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.nats = EmbeddedNats(self.workdir / "nats", prefix=PREFIX)
        if self.config.nats_nodes > 1:
            self.cluster = NatsCluster(self.workdir / "nats-cluster", size=self.config.nats_nodes, prefix=PREFIX)
        self.postgres = EmbeddedPostgres(self.workdir / "pg")
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)

    @property
    def dsn(self) -> str:
        """The superuser's DSN: the harness's checks only, never a service's."""
        return self.postgres.dsn(DATABASE)

    @property
    def service_dsn(self) -> str:
        return self.postgres.dsn(DATABASE, role=PG_SERVICE_ROLE)

    @property
    def nats_url(self) -> str:
        """The server(s), without credentials (see :meth:`nats_options`)."""
        return self.cluster.url if self.cluster is not None else self.nats.url

    def nats_password(self, role: str) -> str:
        return self.cluster.password(role) if self.cluster is not None else self.nats.password(role)

    def nats_options(self, role: str = "admin") -> dict[str, str]:
        """``nats.connect`` credentials of ``role`` (the harness's own connections: admin)."""
        return {"user": role, "password": self.nats_password(role)}

    def env(self, role: str) -> dict[str, str]:
        """The environment of a process connecting as the NATS role ``role`` and as the services' database
        role, as the compose stack gives it."""
        n = self.config.portfolios
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(_IDENTITY_SETTINGS)}
        return {
            **inherited,
            "OPENBELL_DATABASE_URL": self.service_dsn,
            "OPENBELL_NATS_URL": self.nats_url,
            "OPENBELL_NATS_USER": role,
            "OPENBELL_NATS_PASSWORD": self.nats_password(role),
            "OPENBELL_STREAM_REPLICAS": str(self.config.nats_nodes),
            "OPENBELL_SUBJECT_PREFIX": PREFIX,
            "OPENBELL_BROKER": "sim",
            "OPENBELL_SIM_SEED": str(self.config.seed),
            # the demo's market: one account shared by the portfolios, fills in two steps 20 s apart
            "OPENBELL_SIM_STARTING_CASH": str(STARTING_CASH * n),
            "OPENBELL_SIM_FILL_LATENCY_SECONDS": "20",
            "OPENBELL_SIM_PARTIAL_FILL_STEPS": "2",
            "OPENBELL_ACK_WAIT_SECONDS": str(self.config.ack_wait_seconds),
            "OPENBELL_JOB_TAKEOVER_SECONDS": str(self.config.job_takeover_seconds),
            "OPENBELL_LOG_LEVEL": "INFO",
        }

    async def start_servers(self, setup_timeout: float = 90.0) -> None:
        """The servers, their database roles (as ``openbell`` creates them on an embedded server, and the
        compose stack's init script on its own), then ``openbell setup`` as the deployment runs it."""
        await asyncio.to_thread(self.postgres.start, reuse=False)
        passwords = {role: self.postgres.password(role) for role in (PG_OWNER_ROLE, PG_SERVICE_ROLE)}
        await ensure_roles(self.postgres.dsn(), DATABASE, self.dsn, passwords, PG_OWNER_ROLE, PG_SERVICE_ROLE)
        if self.cluster is None:
            await asyncio.to_thread(self.nats.start, reuse=False)
        else:
            await asyncio.to_thread(self.cluster.start)
        await self.setup(setup_timeout)

    async def setup(self, timeout: float) -> None:
        """``openbell setup``: the streams as the NATS admin, the migrations as the database owner. A new
        cluster first elects its JetStream meta leader, then forms each stream's replica group (seconds on a
        loaded machine): until then setup fails, and is run again."""
        env = {**self.env("admin"),
               "OPENBELL_DATABASE_OWNER_URL": self.postgres.dsn(DATABASE, role=PG_OWNER_ROLE)}
        deadline = time.monotonic() + timeout
        while True:
            with (self.workdir / "logs" / "setup.log").open("ab") as log_file:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "services.cli", "setup", env=env, stdout=log_file, stderr=log_file)
                code = await process.wait()
            if code == 0:
                return
            if time.monotonic() > deadline:
                last = self.log_text("setup").strip().splitlines()[-1:] or ["no output"]
                raise RuntimeError(f"openbell setup exited with {code}: {last[0][:300]}")
            await asyncio.sleep(0.5)

    def spawn(self, name: str) -> None:
        if name == "clock":
            start = self.config.first_day.isoformat()
            args = ["clock", "--virtual", "--from", start, "--days", str(self.config.days),
                    "--tick-timeout", str(self.config.tick_timeout)]
        else:
            args = [*STACK[name], "--virtual"]
        log_file = (self.workdir / "logs" / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            _serve_command(*args), env=self.env(nats_role(name)), stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        if name == "clock":
            self.clock_spawned.set()

    def log_text(self, name: str) -> str:
        return (self.workdir / "logs" / f"{name}.log").read_text(errors="replace")

    async def wait_running(self, names: Sequence[str], timeout: float = 60.0) -> None:
        """Until each process has logged that its services run (its durable consumers exist)."""
        deadline = time.monotonic() + timeout
        for name in names:
            while "services running:" not in self.log_text(name).rsplit("serving:", 1)[-1]:
                if self.processes[name].poll() is not None:
                    raise RuntimeError(f"{name} exited with {self.processes[name].returncode}: see its log")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start within {timeout:.0f}s")
                await asyncio.sleep(0.1)

    def could_not_reach_servers(self, name: str) -> bool:
        """True when process ``name`` has exited at its start because a server did not answer (status 2,
        ``error: cannot reach ...``: a restart landed in an outage of NATS or PostgreSQL). The compose stack's
        restart policy starts such a process again, and so does the harness; any other exit stays a
        violation (a credentials refusal, a loop that stopped)."""
        process = self.processes[name]
        if name in self.in_fault or process.poll() != 2:
            return False
        last_start = self.log_text(name).rsplit("serving:", 1)[-1]
        lines = last_start.strip().splitlines()
        return "services running:" not in last_start and bool(lines) and lines[-1].startswith("error: cannot reach")

    async def supervise(self, names: Sequence[str]) -> None:
        """Restart (after 1 s) a process that could not reach its servers at its start, until cancelled."""
        while True:
            for name in names:
                if self.could_not_reach_servers(name):
                    await asyncio.sleep(1.0)
                    if self.could_not_reach_servers(name):
                        self.supervisor_restarts[name] += 1
                        self.spawn(name)
            await asyncio.sleep(0.2)

    async def inject(self, fault: Fault) -> None:
        if fault.kind == "kill":
            self.in_fault.add(fault.target)
            try:
                process = self.processes[fault.target]
                process.kill()
                await asyncio.to_thread(process.wait)
                await asyncio.sleep(fault.seconds)
                self.restarts[fault.target] += 1
                self.spawn(fault.target)
            finally:
                self.in_fault.discard(fault.target)
        elif fault.kind == "stop":
            process = self.processes[fault.target]
            os.kill(process.pid, signal.SIGSTOP)
            await asyncio.sleep(fault.seconds)
            os.kill(process.pid, signal.SIGCONT)
        elif fault.kind == "kill_nats" and self.cluster is not None:
            index = int(fault.target.removeprefix("n")) - 1 if fault.target.removeprefix("n").isdigit() else 0
            await asyncio.to_thread(self.cluster.kill, index)
            await asyncio.sleep(fault.seconds)
            await asyncio.to_thread(self.cluster.restart, index)
        elif fault.kind == "kill_nats":
            await asyncio.to_thread(self.nats.kill)
            await asyncio.sleep(fault.seconds)
            await asyncio.to_thread(self.nats.start, reuse=False)
        elif fault.kind == "lose_nats_node":
            if self.cluster is None:
                raise ValueError("lose_nats_node needs a NATS cluster")
            leader = await _stream_leader(self, Subjects(PREFIX).events_stream)
            index = next(i for i, node in enumerate(self.cluster.nodes) if node.name == leader)
            self.lost_nodes.append(leader)
            await asyncio.to_thread(self.cluster.kill, index)
        elif fault.kind == "kill_postgres":
            await asyncio.to_thread(self.postgres.kill)
            await asyncio.sleep(fault.seconds)
            await asyncio.to_thread(self.postgres.start, reuse=False)
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")

    def stop_services(self) -> dict[str, int | None]:
        """SIGTERM every process still running (SIGKILL after 20 s); their exit codes."""
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
                    process.terminate()
        codes: dict[str, int | None] = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait(5)
        return codes

    def stop_servers(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        self.nats.stop()
        self.postgres.stop()
        if self.postgres.port is not None and self.postgres._running_port() is not None:
            self.postgres.kill()  # a fast shutdown that did not end: nothing of a run may outlive it


async def _stream_leader(stack: Stack, stream: str) -> str:
    nc = await nats.connect(stack.nats_url.split(","), **stack.nats_options())
    try:
        info = await nc.jetstream().stream_info(stream)
        if info.cluster is None or info.cluster.leader is None:
            raise RuntimeError(f"stream {stream} has no cluster leader")
        return info.cluster.leader
    finally:
        await nc.close()


# ------------------------------------------------------------------------------------------- running


@dataclass
class RunResult:
    seed: int
    faults: list[dict[str, Any]]
    seconds: float
    clock_exit: int | None
    clock_output: str
    violations: list[str]
    facts: dict[str, Any]
    outcome: dict[str, Any]  # books, orders, snapshots: compared with the fault-free run

    @property
    def ok(self) -> bool:
        return not self.violations


async def _ledger_time(dsn: str) -> datetime | None:
    """Virtual time as far as the job ledger has completed ticks (None while PostgreSQL is unreachable)."""
    try:
        con = await asyncpg.connect(dsn, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    try:
        stream_id = await con.fetchval(
            "SELECT stream_id FROM events WHERE event_type = 'JobExecutionCompleted'"
            " ORDER BY global_position DESC LIMIT 1"
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return None
    finally:
        with contextlib.suppress(Exception):
            await con.close()
    if stream_id is None:
        return None
    return parse_tick_id(str(stream_id).removeprefix("jobrun-"))[1]


async def _carry_out(stack: Stack, faults: list[Fault], log: list[str]) -> None:
    for fault in faults:
        while True:
            if stack.processes["clock"].poll() not in (None, -signal.SIGKILL):
                log.append(f"not carried out (the clock had ended): {fault}")
                return
            now = await _ledger_time(stack.dsn)
            if now is not None and now >= fault.at:
                break
            await asyncio.sleep(0.2)
        t0 = time.monotonic()
        await stack.inject(fault)
        log.append(f"{fault.kind} {fault.target} at virtual {fault.at:%Y-%m-%d %H:%M} ({time.monotonic() - t0:.1f}s)")


async def _wait_quiet(dsn: str, timeout: float) -> bool:
    """Until no order is open at the broker or in the log's read of it and no event is appended for 2 s."""
    deadline = time.monotonic() + timeout
    last: tuple[int, int] | None = None
    since = time.monotonic()
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            con = await asyncpg.connect(dsn, timeout=2)
            try:
                events = await con.fetchval("SELECT coalesce(max(global_position), 0) FROM events")
                open_orders = await con.fetchval("SELECT count(*) FROM sim_orders WHERE is_open")
            finally:
                await con.close()
            state = (int(events), int(open_orders))
            if state != last:
                last, since = state, time.monotonic()
            elif open_orders == 0 and time.monotonic() - since >= 2.0:
                return True
        await asyncio.sleep(0.25)
    return False


async def _run_and_check(
    stack: Stack, config: ChaosConfig, faults: list[Fault], fault_log: list[str], violations: list[str]
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    supervisor: asyncio.Task[None] | None = None
    try:
        await stack.start_servers()
        start, end = virtual_span(config.first_day, config.days)
        specs = demo_portfolios(config.portfolios)
        # As the services' role, like `openbell apply` in a deployment.
        store = await EventStore.connect(stack.service_dsn)
        try:
            # At a fixed instant (the day before the run): the same seed gives the same events.
            await apply_all(store, specs, start - timedelta(days=1))
        finally:
            await store.close()
        for name in STACK:
            stack.spawn(name)
        await stack.wait_running(list(STACK))
        stack.spawn("clock")
        supervisor = asyncio.create_task(stack.supervise(list(STACK)))
        injector = asyncio.create_task(_carry_out(stack, faults, fault_log))
        # The clock ends the run: exit 0 after the last slot, 1 when a tick never got a recorded end. A
        # fault may SIGKILL it: the injector starts it again, and it resumes from the job ledger.
        while True:
            clock = stack.processes["clock"]
            stack.clock_spawned.clear()  # no await since reading it: a restart of this clock sets it
            clock_exit = await asyncio.to_thread(clock.wait)
            if stack.could_not_reach_servers("clock"):
                await asyncio.sleep(1.0)
                stack.supervisor_restarts["clock"] += 1
                stack.spawn("clock")
                continue
            if clock_exit >= 0:
                break
            restarted = asyncio.create_task(stack.clock_spawned.wait())
            await asyncio.wait({restarted, injector}, return_when=asyncio.FIRST_COMPLETED)
            restarted.cancel()
            if stack.processes["clock"] is clock:
                break  # killed, and no fault to start it again: not one of ours
        await injector
        if clock_exit != 0:
            violations.append(f"the virtual clock ended with exit status {clock_exit}: "
                              + stack.log_text("clock").strip().splitlines()[-1][:300])
        if not await _wait_quiet(stack.dsn, config.quiet_timeout):
            violations.append(f"orders still open or events still appended {config.quiet_timeout:.0f}s after the clock")
    finally:
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        codes = stack.stop_services()
    died = {n: c for n, c in codes.items() if n != "clock" and c not in (0, -signal.SIGTERM)}
    if died:
        violations.append(f"service processes that had died on their own: {died}")
    # A loop that ended while its process stayed up (and looked healthy) is a fault of its own.
    for name in stack.processes:
        lines = stack.log_text(name).splitlines()
        stopped = [line for line in lines if "background task" in line and "stopped" in line]
        if stopped:
            violations.append(f"{name}: {stopped[0].split(': ', 1)[-1][:200]}")
    return await check_invariants(stack, config, start, end)


async def run_stack(
    config: ChaosConfig, workdir: Path, *, with_faults: bool = True, faults: list[Fault] | None = None
) -> RunResult:
    """One run: servers, portfolios, the stack, the clock, the faults (``faults``, else the seeded plan
    when ``with_faults``); then the invariants."""
    t0 = time.perf_counter()
    stack = Stack(workdir, config)
    if faults is None:
        faults = plan_faults(config) if with_faults else []
    fault_log: list[str] = []
    violations: list[str] = []
    clock_exit: int | None = None
    try:
        facts, outcome, found = await _run_and_check(stack, config, faults, fault_log, violations)
        clock_exit = stack.processes["clock"].returncode
    finally:
        stack.stop_servers()
    violations.extend(found)
    facts["faults_log"] = fault_log
    facts["restarts"] = dict(stack.restarts)
    facts["supervisor_restarts"] = dict(stack.supervisor_restarts)
    facts["lost_nats_nodes"] = stack.lost_nodes
    return RunResult(
        seed=config.seed,
        faults=[{**asdict(f), "at": f.at.isoformat()} for f in faults],
        seconds=round(time.perf_counter() - t0, 1),
        clock_exit=clock_exit,
        clock_output=stack.log_text("clock")[-2000:],
        violations=violations,
        facts=facts,
        outcome=outcome,
    )


# ---------------------------------------------------------------------------------------- invariants


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"  # 100000.00 and 1E+5 alike: "100000"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


async def _stream_messages(stack: Stack, stream: str) -> int:
    nc = await nats.connect(stack.nats_url.split(","), **stack.nats_options())
    try:
        try:
            info = await nc.jetstream().stream_info(stream)
        except NotFoundError:
            return 0
        return int(info.state.messages)
    finally:
        await nc.close()


async def _dead_letter_reasons(stack: Stack, stream: str, count: int) -> list[str]:
    """Each dead letter's subject and the reason the consumer gave (header ``Openbell-Dlq-Reason``)."""
    nc = await nats.connect(stack.nats_url.split(","), **stack.nats_options())
    try:
        js = nc.jetstream()
        reasons = []
        for seq in range(1, min(count, 20) + 1):
            with contextlib.suppress(NotFoundError):
                msg = await js.get_msg(stream, seq)
                reason = (msg.headers or {}).get(H_REASON, "?")
                reasons.append(f"{msg.subject}: {reason[:200]}")
        return reasons
    finally:
        await nc.close()


async def check_invariants(
    stack: Stack, config: ChaosConfig, start: datetime, end: datetime
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(facts, outcome, violations) of a finished run; the servers must be up, the services stopped."""
    violations: list[str] = []
    facts: dict[str, Any] = {}
    store = await EventStore.connect(stack.dsn)
    try:
        async with store.pool.acquire() as con:
            # no duplicate event ids, gapless stream versions
            duplicates = await con.fetchval(
                "SELECT count(*) FROM (SELECT event_id FROM events GROUP BY 1 HAVING count(*) > 1) d")
            gaps = await con.fetch(
                "SELECT stream_id, count(*) AS n, min(stream_version) AS lo, max(stream_version) AS hi FROM events"
                " GROUP BY 1 HAVING min(stream_version) <> 0 OR max(stream_version) <> count(*) - 1")
            facts["events"] = await con.fetchval("SELECT count(*) FROM events")
            if duplicates:
                violations.append(f"{duplicates} event ids stored more than once")
            if gaps:
                violations.append(f"{len(gaps)} streams with version gaps, e.g. {gaps[0]['stream_id']}")

            # each tick exactly one completed execution
            ends = await con.fetch(
                "SELECT stream_id, event_type, count(*) AS n FROM events WHERE stream_id LIKE 'jobrun-%'"
                " AND event_type LIKE 'JobExecution%' GROUP BY 1, 2")
            per_tick: dict[str, Counter[str]] = defaultdict(Counter)
            for row in ends:
                per_tick[row["stream_id"]][row["event_type"]] += int(row["n"])
            slots = schedule.all_slots_between(start, end)
            not_once = [s.tick_id for s in slots if per_tick[jobrun_stream(s.tick_id)]["JobExecutionCompleted"] != 1]
            facts["ticks"] = len(slots)
            facts["ticks_not_completed_once"] = not_once[:20]
            facts["failed_executions"] = sum(c["JobExecutionFailed"] for c in per_tick.values())
            if not_once:
                examples = {t: dict(per_tick[jobrun_stream(t)]) for t in not_once[:3]}
                violations.append(f"{len(not_once)} of {len(slots)} ticks without exactly one completed execution,"
                                  f" e.g. {examples}")

            # the broker: no client order id twice, every order final
            twice = await con.fetchval(
                "SELECT count(*) FROM (SELECT client_order_id FROM sim_orders GROUP BY 1 HAVING count(*) > 1) d")
            open_at_broker = await con.fetchval("SELECT count(*) FROM sim_orders WHERE is_open")
            facts["broker_orders"] = await con.fetchval("SELECT count(*) FROM sim_orders")
            if twice:
                violations.append(f"{twice} client order ids submitted twice to the broker")
            if open_at_broker:
                violations.append(f"{open_at_broker} orders still open at the broker")
            account = await con.fetchrow("SELECT cash FROM sim_account")
            broker_positions = {r["symbol"]: r["qty"] for r in await con.fetch(
                "SELECT symbol, qty FROM sim_positions WHERE qty <> 0")}
        # the order streams: every order final
        order_states: dict[str, dict[str, Any]] = {}
        fills: dict[str, list[Any]] = defaultdict(list)
        async for recorded in store.read_all():
            if not recorded.stream_id.startswith("order-"):
                continue
            event = registry.decode(recorded)
            state = order_states.setdefault(recorded.stream_id, {"events": []})
            state["events"].append(recorded.type)
            if recorded.type in ("OrderFilled", "OrderPartiallyFilled"):
                fills[event.portfolio_id].append(event)
        final_types = {"OrderFilled", "OrderCanceled", "OrderRejected", "OrderExpired"}
        unfinished = [s for s, st in order_states.items() if not final_types & set(st["events"])]
        facts["orders"] = len(order_states)
        if unfinished:
            violations.append(f"{len(unfinished)} orders never final in the log, e.g. {unfinished[:3]}")

        # read models: caught up, then a replay must give the same tables
        runner = ProjectionRunner(store, all_projections())
        await runner.setup()
        await runner.run_once()
        live = await _read_models(store)
        for name in runner.projections:
            await runner.rebuild(name)
        rebuilt = await _read_models(store)
        differing = sorted(t for t in live if rebuilt.get(t) != live[t])
        if differing:
            violations.append(f"a replay differs from the live read models in {differing}")

        # books equal fills; the broker's account equals the sum of the books
        specs = demo_portfolios(config.portfolios)
        from services.model.vocabulary import Side
        from services.positions.books import load_book

        books: dict[str, dict[str, Any]] = {}
        total_cash = Decimal(0)
        total_qty: dict[str, Decimal] = defaultdict(Decimal)
        for spec in specs:
            book, _ = await load_book(store, spec.name)
            if book is None:
                violations.append(f"{spec.name}: no book")
                continue
            cash = spec.starting_cash
            qty: dict[str, Decimal] = defaultdict(Decimal)
            for fill in fills.get(spec.name, []):
                sign = 1 if fill.side is Side.BUY else -1
                cash -= sign * fill.fill_notional
                qty[fill.symbol] += sign * fill.fill_qty
            held = {s: p.qty for s, p in book.positions.items() if p.qty != 0}
            if book.cash != cash or held != {s: q for s, q in qty.items() if q != 0}:
                violations.append(f"{spec.name}: books (cash {book.cash}, {held}) differ from its fills "
                                  f"(cash {cash}, {dict(qty)})")
            total_cash += book.cash
            for symbol, q in held.items():
                total_qty[symbol] += q
            books[spec.name] = {"cash": _plain(book.cash), "positions": {s: _plain(q) for s, q in sorted(held.items())}}
        if account is None or account["cash"] != total_cash:
            violations.append(f"broker cash {account and account['cash']} != sum of the books' cash {total_cash}")
        if broker_positions != {s: q for s, q in total_qty.items() if q != 0}:
            violations.append(f"broker positions {broker_positions} != sum of the books {dict(total_qty)}")

        # one snapshot per portfolio-day
        async with store.pool.acquire() as con:
            snapshots = await con.fetch(
                "SELECT stream_id, count(*) AS n FROM events WHERE stream_id LIKE 'snapshot-%' GROUP BY 1")
            snapshot_rows = await con.fetch(
                "SELECT portfolio_id, trading_day, total_value, cash_balance, positions_value, realized_pnl,"
                " unrealized_pnl FROM portfolio_snapshots ORDER BY 1, 2")
            orders = await con.fetch(
                "SELECT client_order_id, portfolio_id, symbol, side, qty, status, filled_qty, avg_fill_price"
                " FROM trades ORDER BY 1")
        days = {s.scheduled_at for s in slots if s.job_type is schedule.JobType.PORTFOLIO_SNAPSHOT}
        expected_snapshots = len(days) * len(specs)
        per_day = Counter((r["portfolio_id"], r["trading_day"]) for r in snapshot_rows)
        facts["snapshots"] = len(snapshot_rows)
        if len(snapshot_rows) != expected_snapshots or any(n != 1 for n in per_day.values()):
            violations.append(f"{len(snapshot_rows)} snapshots, expected one per portfolio-day ({expected_snapshots})")
        if len(snapshots) != expected_snapshots:
            violations.append(f"{len(snapshots)} snapshot streams, expected {expected_snapshots}")

        subjects = Subjects(PREFIX)
        dead = await _stream_messages(stack, subjects.dlq_stream)
        facts["dead_letters"] = dead
        if dead:
            reasons = await _dead_letter_reasons(stack, subjects.dlq_stream, dead)
            facts["dead_letter_reasons"] = reasons
            violations.append(f"{dead} dead letters: {reasons[:3]}")
        # every event published once by the relay (JetStream drops a republished event id as a repeat)
        published = await _stream_messages(stack, subjects.events_stream)
        facts["events_published"] = published
        if published != facts["events"]:
            violations.append(f"{published} events in JetStream, {facts['events']} in the store")
        ticks_published = await _stream_messages(stack, subjects.ticks_stream)
        facts["ticks_published"] = ticks_published
        if ticks_published != len(slots):
            violations.append(f"{ticks_published} ticks in JetStream, {len(slots)} slots")
    finally:
        await store.close()
    outcome = {
        "books": books,
        "orders": [{k: _plain(v) for k, v in dict(r).items()} for r in orders],
        "snapshots": [{k: _plain(v) for k, v in dict(r).items()} for r in snapshot_rows],
    }
    return facts, outcome, violations


async def _read_models(store: EventStore) -> dict[str, list[str]]:
    tables: dict[str, list[str]] = {}
    async with store.pool.acquire() as con:
        for projection in all_projections():
            for table in projection.tables:
                rows = await con.fetch(f"SELECT * FROM {table}")
                tables[table] = sorted(msgspec.json.encode({k: _plain(v) for k, v in dict(r).items()}).decode()
                                       for r in rows)
    return tables


def compare_outcomes(reference: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """What differs between two runs' final books, orders and snapshots (empty: the same)."""
    differences = []
    for part in ("books", "orders", "snapshots"):
        if reference[part] != other[part]:
            ref, oth = reference[part], other[part]
            if isinstance(ref, list):
                a = {json.dumps(x, sort_keys=True) for x in ref}
                b = {json.dumps(x, sort_keys=True) for x in oth}
                example = sorted(a - b)[:1] + sorted(b - a)[:1]
                differences.append(f"{part}: {len(a - b)} only in the reference, {len(b - a)} only in this run;"
                                   f" e.g. {example}")
            else:
                names = sorted(k for k in set(ref) | set(oth) if ref.get(k) != oth.get(k))
                differences.append(f"{part} differ for {names}: {[ref.get(n) for n in names[:1]]}"
                                   f" vs {[oth.get(n) for n in names[:1]]}")
    return differences


def outcome_digest(outcome: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(outcome, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- main


async def soak(seeds: Sequence[int], base: ChaosConfig, workdir: Path) -> dict[str, Any]:
    """A fault-free reference per seed, then the run with faults; each compared with its reference."""
    runs = []
    for seed in seeds:
        config = ChaosConfig(**{**asdict(base), "seed": seed})
        reference = await run_stack(config, workdir / f"seed{seed}-reference", with_faults=False)
        result = await run_stack(config, workdir / f"seed{seed}-faults")
        differences = compare_outcomes(reference.outcome, result.outcome)
        entry = {
            "seed": seed,
            "ok": reference.ok and result.ok and not differences,
            "seconds_reference": reference.seconds,
            "seconds_with_faults": result.seconds,
            "faults": result.faults,
            "violations": result.violations,
            "reference_violations": reference.violations,
            "differences_from_reference": differences,
            "facts": result.facts,
            "digest": outcome_digest(result.outcome),
            "reference_digest": outcome_digest(reference.outcome),
        }
        runs.append(entry)
        status = "ok" if entry["ok"] else "FAILED"
        print(f"seed {seed}: {status} in {result.seconds:.0f}s with {len(result.faults)} faults"
              f" (reference {reference.seconds:.0f}s)", flush=True)
        for line in [*result.violations, *(f"reference: {v}" for v in reference.violations), *differences]:
            print(f"  - {line}", flush=True)
    return {
        "config": {**asdict(base), "first_day": base.first_day.isoformat()},
        "seeds": list(seeds),
        "passed": sum(1 for r in runs if r["ok"]),
        "runs": runs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="how many seeds (1..N), or see --seed")
    parser.add_argument("--seed", type=int, action="append", help="run this seed (repeatable)")
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--portfolios", type=int, default=4)
    parser.add_argument("--faults", type=int, default=8, help="faults per run")
    parser.add_argument("--from", dest="first_day", type=date.fromisoformat, default=date(2026, 11, 2),
                        help="first exchange date, YYYY-MM-DD")
    parser.add_argument("--nats-nodes", type=int, default=1, choices=(1, 3, 5),
                        help="1: one nats-server; 3 or 5: a cluster with streams of as many replicas")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep", type=Path, help="keep the servers' data and logs under this directory")
    args = parser.parse_args(argv)
    if min(args.days, args.portfolios, args.seeds) < 1 or args.faults < 0:
        parser.error("--days, --portfolios and --seeds must be at least 1, --faults at least 0")
    base = ChaosConfig(days=args.days, portfolios=args.portfolios, faults=args.faults,
                       first_day=args.first_day, nats_nodes=args.nats_nodes)
    seeds = args.seed or list(range(1, args.seeds + 1))

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # asyncio.run then cancels the run: its processes and servers are stopped

    signal.signal(signal.SIGTERM, interrupted)
    with contextlib.ExitStack() as exit_stack:
        if args.keep:
            workdir = args.keep
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(exit_stack.enter_context(tempfile.TemporaryDirectory(prefix="openbell-chaos-")))
        started = datetime.now(UTC)
        report = asyncio.run(soak(seeds, base, workdir))
        report["started_at"] = started.isoformat()
    print(f"{report['passed']} of {len(seeds)} seeds passed")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if report["passed"] == len(seeds) else 1


if __name__ == "__main__":
    sys.exit(main())
