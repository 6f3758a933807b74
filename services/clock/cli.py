"""``openbell schedule`` (no server needed) and ``openbell tick <job_type>`` (a manual tick now)."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from typing import Annotated, Any

import msgspec
import typer
from rich.table import Table

from services.cli_support import console, fail, run_async
from services.clock import calendar, schedule
from services.clock.ticks import manual_tick, publish_tick
from services.core.jobs.runner import JobRunner
from services.core.jobs.types import parse_job_type


def schedule_data(day: date) -> dict[str, Any]:
    """Every slot of ``day`` (exchange date), New York and UTC (pure)."""
    sess = calendar.session(day)
    slots = schedule.day_slots(day)
    return {
        "date": day.isoformat(),
        "trading_day": sess is not None,
        "open": sess.open_ny.isoformat() if sess else None,
        "close": sess.close_ny.isoformat() if sess else None,
        "early_close": bool(sess and sess.early_close),
        "slots": [
            {
                "job_type": s.job_type.value,
                "new_york": s.scheduled_at.astimezone(calendar.NEW_YORK).isoformat(),
                "utc": schedule.format_utc(s.scheduled_at),
                "tick_id": s.tick_id,
            }
            for s in slots
        ],
    }


def _parse_date(value: str | None) -> date:
    if value is None:
        return calendar.exchange_date(datetime.now(UTC))  # "today" in New York: a CLI input
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"invalid --date {value!r}: expected YYYY-MM-DD") from None


def schedule_command(
    day: Annotated[str | None, typer.Option("--date", help="Exchange date YYYY-MM-DD (default: today, New York).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print every job slot of a trading day, in New York time and UTC (no server needed)."""
    try:
        data = schedule_data(_parse_date(day))
    except ValueError as exc:
        raise fail(str(exc)) from None
    if as_json:
        sys.stdout.write(msgspec.json.encode(data).decode() + "\n")
        return
    if not data["trading_day"]:
        console.print(f"{data['date']}: the exchange (XNYS) is closed, no slots.")
        return
    title = f"{data['date']}  open {data['open'][11:16]}  close {data['close'][11:16]} New York"
    if data["early_close"]:
        title += "  (early close)"
    table = Table(title=title)
    for column in ("New York", "UTC", "job_type", "tick id"):
        table.add_column(column)
    for slot in data["slots"]:
        table.add_row(slot["new_york"][11:19], slot["utc"][11:19], slot["job_type"], slot["tick_id"])
    console.print(table)
    counts: dict[str, int] = {}
    for slot in data["slots"]:
        counts[slot["job_type"]] = counts.get(slot["job_type"], 0) + 1
    console.print(", ".join(f"{job}: {n}" for job, n in counts.items()) + f"; {len(data['slots'])} slots")


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, ``>`` the rest."""
    tokens, wanted = pattern.split("."), subject.split(".")
    for i, token in enumerate(tokens):
        if token == ">":
            return len(wanted) > i
        if i >= len(wanted) or (token != "*" and token != wanted[i]):
            return False
    return len(tokens) == len(wanted)


def tick_command(job_type: Annotated[str, typer.Argument(help="A job type (openbell jobs lists them).")]) -> None:
    """Emit a manual tick for a job now (the job's consumer runs it)."""
    from services.stack import connect_runtime

    try:
        job = parse_job_type(job_type)
    except ValueError as exc:
        raise fail(str(exc)) from None

    async def emit() -> None:
        # A manual tick is a tick: it is published with the clock's NATS role (README, "Security").
        async with connect_runtime(name="openbell-tick", role="clock") as rt:
            tick = manual_tick(job, datetime.now(UTC))
            ack = await publish_tick(rt.js, rt.subjects, tick)
            if ack.duplicate:
                console.print(f"{tick.tick_id}: already emitted (duplicate dropped by JetStream)")
            else:
                console.print(f"emitted {tick.tick_id} on {rt.subjects.tick(job.value)} (stream seq {ack.seq})")
            # Say it when nothing will happen: a disabled job skips it, and with no consumer it waits.
            health, _, _ = await JobRunner(rt.store).health(job)
            if health.status.value != "enabled":
                console.print(
                    f"warning: {job.value} is {health.status.value}: this tick is recorded as skipped, not run"
                    f" (openbell jobs enable {job.value})", highlight=False,
                )
            consumers = await rt.js.consumers_info(rt.subjects.ticks_stream)
            subject = rt.subjects.tick(job.value)
            if not any(subject_matches(c.config.filter_subject or ">", subject) for c in consumers):
                console.print(
                    f"warning: no service consumes {job.value} ticks yet: it waits in the stream until one"
                    " starts (openbell serve)", highlight=False,
                )

    run_async(emit)


def register(app: typer.Typer) -> None:
    app.command("schedule")(schedule_command)
    app.command("tick")(tick_command)
