"""The ``openbell`` command.

Each service adds its commands through a ``register(app)`` function in its own ``cli`` module, listed in
``_COMMAND_MODULES``; this file holds the foundation's commands: setup, doctor, events, replay, serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperOption

from eventstore import PositionNotFound, RecordedEvent
from eventstore.faults import is_retryable
from services import demo
from services.alerts import cli as alerts_cli
from services.cli_support import CommandError, console, err_console, fail, run_async
from services.clock import cli as clock_cli
from services.core.embedded import EmbeddedServerError
from services.core.jobs import cli as jobs_cli
from services.core.settings import SettingsError, load_settings
from services.orders import cli as orders_cli
from services.positions import cli as positions_cli
from services.stack import connect_runtime
from services.strategy import cli as strategy_cli

app = typer.Typer(
    name="openbell",
    help="openbell: an event-sourced automated trading scheduler.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

if TYPE_CHECKING:
    from services.core.host import ServiceContext


def _help_type_label(self: TyperOption, ctx: Any) -> str | None:
    """A flag takes no value, so its help shows no type (Typer printed ``<bool>`` on every one); choices
    are spaced so a narrow terminal wraps them between words, never inside one."""
    if self.is_flag:
        return None
    label = _typer_type_label(self, ctx)
    return label.replace("|", " | ") if label else label


_typer_type_label = TyperOption.display_type_rich
TyperOption.display_type_rich = _help_type_label  # type: ignore[method-assign]
log = logging.getLogger("openbell")

# Modules with a ``register(app: typer.Typer) -> None`` adding their commands.
_COMMAND_MODULES = (clock_cli, jobs_cli, strategy_cli, orders_cli, positions_cli, alerts_cli, demo)


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            console.print(f"openbell {version('openbell')}", highlight=False)
        except PackageNotFoundError:
            console.print("openbell (not installed as a package)", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """openbell: an event-sourced automated trading scheduler."""


# ------------------------------------------------------------------------------------------ servers

servers_app = typer.Typer(
    help="The embedded nats-server and PostgreSQL under OPENBELL_DATA_DIR: they run until stopped.",
    no_args_is_help=True,
)
app.add_typer(servers_app, name="servers")


def _data_dir_or_fail() -> Path:
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise fail(str(exc), 2) from None
    return settings.data_dir


@servers_app.command("start")
def servers_start() -> None:
    """Start the embedded servers detached (or say that they run already), on their recorded ports."""
    from services.core.servers import ensure_embedded
    from services.core.settings import websocket_origins

    data_dir = _data_dir_or_fail()
    settings = load_settings()
    try:
        started = ensure_embedded(
            data_dir, prefix=settings.subject_prefix, websocket_origins=websocket_origins(settings)
        )
    except EmbeddedServerError as exc:
        raise fail(str(exc), 2) from None
    for line in started.lines:
        console.print(line, highlight=False)


@servers_app.command("stop")
def servers_stop() -> None:
    """Stop the embedded servers of this data dir (services and tails using them lose their connection)."""
    from services.core.servers import stop_embedded

    for line in stop_embedded(_data_dir_or_fail()):
        console.print(line, highlight=False)


@servers_app.command("status")
def servers_status(
    as_json: Annotated[bool, typer.Option("--json", help="A JSON object: {servers: [...]}.")] = False,
) -> None:
    """Whether the embedded servers run, with their pid, ports and data dir (exit 1 when one is stopped)."""
    from services.core.servers import embedded_status

    statuses = embedded_status(_data_dir_or_fail())
    if as_json:
        sys.stdout.write(json.dumps({"servers": [dataclasses.asdict(s) for s in statuses]}) + "\n")
    else:
        for status in statuses:
            console.print(status.line(), highlight=False)
    if not all(s.running for s in statuses):
        raise typer.Exit(1)


# -------------------------------------------------------------------------------------------- setup


@app.command()
def setup() -> None:
    """Create or update the JetStream streams (as the NATS admin) and migrate the database (as its owner,
    OPENBELL_DATABASE_OWNER_URL), then exit: the one step that needs those identities (README, "Security")."""
    from services.core.runtime import connect_nats, ensure_servers, migrate_database
    from services.core.subjects import Subjects
    from services.stack import all_projections

    async def main() -> None:
        settings = load_settings()
        servers = await ensure_servers(settings)
        if servers.database_owner_url is None:
            raise CommandError("setup migrates the database as its owner: set OPENBELL_DATABASE_OWNER_URL")
        await migrate_database(servers, all_projections())
        nc = await connect_nats(servers.nats_url, "openbell-setup", **servers.nats_options("admin"))
        try:
            # With the replicas the services expect: they may read the streams, not update them.
            await Subjects(settings.subject_prefix).ensure_streams(
                nc.jetstream(), dedupe_window=settings.dedupe_window_seconds, replicas=settings.stream_replicas)
        finally:
            await nc.close()
        console.print("ok: database migrated, streams in place")

    run_async(main)


# ------------------------------------------------------------------------------------------- doctor


@app.command()
def doctor() -> None:
    """Start or contact NATS and PostgreSQL, create the schema, and print what was found."""

    from eventstore.projections import ProjectionRunner
    from services.stack import all_projections

    async def check() -> None:
        async with connect_runtime(name="openbell-doctor") as rt:
            table = Table(title="openbell doctor", show_header=True)
            table.add_column("check")
            table.add_column("result")
            origins = rt.servers.describe()
            async with rt.store.pool.acquire() as con:
                version = await con.fetchval("SHOW server_version")
                db = await con.fetchval("SELECT current_database()")
            table.add_row("PostgreSQL", f"{version}, database {db!r} ({origins['postgres']})")
            checkpoints = await rt.store.checkpoints()
            table.add_row("event store", f"schema ready, {await rt.store.count()} events")
            info = rt.nc._server_info
            # Host and port only: a URL may carry credentials.
            url = rt.nc.connected_url
            where = f"{url.hostname}:{url.port}" if url is not None else "?"
            table.add_row("NATS", f"nats-server {info.get('version')} at {where} ({origins['nats']})")
            account = await rt.js.account_info()
            table.add_row("JetStream", f"enabled, {account.streams} streams, {account.consumers} consumers")
            for stream in (rt.subjects.ticks_stream, rt.subjects.events_stream, rt.subjects.dlq_stream):
                stream_info = await rt.js.stream_info(stream)
                table.add_row(f"stream {stream}", f"{stream_info.state.messages} messages")
            for name, position in checkpoints.items():
                table.add_row(f"checkpoint {name}", str(position))
            runner = ProjectionRunner(rt.store, all_projections())
            stopped = {name: problem for name in sorted(runner.projections) if (problem := await runner.check(name))}
            for name, problem in stopped.items():
                table.add_row(f"projection {name}", f"[red]STOPPED[/]: {problem}")
            if rt.servers.embedded_postgres is not None or rt.servers.embedded_nats is not None:
                table.add_row("data dir", str(rt.settings.data_dir.resolve()))
            console.print(table)
            if stopped:
                raise CommandError(f"projection(s) stopped: {', '.join(stopped)} (see the table above)")
            console.print("[green]ok[/]: both servers reachable, schema in place.")

    run_async(check)


# ------------------------------------------------------------------------------------------- events


def _event_line(event: RecordedEvent) -> str:
    return (
        f"{event.global_position:>8}  {event.recorded_at:%Y-%m-%d %H:%M:%S}  "
        f"{event.stream_id}@{event.version}  {event.type}  {event.data}"
    )


def event_json(event: RecordedEvent) -> dict[str, object]:
    """One event as plain JSON: ``data`` an object (not the stored JSON text), times ISO 8601 with zone."""
    return {
        "global_position": event.global_position,
        "stream_id": event.stream_id,
        "version": event.version,
        "event_id": str(event.event_id),
        "type": event.type,
        "recorded_at": event.recorded_at.isoformat(),
        "data": msgspec.json.decode(event.data),
        "metadata": event.metadata,
    }


@app.command()
def events(
    stream: Annotated[str | None, typer.Option("--stream", "-s", help="Only this stream.")] = None,
    from_position: Annotated[int, typer.Option("--from", help="Start after this global position.")] = 0,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", "-n", help="At most this many events.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line (data and metadata as nested objects).")
    ] = False,
) -> None:
    """Print the event log (the audit trail), in commit order."""
    if from_position < 0:
        raise fail("--from must be >= 0")

    def show(event: RecordedEvent) -> None:
        if as_json:
            sys.stdout.write(msgspec.json.encode(event_json(event)).decode() + "\n")
        else:
            console.print(_event_line(event), highlight=False, markup=False)

    async def print_events() -> None:
        if follow:
            await follow_events()
            return
        async with connect_runtime(name="openbell-events") as rt:
            shown = 0
            if stream is not None:
                source = rt.store.read_stream(stream)
            else:
                source = rt.store.read_all(from_position)
            try:
                # aclosing: leaving early must release the generator's database connection at once.
                async with contextlib.aclosing(source) as stream_of_events:
                    async for event in stream_of_events:
                        if event.global_position <= from_position and stream is not None:
                            continue
                        if stream is not None and event.stream_id != stream:
                            continue
                        show(event)
                        shown += 1
                        if limit is not None and shown >= limit:
                            return
            except PositionNotFound as exc:
                raise CommandError(f"{exc} (use a position printed by 'openbell events')") from None
            if stream is not None and shown == 0 and not follow:
                raise CommandError(
                    f"no stream {stream!r} in the event store (streams: openbell events shows them)"
                    if await rt.store.stream_version(stream) < 0
                    else f"stream {stream!r} has no events after position {from_position}"
                )

    async def follow_events() -> None:
        """Catch up, then follow; a lost database is one warning line, and it resumes after the last event
        printed once the database answers again."""
        from services.core.servers import redact_url

        after, shown = from_position, 0
        async with connect_runtime(name="openbell-events") as rt:
            where = redact_url(rt.servers.database_url)
            while True:
                try:
                    async with contextlib.aclosing(rt.store.subscribe_all(after)) as stream_of_events:
                        async for event in stream_of_events:
                            after = event.global_position
                            if stream is not None and event.stream_id != stream:
                                continue
                            show(event)
                            shown += 1
                            if limit is not None and shown >= limit:
                                return
                except PositionNotFound as exc:
                    raise CommandError(f"{exc} (use a position printed by 'openbell events')") from None
                except Exception as exc:
                    if not is_retryable(exc):  # the database's outage (one classification, eventstore.faults)
                        raise
                    log.warning("lost PostgreSQL at %s (%s); retrying every 2s", where,
                                str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                    while True:
                        await asyncio.sleep(2)
                        try:
                            async with rt.store.pool.acquire() as con:
                                await con.fetchval("SELECT 1")
                        except Exception as exc:
                            if not is_retryable(exc):
                                raise
                            continue
                        log.warning("PostgreSQL at %s is back", where)
                        break

    run_async(print_events)


# ------------------------------------------------------------------------------------------- replay


@app.command()
def replay(
    projection: Annotated[str | None, typer.Option("--projection", "-p", help="Only this projection.")] = None,
) -> None:
    """Rebuild read models from the event log (each projection in one transaction), with progress."""
    from eventstore.projections import ProjectionRunner
    from services.stack import all_projections

    async def rebuild() -> None:
        async with connect_runtime(name="openbell-replay") as rt:
            runner = ProjectionRunner(rt.store, all_projections())
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


# -------------------------------------------------------------------------------------------- serve


@app.command()
def serve(
    names: Annotated[list[str] | None, typer.Argument(help="Services to run (default: all).")] = None,
    virtual: Annotated[
        bool, typer.Option("--virtual", help="Simulated time: each slot once the previous slot's runs are recorded.")
    ] = False,
    from_day: Annotated[
        str | None, typer.Option("--from", help="With --virtual and clock: first exchange date YYYY-MM-DD.")
    ] = None,
    days: Annotated[int, typer.Option("--days", help="With --virtual and clock: trading days to run.")] = 1,
    tick_timeout: Annotated[
        float, typer.Option("--tick-timeout", help="With --virtual and clock: seconds a tick's run may take.")
    ] = 600.0,
) -> None:
    """Run openbell services in this process until interrupted (relay, projections, clock, strategy,
    orders, positions, alerts, web, or all). More copies of a service share its work.

    With --virtual every service runs in simulated time; a virtual clock (clock with --from and --days)
    emits each slot once the previous slot's runs are recorded, and the process ends after the last."""
    from services.broker import check_trading_configuration
    from services.broker.errors import BrokerConfigError
    from services.core.host import ServiceLoopDied
    from services.stack import SERVICES, serve_forever

    try:
        chosen = [service.name for service in SERVICES.resolve(names or [])]
        until = _virtual_clock_run(chosen, virtual, from_day, days, tick_timeout)
    except ValueError as exc:
        raise fail(str(exc)) from None
    try:
        load_settings()
        check_trading_configuration()  # refused here, at start: never an idle service that warns forever
    except (SettingsError, BrokerConfigError) as exc:
        raise fail(str(exc), 2) from None
    console.print(f"serving: {', '.join(chosen)}{' in virtual time' if virtual else ''} (Ctrl-C to stop)")
    try:
        run_async(lambda: serve_forever(chosen, virtual=virtual, until=until))
    except ServiceLoopDied as exc:
        # Exit non-zero: a supervisor (compose, systemd) restarts the process with every loop running.
        raise fail(str(exc)) from None


