"""``openbell demo``: a virtual run over N trading days on the simulator, the whole system live.

Demo portfolios and strategies are applied like a user's (the same commands), every service runs in
this process on the real NATS and PostgreSQL (consuming real JetStream messages), and the clock runs in
virtual time: each tick is emitted as soon as the previous one's job runs are recorded. The market is
the deterministic simulator, so the same seed and days give the same prices, orders and fills.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

import asyncpg
import nats.js.errors
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from eventstore.projections import ProjectionRunner
from services.broker.simulator import SimBroker, SimConfig
from services.broker.simulator.engine import FillPolicy
from services.broker.simulator.market import DEFAULT_SYMBOLS
from services.cli_support import CommandError, console, run_async
from services.clock.calendar import sessions_between
from services.clock.schedule import JobType, all_slots_between
from services.clock.virtual import VirtualClock
from services.core.host import ServiceContext
from services.core.jobs import queries as jobs_queries
from services.core.runtime import Runtime
from services.orders import queries as orders_queries
from services.positions import queries as positions_queries
from services.stack import all_projections, connect_runtime, hosted
from services.strategy.commands import apply_all
from services.strategy.config import PortfolioSpec, parse_portfolio_spec

DEMO_SERVICES = ["relay", "projections", "strategy", "orders", "positions", "alerts"]
STARTING_CASH = Decimal(100_000)

_STRATEGIES: tuple[dict[str, Any], ...] = (
    {"kind": "ma_crossover", "parameters": {"fast_window": 5, "slow_window": 20}},
    {"kind": "rsi_mean_reversion", "parameters": {"period": 14, "oversold": "35", "overbought": "65"}},
    {"kind": "momentum", "parameters": {"lookback": 12, "threshold": "0.004"}},
)


def demo_portfolios(count: int) -> list[PortfolioSpec]:
    """``count`` portfolios, strategies and universes rotating over the built-ins and the symbols."""
    symbols = [s for s in DEFAULT_SYMBOLS if s not in ("SPY", "QQQ", "IWM", "DIA")]
    specs = []
    for i in range(count):
        strategy = _STRATEGIES[i % len(_STRATEGIES)]
        universe = [symbols[(i * 3 + k) % len(symbols)] for k in range(4)]
        specs.append(
            parse_portfolio_spec(
                {
                    "name": f"demo-{i + 1:02d}",
                    "starting_cash": str(STARTING_CASH),
                    "risk": {"max_order_notional": "20000", "max_position_weight": "0.3", "daily_loss_limit": "0.05"},
                    "strategy": [
                        {
                            **strategy,
                            "universe": universe,
                            "sizing": {"method": "fixed_notional", "notional": "8000"},
                        }
                    ],
                }
            )
        )
    return specs


def demo_days(days: int, today: date) -> list[date]:
    """The last ``days`` complete trading days before ``today``."""
    sessions = sessions_between(today - timedelta(days=days * 2 + 14), today - timedelta(days=1))
    return [s.day for s in sessions][-days:]


@dataclass
class DemoResult:
    days: list[date]
    ticks: int
    seconds: float
    outcomes: dict[str, int]


async def run_demo(
    rt: Runtime,
    *,
    days: int,
    portfolios: int,
    seed: int,
    today: date,
    progress: Progress | None = None,
    services: list[str] | None = None,
    jobs: tuple[JobType, ...] = tuple(JobType),
) -> DemoResult:
    specs = demo_portfolios(portfolios)
    await apply_all(rt.store, specs, datetime.now(UTC))
    chosen = demo_days(days, today)
    sessions = {s.day: s for s in sessions_between(chosen[0], chosen[-1])}
    start = sessions[chosen[0]].open - timedelta(minutes=1)
    end = sessions[chosen[-1]].close + timedelta(minutes=10)

    async def sim_broker(ctx: ServiceContext) -> SimBroker:
        ctx.tick_time.set(start)
        config = SimConfig(
            seed=seed,
            starting_cash=STARTING_CASH * portfolios,  # one account shared by every demo portfolio
            fill_policy=FillPolicy(fill_latency=timedelta(seconds=20), partial_fill_steps=2),
        )
        return await SimBroker.connect(rt.servers.database_url, config, now=ctx.tick_time)

    slots = all_slots_between(start, end, jobs)
    task = progress.add_task("virtual trading", total=len(slots)) if progress else None
    async with hosted(services or DEMO_SERVICES, runtime=rt, broker_factory=sim_broker, virtual=True, worker="demo"):
        clock = VirtualClock(rt.store, rt.nc, rt.subjects, jobs=jobs, tick_timeout=120)

        def on_instant(instant: datetime, ticks: list[Any]) -> None:
            if progress is not None and task is not None:
                progress.update(task, advance=len(ticks), description=f"virtual {instant:%Y-%m-%d %H:%M} UTC")

        result = await clock.run(start, end, on_instant=on_instant)
    return DemoResult(chosen, result.ticks, result.seconds, dict(result.outcomes))


async def summary_tables(rt: Runtime) -> list[Table]:
    async with rt.store.pool.acquire() as con:
        orders = await orders_queries.status_counts(con)
        portfolios = await positions_queries.list_portfolios(con)
        jobs = await jobs_queries.list_jobs(con, last_runs=0)
    order_table = Table(title="orders")
    for column in ("status", "orders", "filled qty"):
        order_table.add_column(column)
    for count in orders:
        order_table.add_row(count.status, str(count.orders), f"{count.filled_qty:f}")
    pnl_table = Table(title="portfolios")
    for column in ("portfolio", "cash", "equity", "realized P&L", "unrealized P&L"):
        pnl_table.add_column(column, justify="right")
    for portfolio in portfolios:
        pnl_table.add_row(
            portfolio.portfolio_id,
            *(_money(v) for v in (portfolio.cash, portfolio.equity, portfolio.realized_pnl, portfolio.unrealized_pnl)),
        )
    job_table = Table(title="jobs")
    for column in ("job", "runs", "failures", "skipped", "status"):
        job_table.add_column(column)
    for job in jobs:
        job_table.add_row(
            job.job_type.value, str(job.total_runs), str(job.total_failures), str(job.total_skipped), job.status.value
        )
    return [order_table, pnl_table, job_table]


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


DEMO_MARKER_TABLE = "openbell_demo_runs"


async def _owner_connection(rt: Runtime) -> asyncpg.Connection:
    """A connection as the schema's owner (the services' role may neither create nor drop a table): the
    owner's URL when there is one (the embedded default, OPENBELL_DATABASE_OWNER_URL), else the process's
    own, which must then be allowed to."""
    return await asyncpg.connect(rt.servers.database_owner_url or rt.servers.database_url)


async def mark_demo_run(rt: Runtime, *, days: int, portfolios: int, seed: int) -> None:
    """Record in the database that a demo made its data: ``--reset`` removes only a database so marked."""
    con = await _owner_connection(rt)
    try:
        await con.execute(
            f"CREATE TABLE IF NOT EXISTS {DEMO_MARKER_TABLE} (started_at timestamptz NOT NULL, days int NOT NULL,"
            " portfolios int NOT NULL, seed bigint NOT NULL)"
        )
        await con.execute(
            f"INSERT INTO {DEMO_MARKER_TABLE} VALUES ($1, $2, $3, $4)", datetime.now(UTC), days, portfolios, seed
        )
    finally:
        await con.close()


@dataclass(frozen=True)
class DemoData:
    """What a previous run left, and whether a demo made all of it."""

    events: int
    demo_runs: int
    demo_portfolios: tuple[str, ...]
    own_portfolios: tuple[str, ...]  # portfolios a demo did not make: the user's
    alerts: int

    @property
    def demo_made_all(self) -> bool:
        return self.demo_runs > 0 and not self.own_portfolios and self.alerts == 0


async def previous_data(rt: Runtime) -> DemoData:
    async with rt.store.pool.acquire() as con:
        marked = await con.fetchval("SELECT to_regclass($1) IS NOT NULL", DEMO_MARKER_TABLE)
        runs = await con.fetchval(f"SELECT count(*) FROM {DEMO_MARKER_TABLE}") if marked else 0
    names = [stream_id.removeprefix("portfolio-") for stream_id in await rt.store.stream_ids("portfolio-")]
    alerts = len(await rt.store.stream_ids("alert-"))
    demo = tuple(n for n in names if n.startswith("demo-"))
    own = tuple(n for n in names if not n.startswith("demo-"))
    return DemoData(await rt.store.count(), int(runs), demo, own, int(alerts))


def describe_reset(data: DemoData, rt: Runtime, messages: dict[str, int]) -> list[str]:
    """Exactly what ``--reset`` removes, one line each."""
    where = "the embedded database" if rt.servers.embedded_postgres is not None else "the database"
    portfolios = (
        f"{len(data.demo_portfolios)} demo portfolios ({data.demo_portfolios[0]} to {data.demo_portfolios[-1]})"
        if data.demo_portfolios else "no portfolios"
    )
    run_word = "run" if data.demo_runs == 1 else "runs"
    lines = [
        f"removing what {data.demo_runs} previous demo {run_word} made in {where}: {data.events} events, "
        f"{portfolios}, the read models and the simulator's state",
    ]
    lines += [f"removing stream {name} ({count} messages) and its consumers" for name, count in messages.items()]
    return lines


async def _reset(rt: Runtime, data: DemoData) -> list[str]:
    """Remove a previous demo's world: the database's tables (a demo made all of them: see
    :func:`previous_data`) and this prefix's streams. The streams are deleted, not purged: a purge keeps
    the Nats-Msg-Id duplicate window, and the new run's ticks (same ids: same days) would be dropped."""
    streams = (
        rt.subjects.ticks_stream, rt.subjects.events_stream, rt.subjects.work_stream, rt.subjects.dlq_stream,
        rt.subjects.feeds_stream,
    )
    messages = {}
    for stream in streams:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            messages[stream] = (await rt.js.stream_info(stream)).state.messages
    lines = describe_reset(data, rt, messages)
    con = await _owner_connection(rt)  # the next runtime migrates again and grants the services' role
    try:
        await con.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await con.close()
    for stream in messages:
        await rt.js.delete_stream(stream)
    return lines


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        days: Annotated[int, typer.Option(min=1, max=60, help="Trading days to simulate.")] = 5,
        portfolios: Annotated[int, typer.Option(min=1, max=200, help="Demo portfolios.")] = 10,
        seed: Annotated[int, typer.Option(help="Market simulator seed (same seed, same run).")] = 1,
        reset: Annotated[
            bool,
            typer.Option(
                "--reset",
                help="Remove a previous demo's data first (its events, read models and streams; refused when the"
                " data dir holds portfolios or alerts of your own).",
            ),
        ] = False,
        web: Annotated[bool, typer.Option(
            "--web", help="Serve the dashboard during the demo and keep it up afterwards (Ctrl-C to stop)."
        )] = False,
    ) -> None:
        """Run a virtual trading week (or N days) on the simulator with the whole system live."""
        async def main() -> None:
            t0 = time.perf_counter()
            async with connect_runtime(name="openbell-demo", role="admin") as rt:
                data = await previous_data(rt)
                if data.events > 0:
                    if not data.demo_made_all:
                        own = ", ".join(data.own_portfolios[:5]) or f"{data.alerts} alerts"
                        raise CommandError(
                            f"the event store holds {data.events} events that are not all a demo's (your own: {own});"
                            " the demo runs in a data dir of its own: OPENBELL_DATA_DIR=.openbell-demo openbell demo"
                        )
                    if not reset:
                        raise CommandError(
                            f"the event store already holds {data.events} events of a previous demo; "
                            "run 'openbell demo --reset' to remove them and start over"
                        )
                    for line in await _reset(rt, data):
                        console.print(line, highlight=False)
            async with contextlib.AsyncExitStack() as stack:
                rt = await stack.enter_async_context(connect_runtime(name="openbell-demo", role="admin"))
                await mark_demo_run(rt, days=days, portfolios=portfolios, seed=seed)
                dashboard = None
                if web:
                    from services.web.server import WebServer

                    dashboard = WebServer(rt)
                    await dashboard.start()  # a port in use stops the command before the demo starts
                    stack.push_async_callback(dashboard.stop)  # also when the demo fails or is interrupted
                    console.print(f"dashboard: {dashboard.url} (live during the demo)")
                with Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=console,
                ) as progress:
                    result = await run_demo(
                        rt, days=days, portfolios=portfolios, seed=seed, today=date.today(), progress=progress
                    )
                await ProjectionRunner(rt.store, all_projections()).run_once()
                for table in await summary_tables(rt):
                    console.print(table)
                day_word = "trading day" if len(result.days) == 1 else "trading days"
                console.print(
                    f"simulated {len(result.days)} {day_word} ({result.days[0]} to {result.days[-1]}), "
                    f"{result.ticks} ticks, {portfolios} portfolios, seed {seed}: "
                    f"{time.perf_counter() - t0:.1f}s from command to summary"
                )
                console.print(
                    "next: [bold]openbell jobs[/] (job stats), [bold]openbell history[/] (runs), "
                    "[bold]openbell events[/] (the audit log), [bold]openbell positions[/], "
                    "[bold]openbell snapshots[/]"
                )
                if dashboard is None:
                    console.print(
                        "dashboard: [bold]openbell serve web[/] then open "
                        f"http://{rt.settings.web_address}:{rt.settings.web_port} "
                        "(or [bold]openbell demo --web[/] to keep it up after the demo)"
                    )
                    return
                console.print(f"dashboard: {dashboard.url} (Ctrl-C to stop)")
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                try:
                    await stop.wait()
                finally:
                    for sig in (signal.SIGINT, signal.SIGTERM):
                        loop.remove_signal_handler(sig)

        run_async(main)
