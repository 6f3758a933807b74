"""``openbell alerts create|list|remove`` and ``openbell notifications``.

The alert commands are sent to the alerts service over ``<prefix>.cmd.alert.*`` (request/reply). When no
alerts service answers, the CLI runs the very same command logic itself (``AlertCommands``: the same
validation, the same events), so alerts can be managed with only the servers up; a percent_change alert
then takes its reference price from the latest observed quotes only (give ``--reference`` otherwise).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import msgspec
import typer
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from rich.table import Table

from services.cli_support import console, fail, run_async
from services.positions import queries as positions_queries

alerts_app = typer.Typer(help="Price alerts: above, below, percent_change.", no_args_is_help=True)

REQUEST_TIMEOUT = 5.0


async def send_command(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The alerts service's reply, or the same command run here when no service answers."""
    from services.alerts.service import AlertCommands
    from services.stack import connect_runtime

    async with connect_runtime(name="openbell-alerts") as rt:
        data = msgspec.json.encode(payload)
        try:
            reply = await rt.nc.request(rt.subjects.cmd(f"alert.{name}"), data, timeout=REQUEST_TIMEOUT)
            return msgspec.json.decode(reply.data)
        except NoRespondersError:
            pass  # no alerts service running: the same logic, locally
        except NatsTimeout:
            return {"error": f"the alerts service did not answer within {REQUEST_TIMEOUT:.0f}s"}

        async def observed_price(symbol: str) -> Any:
            async with rt.store.pool.acquire() as con:
                return await positions_queries.latest_price(con, symbol)

        return await AlertCommands(rt.store, observed_price).handle(name, data)


def _run(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    reply = run_async(lambda: send_command(name, payload))
    if "error" in reply:
        raise fail(str(reply["error"]))
    return reply


@alerts_app.command("create")
def create_command(
    symbol: Annotated[str, typer.Argument(help="Ticker, e.g. AAPL.")],
    condition: Annotated[str, typer.Argument(help="above | below | percent_change")],
    threshold: Annotated[str, typer.Argument(
        help="A price (above/below) or a percent (percent_change); a negative one after --: "
             "`create AAPL percent_change -- -5`.")],
    reference: Annotated[str | None, typer.Option("--reference", help="Reference price of a percent_change "
                                                  "alert (default: the latest observed price).")] = None,
    portfolio: Annotated[str | None, typer.Option("--portfolio", "-p", help="Whose notification it is.")] = None,
    alert_id: Annotated[str | None, typer.Option("--id", help="Alert id (makes the create idempotent).")] = None,
) -> None:
    """Create a price alert."""
    payload: dict[str, Any] = {"symbol": symbol, "condition": condition, "threshold": threshold}
    if reference is not None:
        payload["reference_price"] = reference
    if portfolio is not None:
        payload["portfolio_id"] = portfolio
    if alert_id is not None:
        payload["alert_id"] = alert_id
    alert = _run("create", payload)["alert"]
    console.print(f"alert {alert['alert_id']}: {alert['symbol']} {alert['condition']} {alert['threshold']}"
                  + (f" (reference {alert['reference_price']})" if alert.get("reference_price") else ""))

    if not run_async(lambda: has_observed_quote(alert["symbol"])):
        console.print(
            f"warning: no quote of {alert['symbol']} has been observed: the alert stays unpriced (it cannot fire)"
            " until alert_price_check gets one; check the symbol", highlight=False,
        )


async def observed_prices(symbols: list[str]) -> dict[str, str]:
    """The latest observed price of each symbol that has one (as exact decimal strings)."""
    from services.stack import connect_runtime

    async with connect_runtime(name="openbell-alerts") as rt, rt.store.pool.acquire() as con:
        prices = await positions_queries.latest_prices_of(con, symbols)
    return {symbol: str(price) for symbol, price in prices.items()}


async def has_observed_quote(symbol: str) -> bool:
    from services.stack import connect_runtime

    async with connect_runtime(name="openbell-alerts") as rt, rt.store.pool.acquire() as con:
        return await positions_queries.latest_price(con, symbol) is not None


@alerts_app.command("list")
def list_command(
    active: Annotated[bool, typer.Option("--active", help="Only active alerts.")] = False,
    portfolio: Annotated[str | None, typer.Option("--portfolio", "-p", help="Only this portfolio's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List alerts and their status (active, triggered, removed)."""
    alerts = _run("list", {"active_only": active, "portfolio_id": portfolio})["alerts"]

    prices = run_async(lambda: observed_prices(sorted({a["symbol"] for a in alerts}))) if alerts else {}
    for a in alerts:
        # The latest observed price (null: unpriced, the alert cannot fire until a quote is seen).
        a["last_price"] = prices.get(a["symbol"])
    if as_json:
        sys.stdout.write(msgspec.json.encode(alerts).decode() + "\n")
        return
    if not alerts:
        console.print("no alerts")
        return
    table = Table(title="alerts")
    for column in ("id", "symbol", "condition", "threshold", "reference", "last price", "portfolio", "status",
                   "triggered"):
        table.add_column(column)
    for a in alerts:
        fired = f"{a['triggered_price']} at {a['triggered_at'][:16]}Z" if a.get("triggered_at") else "-"
        table.add_row(a["alert_id"], a["symbol"], a["condition"], a["threshold"], a.get("reference_price") or "-",
                      a["last_price"] or "unpriced", a.get("portfolio_id") or "-", a["status"], fired)
    console.print(table)


@alerts_app.command("remove")
def remove_command(alert_id: Annotated[str, typer.Argument(help="The alert's id.")]) -> None:
    """Remove an alert (it will not trigger any more)."""
    reply = _run("remove", {"alert_id": alert_id})
    console.print(f"alert {alert_id}: " + ("removed" if reply["removed"] else "already removed"))


def notifications_command(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many, newest first.")] = 20,
    portfolio: Annotated[str | None, typer.Option("--portfolio", "-p", help="Only this portfolio's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Notifications: fills, cancels, rejections, triggered alerts, tripped breakers, halts, discrepancies."""
    from eventstore.projections import ProjectionRunner
    from services.alerts.projection import AlertsProjection
    from services.stack import connect_runtime

    async def fetch() -> list[dict[str, Any]]:
        async with connect_runtime(name="openbell-notifications") as rt:
            await ProjectionRunner(rt.store, [AlertsProjection()]).run_once()
            async with rt.store.pool.acquire() as con:
                rows = await con.fetch(
                    """SELECT * FROM notifications WHERE ($2::text IS NULL OR portfolio_id = $2
                                                          OR portfolio_id IS NULL)
                       ORDER BY position DESC LIMIT $1""", limit, portfolio)
        return [dict(r) for r in rows]

    rows = run_async(fetch)
    if as_json:
        sys.stdout.write(msgspec.json.encode(rows, enc_hook=str).decode() + "\n")
        return
    if not rows:
        console.print("no notifications")
        return
    table = Table(title="notifications (newest first)")
    for column in ("at", "kind", "portfolio", "title", "detail"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["at"].strftime("%Y-%m-%d %H:%MZ"), r["kind"], r["portfolio_id"] or "-", r["title"], r["body"])
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")
    app.command("notifications")(notifications_command)
