"""``openbell positions``, ``openbell discrepancies``, ``openbell snapshots [--plot out.png]`` and
``openbell tail [SUBJECT]`` (follow the live feeds)."""

from __future__ import annotations

import asyncio
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import msgspec
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
    from services.core.runtime import connect_runtime

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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The equity curve: one snapshot per portfolio per trading day (portfolio_snapshot at close + 5 min)."""
    if plot is not None and plot.suffix.lower() != ".png":
        raise fail(f"--plot needs a .png file name, got {str(plot)!r}")
    (rows,) = run_async(lambda: _fetch(
        ("SELECT * FROM portfolio_snapshots WHERE ($1::text IS NULL OR portfolio_id = $1)"
         " ORDER BY portfolio_id, trading_day", portfolio),
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
            draw_equity_curve(rows, plot)
        except OSError as exc:
            raise fail(f"cannot write {plot}: {exc.strerror or exc}") from None
        console.print(f"equity curve written to {plot}")


def draw_equity_curve(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, tuple[list[date], list[float]]] = {}
    for r in rows:
        days, values = curves.setdefault(r["portfolio_id"], ([], []))
        days.append(r["trading_day"])
        values.append(float(r["total_value"]))  # drawing only: the numbers stay Decimal everywhere else
    fig, ax = plt.subplots(figsize=(9, 4.5))
    try:
        for portfolio_id, (days, values) in sorted(curves.items()):
            ax.plot(days, values, marker="o", label=portfolio_id)
        ax.set_title("openbell equity curve")
        ax.set_xlabel("trading day")
        ax.set_ylabel("total value")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def tail_command(
    subject: Annotated[str | None, typer.Argument(help="Subject to follow (default: <prefix>.feed.>).")] = None,
    count: Annotated[int | None, typer.Option("--count", "-n", min=1, help="Stop after this many messages.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Print message bodies as they are.")] = False,
) -> None:
    """Follow live feeds (prices, fills, alerts, snapshots, job runs) in the terminal until Ctrl-C."""
    from services.core.runtime import connect_nats, ensure_servers
    from services.core.settings import load_settings

    async def follow() -> None:
        settings = load_settings()
        servers = await ensure_servers(settings)
        nc = await connect_nats(servers.nats_url, "openbell-tail")
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
            await nc.drain()

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
