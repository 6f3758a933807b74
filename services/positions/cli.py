"""``openbell positions``, ``openbell discrepancies``, ``openbell snapshots [--plot out.png]`` and
``openbell tail [SUBJECT]`` (follow the live feeds)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import msgspec
import nats.errors
import typer
from rich.table import Table

from eventstore import EventStore
from eventstore.projections import ProjectionRunner
from services.cli_support import console, fail, run_async
from services.positions.projection import PortfolioProjection


async def refresh(store: EventStore) -> None:
    """Bring the positions read models up to date (safe alongside a running projection service)."""
    await ProjectionRunner(store, [PortfolioProjection()]).run_once()


def _fmt(value: Any, places: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return f"{value:,.{places}f}"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M") if hasattr(value, "hour") else value.isoformat()
    return str(value)


def _json_rows(rows: list[dict[str, Any]]) -> None:
    sys.stdout.write(msgspec.json.encode(rows, enc_hook=str).decode() + "\n")


async def _fetch(*queries: tuple[Any, ...]) -> list[list[dict[str, Any]]]:
    """Run ``(sql, *args)`` queries on the caught-up read models; one result list per query."""
    from services.stack import connect_runtime

    async with connect_runtime(name="openbell-positions") as rt:
        await refresh(rt.store)
        async with rt.store.pool.acquire() as con:
            return [[dict(r) for r in await con.fetch(q[0], *q[1:])] for q in queries]


def positions_command(
    portfolio: Annotated[str | None, typer.Option("--portfolio", "-p", help="Only this portfolio.")] = None,
    flat: Annotated[bool, typer.Option("--flat", help="Include closed (flat) positions.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Positions per portfolio, valued at the latest observed price ('-': not priced, never 0)."""
    rows, summary = run_async(lambda: _fetch(
        ("""SELECT * FROM positions WHERE ($1::text IS NULL OR portfolio_id = $1) AND ($2 OR qty <> 0)
            ORDER BY portfolio_id, symbol""", portfolio, flat),
        ("SELECT * FROM portfolios WHERE ($1::text IS NULL OR portfolio_id = $1) ORDER BY portfolio_id", portfolio),
    ))
    if as_json:
        _json_rows(rows)
        return
    if portfolio is not None and not summary and not rows:
        raise fail(f"no portfolio {portfolio!r}")
    table = Table(title="positions")
    for column in ("portfolio", "symbol", "qty", "avg cost", "last price", "market value", "unrealized", "realized",
                   "priced at"):
        table.add_column(column, justify="left" if column in ("portfolio", "symbol", "priced at") else "right")
    for r in rows:
        table.add_row(r["portfolio_id"], r["symbol"], format(r["qty"].normalize(), "f"), _fmt(r["avg_cost"]),
                      _fmt(r["last_price"]), _fmt(r["market_value"]),
                      _fmt(r["unrealized_pnl"]), _fmt(r["realized_pnl"]), _fmt(r["price_at"]))
    console.print(table if rows else "no open positions" + (f" in {portfolio!r}" if portfolio else ""))
    totals = Table(title="portfolios")
    for column in ("portfolio", "cash", "market value", "equity", "realized", "unrealized", "halted"):
        totals.add_column(column, justify="left" if column in ("portfolio", "halted") else "right")
    for p in summary:
        totals.add_row(p["portfolio_id"], _fmt(p["cash"]), _fmt(p["market_value"]), _fmt(p["equity"]),
                       _fmt(p["realized_pnl"]), _fmt(p["unrealized_pnl"]),
                       f"[red]yes[/] ({p['halt_reason']})" if p["halted"] else "no")
    console.print(totals)


