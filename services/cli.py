"""The ``openbell`` command.

Each service adds its commands through a ``register(app)`` function in its own ``cli`` module, listed in
``_COMMAND_MODULES``; this file holds the foundation's commands: doctor, events, replay, relay.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from eventstore import EventStoreError, PositionNotFound, RecordedEvent
from services.core import eventloop
from services.core.runtime import connect_runtime
from services.core.settings import SettingsError, load_settings

app = typer.Typer(
    name="openbell",
    help="openbell: an event-sourced automated trading scheduler.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Tables keep Rich's width on a terminal (or COLUMNS); piped into a file or another program, they are not
# cut to Rich's default of 80 columns, where the wider tables (jobs, history, orders) become unreadable.
PIPED_WIDTH = 160
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else PIPED_WIDTH)
err_console = Console(stderr=True, soft_wrap=True)

T = TypeVar("T")

# Modules with a ``register(app: typer.Typer) -> None`` adding their commands.
_COMMAND_MODULES = (
    "services.clock.cli",
    "services.core.jobs.cli",
    "services.strategy.cli",
    "services.orders.cli",
    "services.positions.cli",
    "services.alerts.cli",
    "services.demo",
)


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def run_async(coro_factory: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine; turn expected failures into one-line errors instead of tracebacks."""
    try:
        settings_level = load_settings().log_level
    except SettingsError as exc:
        raise fail(str(exc), 2) from None
    logging.basicConfig(level=settings_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return eventloop.run(coro_factory())  # type: ignore[arg-type]
    except SettingsError as exc:
        raise fail(str(exc), 2) from None
    except (CommandError, EventStoreError, ValueError) as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


# ------------------------------------------------------------------------------------------- doctor


@app.command()
def doctor() -> None:
    """Start or contact NATS and PostgreSQL, create the schema, and print what was found."""

    async def check() -> None:
        async with connect_runtime(name="openbell-doctor") as rt:
            table = Table(title="openbell doctor", show_header=True)
            table.add_column("check")
            table.add_column("result")
            origins = rt.servers.describe()
            async with rt.store.pool.acquire() as con:
                version = await con.fetchval("SHOW server_version")
                db = await con.fetchval("SELECT current_database()")
                checkpoints = await con.fetch("SELECT name, position FROM eventstore_checkpoints ORDER BY name")
            table.add_row("PostgreSQL", f"{version}, database {db!r} ({origins['postgres']})")
            table.add_row("event store", f"schema ready, {await rt.store.count()} events")
            info = rt.nc._server_info
            where = rt.nc.connected_url.netloc if rt.nc.connected_url else "?"
            table.add_row("NATS", f"nats-server {info.get('version')} at {where} ({origins['nats']})")
            account = await rt.js.account_info()
            table.add_row("JetStream", f"enabled, {account.streams} streams, {account.consumers} consumers")
            for stream in (rt.subjects.ticks_stream, rt.subjects.events_stream, rt.subjects.dlq_stream):
                stream_info = await rt.js.stream_info(stream)
                table.add_row(f"stream {stream}", f"{stream_info.state.messages} messages")
            for row in checkpoints:
                table.add_row(f"checkpoint {row['name']}", str(row["position"]))
            if rt.servers.embedded_postgres is not None or rt.servers.embedded_nats is not None:
                table.add_row("data dir", str(rt.settings.data_dir.resolve()))
            console.print(table)
            console.print("[green]ok[/]: both servers reachable, schema in place.")

    run_async(check)


# ------------------------------------------------------------------------------------------- events


def _event_line(event: RecordedEvent) -> str:
    return (
        f"{event.global_position:>8}  {event.recorded_at:%Y-%m-%d %H:%M:%S}  "
        f"{event.stream_id}@{event.version}  {event.type}  {event.data}"
    )


@app.command()
def events(
    stream: Annotated[str | None, typer.Option("--stream", "-s", help="Only this stream.")] = None,
    from_position: Annotated[int, typer.Option("--from", help="Start after this global position.")] = 0,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", "-n", help="At most this many events.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Print the event log (the audit trail), in commit order."""
    if from_position < 0:
        raise fail("--from must be >= 0")

    def show(event: RecordedEvent) -> None:
        if as_json:
            sys.stdout.write(msgspec.json.encode(event).decode() + "\n")
        else:
            console.print(_event_line(event), highlight=False, markup=False)

    async def print_events() -> None:
        async with connect_runtime(name="openbell-events") as rt:
            shown = 0
            if stream is not None and not follow:
                source = rt.store.read_stream(stream)
            else:
                source = rt.store.subscribe_all(from_position) if follow else rt.store.read_all(from_position)
            try:
                # aclosing: leaving early must release the generator's database connection at once.
                async with contextlib.aclosing(source) as stream_of_events:
                    async for event in stream_of_events:
                        if event.global_position <= from_position and stream is not None and not follow:
                            continue
                        if stream is not None and event.stream_id != stream:
                            continue
                        show(event)
                        shown += 1
                        if limit is not None and shown >= limit:
                            return
            except PositionNotFound as exc:
                raise CommandError(f"{exc} (use a position printed by 'openbell events')") from None

    run_async(print_events)


# ------------------------------------------------------------------------------------------- replay


@app.command()
def replay(
    projection: Annotated[str | None, typer.Option("--projection", "-p", help="Only this projection.")] = None,
) -> None:
    """Rebuild read models from the event log (each projection in one transaction), with progress."""
    from eventstore.projections import ProjectionRunner
    from services.core.projections import known_projections

    async def rebuild() -> None:
        async with connect_runtime(name="openbell-replay") as rt:
            runner = ProjectionRunner(rt.store, known_projections())
            names = [projection] if projection else sorted(runner.projections)
            for name in names:
                runner[name]  # fail early on an unknown name
            total = await rt.store.count()
            with Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=console,
            ) as progress:
                for name in names:
                    task = progress.add_task(f"rebuild {name}", total=total)
                    count = await runner.rebuild(name, progress=lambda n, t=task: progress.advance(t, n))
                    progress.update(task, completed=count, total=count)
            console.print(f"rebuilt {len(names)} projection(s) from {total} events")

    try:
        run_async(rebuild)
    except KeyError as exc:
        raise fail(str(exc.args[0])) from None


# -------------------------------------------------------------------------------------------- relay


@app.command()
def serve(
    names: Annotated[list[str] | None, typer.Argument(help="Services to run (default: all).")] = None,
) -> None:
    """Run openbell services in this process until interrupted (relay, projections, clock, strategy,
    orders, positions, alerts, or all). More copies of a service share its work."""
    from services.core.host import ServiceLoopDied, resolve_services, serve_forever

    try:
        chosen = resolve_services(names or [])
    except ValueError as exc:
        raise fail(str(exc)) from None
    console.print(f"serving: {', '.join(chosen)} (Ctrl-C to stop)")
    try:
        run_async(lambda: serve_forever(chosen))
    except ServiceLoopDied as exc:
        # Exit non-zero: a supervisor (compose, systemd) restarts the process with every loop running.
        raise fail(str(exc)) from None


# ---------------------------------------------------------------------------------------------- main


def _register_commands() -> None:
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(app)


def main() -> None:
    _register_commands()
    try:
        app()
    except SettingsError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()

__all__ = ["CommandError", "app", "console", "fail", "main", "run_async"]