def _virtual_clock_run(
    chosen: list[str], virtual: bool, from_day: str | None, days: int, tick_timeout: float
) -> Callable[[ServiceContext], Awaitable[None]] | None:
    """The virtual clock's run when ``serve clock --virtual --from DATE`` asks for one (else None)."""
    from datetime import date

    from services.clock.virtual import VirtualClock, VirtualClockStalled, virtual_span

    if not virtual:
        if from_day is not None:
            raise ValueError("--from needs --virtual (the real-time clock runs from now)")
        return None
    if "clock" not in chosen:
        if from_day is not None:
            raise ValueError("--from is the virtual clock's: add the clock service")
        return None
    if from_day is None:
        raise ValueError("a virtual clock needs --from YYYY-MM-DD (and --days N)")
    try:
        first = date.fromisoformat(from_day)
    except ValueError:
        raise ValueError(f"invalid --from {from_day!r}: expected YYYY-MM-DD") from None
    if tick_timeout <= 0:
        raise ValueError("--tick-timeout must be positive")
    start, end = virtual_span(first, days)

    async def run(ctx: ServiceContext) -> None:
        clock = VirtualClock(ctx.rt.store, ctx.rt.nc, ctx.rt.subjects, tick_timeout=tick_timeout)
        try:
            result = await clock.run(start, end, resume=True)
        except VirtualClockStalled as exc:
            raise CommandError(str(exc)) from None
        console.print(
            f"virtual clock: {result.instants} instants ({result.resumed_instants} already run), {result.ticks}"
            f" ticks from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC in {result.seconds:.1f}s;"
            f" {dict(sorted(result.outcomes.items()))}",
            highlight=False,
        )

    return run


# ---------------------------------------------------------------------------------------------- main


def _register_commands() -> None:
    for module in _COMMAND_MODULES:
        module.register(app)


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