def discrepancies_command(
    open_only: Annotated[bool, typer.Option("--open", help="Only open (quarantined or halting) ones.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Position discrepancies found by position_sync, with their policy and status; quarantined symbols."""
    rows, quarantined = run_async(lambda: _fetch(
        ("SELECT * FROM position_discrepancies WHERE (NOT $1 OR status = 'open') ORDER BY detected_at, symbol",
         open_only),
        ("SELECT * FROM quarantined_symbols ORDER BY symbol",),
    ))
    if as_json:
        _json_rows(rows)
        return
    if not rows:
        console.print("no position discrepancies")
    else:
        table = Table(title="position discrepancies")
        for column in ("detected", "symbol", "kind", "ours", "broker", "owners", "policy", "status", "tick"):
            table.add_column(column)
        for r in rows:
            color = {"open": "yellow", "fixed": "green", "resolved": "green"}.get(r["status"], "white")
            table.add_row(_fmt(r["detected_at"]), r["symbol"], r["kind"], str(r["ours_qty"]), str(r["broker_qty"]),
                          ", ".join(r["owners"]) or "-", r["policy"], f"[{color}]{r['status']}[/]", r["tick_id"])
        console.print(table)
    if quarantined:
        console.print("quarantined (no new orders): " + ", ".join(
            f"{q['symbol']} since {_fmt(q['since'])} ({q['reason']})" for q in quarantined))


def snapshots_command(
    portfolio: Annotated[str | None, typer.Option("--portfolio", "-p", help="Only this portfolio.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Draw the equity curve into this PNG file.")] = None,
    percent: Annotated[
        bool, typer.Option("--percent", help="Plot the change from the starting cash in percent, not money.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The equity curve: one snapshot per portfolio per trading day (portfolio_snapshot at close + 5 min)."""
    if plot is not None and plot.suffix.lower() != ".png":
        raise fail(f"--plot needs a .png file name, got {str(plot)!r}")
    (rows,) = run_async(lambda: _fetch(
        ("SELECT s.*, p.starting_cash FROM portfolio_snapshots s LEFT JOIN portfolios p USING (portfolio_id)"
         " WHERE ($1::text IS NULL OR s.portfolio_id = $1) ORDER BY s.portfolio_id, s.trading_day", portfolio),
    ))
    if as_json:
        _json_rows(rows)
        return
    if not rows:
        console.print("no snapshots yet" + (f" for portfolio {portfolio!r}" if portfolio else ""))
        return
    table = Table(title="equity curve (portfolio_snapshots)")
    for column in ("portfolio", "trading day", "total value", "cash", "positions", "realized", "unrealized",
                   "change"):
        table.add_column(column, justify="left" if column in ("portfolio", "trading day") else "right")
    previous: dict[str, Decimal] = {}
    for r in rows:
        before = previous.get(r["portfolio_id"])
        change = "-" if before is None or before == 0 else f"{(r['total_value'] - before) / before:+.2%}"
        previous[r["portfolio_id"]] = r["total_value"]
        table.add_row(r["portfolio_id"], r["trading_day"].isoformat(), _fmt(r["total_value"]),
                      _fmt(r["cash_balance"]), _fmt(r["positions_value"]), _fmt(r["realized_pnl"]),
                      _fmt(r["unrealized_pnl"]), change)
    console.print(table)
    if plot is not None:
        try:
            draw_equity_curve(rows, plot, percent=percent)
        except OSError as exc:
            raise fail(f"cannot write {plot}: {exc.strerror or exc}") from None
        console.print(f"equity curve written to {plot}")


@dataclass(frozen=True)
class EquitySeries:
    """What the plot draws: trading days as evenly spaced positions (no weekend or holiday gaps), each
    portfolio's value per day (None: no snapshot that day) and its starting cash (the baseline)."""

    days: list[date]
    curves: dict[str, list[float | None]]
    baselines: dict[str, float | None]


def equity_series(rows: list[dict[str, Any]], *, percent: bool = False) -> EquitySeries:
    days = sorted({r["trading_day"] for r in rows})
    position = {day: i for i, day in enumerate(days)}
    curves: dict[str, list[float | None]] = {}
    baselines: dict[str, float | None] = {}
    for r in rows:
        start = r.get("starting_cash")
        curve = curves.setdefault(r["portfolio_id"], [None] * len(days))
        value = Decimal(r["total_value"])
        if percent:
            # Drawing only: the numbers stay Decimal everywhere else.
            curve[position[r["trading_day"]]] = float((value / start - 1) * 100) if start else None
            baselines[r["portfolio_id"]] = 0.0 if start else None
        else:
            curve[position[r["trading_day"]]] = float(value)
            baselines[r["portfolio_id"]] = float(start) if start is not None else None
    return EquitySeries(days, curves, baselines)


def draw_equity_curve(rows: list[dict[str, Any]], path: Path, *, percent: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    series = equity_series(rows, percent=percent)
    x = list(range(len(series.days)))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    try:
        for portfolio_id, values in sorted(series.curves.items()):
            (line,) = ax.plot(x, [v if v is not None else float("nan") for v in values], marker="o",
                              label=portfolio_id)
            baseline = series.baselines.get(portfolio_id)
            if baseline is not None:
                ax.axhline(baseline, color=line.get_color(), linestyle="--", linewidth=0.8, alpha=0.6)
        ax.set_title("openbell equity curve" + (" (change from starting cash)" if percent else ""))
        ax.set_xlabel("trading day (dashed: starting cash)")
        ax.set_ylabel("change" if percent else "total value")
        # One position per trading day: weekends and holidays leave no gaps; at most ~12 labels.
        ax.xaxis.set_major_locator(MaxNLocator(nbins=min(12, max(1, len(x))), integer=True))
        ax.xaxis.set_major_formatter(FuncFormatter(
            lambda v, _: series.days[int(v)].isoformat() if 0 <= int(v) < len(series.days) and v == int(v) else ""))
        ax.set_xlim(-0.5, len(x) - 0.5)
        ax.yaxis.set_major_formatter(FuncFormatter(
            (lambda v, _: f"{v:+.1f}%") if percent else (lambda v, _: f"${v:,.0f}")))
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.autofmt_xdate()
        fig.tight_layout()
        write_replacing(path, lambda out: fig.savefig(out, dpi=100, format="png"))
    finally:
        plt.close(fig)


def write_replacing(path: Path, write: Any) -> None:
    """Write a file through a new temporary file beside it and a rename: a symlink (or anything) at
    ``path`` is replaced, never followed, and a reader never sees half a file."""
    import os
    import tempfile

    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or Path("."))
    try:
        with os.fdopen(descriptor, "wb") as out:
            write(out)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def tail_command(
    subject: Annotated[str | None, typer.Argument(help="Subject to follow (default: <prefix>.feed.>).")] = None,
    count: Annotated[int | None, typer.Option("--count", "-n", min=1, help="Stop after this many messages.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Print message bodies as they are.")] = False,
) -> None:
    """Follow live feeds (prices, fills, alerts, snapshots, job runs) in the terminal until Ctrl-C."""
    from services.core.runtime import NatsCredentials, connect_nats, external_nats_credentials
    from services.core.servers import ensure_embedded
    from services.core.settings import load_settings, websocket_origins

    async def follow() -> None:
        settings = load_settings()
        if settings.nats_url is None:  # only NATS: a tail needs no database
            embedded = await asyncio.to_thread(
                ensure_embedded, settings.data_dir, postgres=False, prefix=settings.subject_prefix,
                websocket_origins=websocket_origins(settings),
            )
            assert embedded.nats is not None
            url, credentials = embedded.nats.url, NatsCredentials(role_passwords=embedded.nats.passwords())
        else:
            url, credentials = settings.nats_url, external_nats_credentials(settings)
        # Across a NATS restart it reconnects (one warning line each way) and keeps its subscription.
        nc = await connect_nats(url, "openbell-tail", **credentials.connect_options("operator"))
        target = subject or f"{settings.subject_prefix}.feed.>"
        queue: asyncio.Queue[Any] = asyncio.Queue()
        try:
            await nc.subscribe(target, cb=queue.put)
            console.print(f"following {target} (Ctrl-C to stop)", style="dim")
            seen = 0
            while count is None or seen < count:
                msg = await queue.get()
                seen += 1
                console.print(format_feed_line(msg.subject, msg.data, raw=raw), highlight=False, markup=False)
        finally:
            # Draining needs a connection; a tail stopped while NATS is away just closes.
            with contextlib.suppress(nats.errors.Error, OSError):
                await (nc.drain() if nc.is_connected else nc.close())

    run_async(follow)


def format_feed_line(subject: str, data: bytes, *, raw: bool = False) -> str:
    """One line per feed message: the subject and its fields (``key=value``), or the raw body."""
    if raw:
        return f"{subject}  {data.decode(errors='replace')}"
    try:
        body = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return f"{subject}  {data.decode(errors='replace')}"
    if isinstance(body, dict):
        fields = "  ".join(f"{k}={v}" for k, v in body.items() if v is not None and k != "kind")
        return f"{subject}  {fields}"
    return f"{subject}  {body}"


def register(app: typer.Typer) -> None:
    app.command("positions")(positions_command)
    app.command("discrepancies")(discrepancies_command)
    app.command("snapshots")(snapshots_command)
    app.command("tail")(tail_command)
