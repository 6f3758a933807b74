"""``openbell demo``: a virtual run over N trading days on the simulator, the whole system live.

Demo portfolios and strategies are applied like a user's (the same commands), every service runs in
this process on the real NATS and PostgreSQL (consuming real JetStream messages), and the clock runs in
virtual time: each tick is emitted as soon as the previous one's job runs are recorded. The market is
the deterministic simulator, so the same seed and days give the same prices, orders and fills.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from eventstore.projections import ProjectionRunner
from services.broker.simulator.broker import SimBroker, SimConfig
from services.broker.simulator.engine import FillPolicy
from services.broker.simulator.market import DEFAULT_SYMBOLS
from services.cli_support import CommandError, console, run_async
from services.clock.calendar import sessions_between
from services.clock.schedule import JobType, all_slots_between
from services.clock.virtual import VirtualClock
from services.core.host import ServiceContext, hosted
from services.core.projections import known_projections
from services.core.runtime import Runtime, connect_runtime
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
        orders = await con.fetch(
            "SELECT status, count(*) AS n, coalesce(sum(filled_qty), 0) AS qty FROM trades GROUP BY 1 ORDER BY 1"
        )
        portfolios = (
            await con.fetch(
                "SELECT portfolio_id, cash, equity, realized_pnl, unrealized_pnl FROM portfolios ORDER BY portfolio_id"
            )
            if await con.fetchval("SELECT to_regclass('portfolios') IS NOT NULL")
            else []
        )
        jobs = await con.fetch(
            "SELECT job_type::text, total_runs, total_failures, total_skipped, status::text FROM scheduled_jobs"
            " ORDER BY job_type"
        )
    order_table = Table(title="orders")
    for column in ("status", "orders", "filled qty"):
        order_table.add_column(column)
    for row in orders:
        order_table.add_row(row["status"], str(row["n"]), f"{row['qty']:f}")
    pnl_table = Table(title="portfolios")
    for column in ("portfolio", "cash", "equity", "realized P&L", "unrealized P&L"):
        pnl_table.add_column(column, justify="right")
    for row in portfolios:
        pnl_table.add_row(
            row["portfolio_id"], *(_money(row[k]) for k in ("cash", "equity", "realized_pnl", "unrealized_pnl"))
        )
    job_table = Table(title="jobs")
    for column in ("job", "runs", "failures", "skipped", "status"):
        job_table.add_column(column)
    for row in jobs:
        job_table.add_row(row[0], str(row[1]), str(row[2]), str(row[3]), row[4])
    return [order_table, pnl_table, job_table]


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


async def _reset(rt: Runtime) -> None:
    """Forget the previous demo: everything in the embedded database, and this prefix's streams and
    consumers."""
    async with rt.store.pool.acquire() as con:
        await con.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    streams = (rt.subjects.ticks_stream, rt.subjects.events_stream, rt.subjects.work_stream, rt.subjects.dlq_stream)
    for stream in streams:
        await rt.js.purge_stream(stream)
        for consumer in await rt.js.consumers_info(stream):
            await rt.js.delete_consumer(stream, consumer.name)


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        days: Annotated[int, typer.Option(min=1, max=60, help="Trading days to simulate.")] = 5,
        portfolios: Annotated[int, typer.Option(min=1, max=200, help="Demo portfolios.")] = 10,
        seed: Annotated[int, typer.Option(help="Market simulator seed (same seed, same run).")] = 1,
        reset: Annotated[bool, typer.Option("--reset", help="Wipe a previous demo's data first.")] = False,
    ) -> None:
        """Run a virtual trading week (or N days) on the simulator with the whole system live."""
        async def main() -> None:
            t0 = time.perf_counter()
            async with connect_runtime(name="openbell-demo") as rt:
                events = await rt.store.count()
                if events > 0:
                    if not reset:
                        raise CommandError(
                            f"the event store already holds {events} events; "
                            "run 'openbell demo --reset' to wipe them and start over"
                        )
                    if rt.servers.embedded_postgres is None:
                        raise CommandError(
                            "--reset only wipes the embedded database, not one named by OPENBELL_DATABASE_URL"
                        )
                    await _reset(rt)
            async with connect_runtime(name="openbell-demo") as rt:
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
                await ProjectionRunner(rt.store, known_projections()).run_once()
                for table in await summary_tables(rt):
                    console.print(table)
            console.print(
                f"simulated {len(result.days)} trading days ({result.days[0]} to {result.days[-1]}), "
                f"{result.ticks} ticks, {portfolios} portfolios, seed {seed}: "
                f"{time.perf_counter() - t0:.1f}s from command to summary"
            )
            console.print(
                "next: [bold]openbell jobs[/] (job stats), [bold]openbell history[/] (runs), "
                "[bold]openbell events[/] (the audit log), [bold]openbell positions[/], [bold]openbell snapshots[/]"
            )

        run_async(main)
