"""``openbell jobs``, ``openbell jobs enable|disable <job_type>``, ``openbell history``."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated, Any

import msgspec
import typer
from rich.table import Table

from eventstore import EventStore
from eventstore.projections import ProjectionRunner
from services.cli_support import console, fail, run_async
from services.core.jobs.projection import JobsProjection, job_history, job_stats
from services.core.jobs.runner import JobRunner
from services.core.jobs.types import parse_job_type

jobs_app = typer.Typer(help="Job stats (scheduled_jobs) and operator actions.", no_args_is_help=False)


async def refresh(store: EventStore) -> None:
    """Bring the jobs read model up to date (safe alongside a running projection service)."""
    await ProjectionRunner(store, [JobsProjection()]).run_once()


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M:%SZ")
    return str(value)


@jobs_app.callback(invoke_without_command=True)
def jobs_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Table of every job: status, schedule, last/next run, runs, failures, average duration."""
    if ctx.invoked_subcommand is not None:
        return
    from services.stack import connect_runtime

    async def show() -> None:
        async with connect_runtime(name="openbell-jobs") as rt:
            await refresh(rt.store)
            async with rt.store.pool.acquire() as con:
                rows = await job_stats(con)
        if as_json:
            sys.stdout.write(msgspec.json.encode(rows).decode() + "\n")
            return
        table = Table(title="scheduled jobs")
        for column in ("job_type", "status", "last run", "next run", "runs", "failures", "consec.",
                       "skipped", "avg ms", "failure rate", "last error"):
            table.add_column(column)
        for r in rows:
            status = {"enabled": "[green]enabled[/]", "disabled": "[yellow]disabled[/]"}.get(
                r["status"], "[red]error[/]"
            )
            table.add_row(
                r["job_type"], status, _fmt(r["last_run_at"]), _fmt(r["next_run_at"]), str(r["total_runs"]),
                str(r["total_failures"]), str(r["consecutive_failures"]), str(r["total_skipped"]),
                _fmt(r["avg_duration_ms"]), f"{r['failure_rate']:.1%}", (r["last_error"] or "-")[:60],
            )
        console.print(table)

    run_async(show)


def _operator_action(job_type: str, enable: bool, reason: str) -> None:
    from services.stack import connect_runtime

    try:
        job = parse_job_type(job_type)
    except ValueError as exc:
        raise fail(str(exc)) from None

    async def act() -> None:
        async with connect_runtime(name="openbell-jobs") as rt:
            runner = JobRunner(rt.store)
            by = f"cli:{getpass.getuser()}"
            changed = await (runner.enable if enable else runner.disable)(job, by=by, reason=reason)
            health, _, _ = await runner.health(job)
            await refresh(rt.store)
        verb = "enabled" if enable else "disabled"
        if changed:
            console.print(f"{job.value}: {verb} (status {health.status.value})")
        else:
            console.print(f"{job.value}: already {health.status.value}, nothing to do")

    run_async(act)


@jobs_app.command("enable")
def enable_command(
    job_type: Annotated[str, typer.Argument(help="A job type (openbell jobs lists them).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the event).")] = "",
) -> None:
    """Enable a job (closes an open circuit breaker and resets its failure streak)."""
    _operator_action(job_type, True, reason)


@jobs_app.command("disable")
def disable_command(
    job_type: Annotated[str, typer.Argument(help="A job type (openbell jobs lists them).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the event).")] = "",
) -> None:
    """Disable a job: its ticks are acknowledged and recorded as skipped without running."""
    _operator_action(job_type, False, reason)


def history_command(
    job: Annotated[str | None, typer.Option("--job", help="Only this job type.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many runs.")] = 20,
    failed: Annotated[bool, typer.Option("--failed", help="Only failed runs.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Job executions (runs), newest first, with their counters or error."""
    from services.stack import connect_runtime

    try:
        job_type = parse_job_type(job).value if job is not None else None
    except ValueError as exc:
        raise fail(str(exc)) from None

    async def show() -> None:
        async with connect_runtime(name="openbell-history") as rt:
            await refresh(rt.store)
            async with rt.store.pool.acquire() as con:
                rows = await job_history(con, job_type=job_type, limit=limit, failed_only=failed)
        if as_json:
            sys.stdout.write(msgspec.json.encode(rows).decode() + "\n")
            return
        if not rows:
            what = "failed job executions" if failed else "job executions"
            console.print(f"no {what} recorded" + (f" for {job_type}" if job_type else ""))
            return
        table = Table(title="job executions")
        for column in ("started", "job_type", "tick id", "att.", "status", "ms", "counters / error"):
            table.add_column(column)
        for r in rows:
            detail = r["error"] if r["status"] == "failed" else f"not run: {r['error']}" if r["status"] == "skipped" \
                else ", ".join(
                f"{k}={v}" for k, v in (r["metadata"] or {}).items()
            )
            colour = {"completed": "green", "failed": "red"}.get(r["status"], "yellow")
            table.add_row(
                _fmt(r["started_at"]), r["job_type"], r["tick_id"], str(r["attempt"]),
                f"[{colour}]{r['status']}[/]", _fmt(r["duration_ms"]), detail or "-",
            )
        console.print(table)

    run_async(show)


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")
    app.command("history")(history_command)
