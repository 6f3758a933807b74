"""``openbell portfolio ...``, ``openbell strategy ...``, ``openbell apply FILE``, ``openbell halt|resume``.

The commands append through the same functions the strategy service serves on
``<prefix>.cmd.portfolio.*``: validation first, nothing appended on bad input, idempotent repeats.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from services.cli_support import console, fail, run_async
from services.model.text import one_line, shown
from services.strategy import commands
from services.strategy.commands import CommandResult
from services.strategy.config import ConfigError, load_portfolios_toml, parse_portfolio_spec

portfolio_app = typer.Typer(help="Open, inspect, halt and resume portfolios.", no_args_is_help=True)
strategy_app = typer.Typer(help="Attach, enable and disable a portfolio's strategies.", no_args_is_help=True)


def _now() -> datetime:
    return datetime.now(UTC)  # operator commands happen now; trading decisions use the tick's time


def _process_mode() -> str:
    from services.core.settings import load_settings

    return load_settings().trading_mode


def _report(results: list[CommandResult]) -> None:
    for result in results:
        name = result.portfolio_id or "trading"
        if not result.changes:
            console.print(f"{name}: up to date, nothing to change")
        for change in result.changes:
            console.print(f"{name}: {change}")


def _run(action: Any) -> None:
    """Run a command coroutine factory taking the store; configuration errors become one-line errors."""
    from services.stack import connect_runtime

    async def main() -> list[CommandResult]:
        async with connect_runtime(name="openbell-cli") as rt:
            result = await action(rt.store)
            return result if isinstance(result, list) else [result]

    try:
        results = run_async(main)
    except (ConfigError, commands.CommandRefused) as exc:
        raise fail(str(exc)) from None
    _report(results)


@portfolio_app.command("open")
def portfolio_open(
    name: Annotated[str, typer.Argument(help="Portfolio name (lower case, digits, - and _).")],
    cash: Annotated[str, typer.Option("--cash", help="Starting cash, e.g. 100000.")],
    mode: Annotated[str, typer.Option("--mode", help="paper or live.")] = "paper",
    risk: Annotated[
        str | None, typer.Option("--risk", help='Risk limits as JSON, e.g. \'{"max_order_notional": "5000"}\'.')
    ] = None,
) -> None:
    """Open a portfolio with starting cash (strategies are attached with `openbell strategy attach`)."""
    try:
        Decimal(cash)
    except InvalidOperation:
        raise fail(f"--cash must be a number, e.g. 100000 (got {shown(cash)})") from None
    try:
        risk_limits = json.loads(risk) if risk else {}
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        example = '{"max_order_notional": "5000"}'
        raise fail(f"--risk must be JSON, e.g. '{example}' ({one_line(str(exc), 80)})") from None
    spec = {"name": name, "starting_cash": cash, "trading_mode": mode, "risk": risk_limits}

    async def action(store: Any) -> CommandResult:
        parsed = parse_portfolio_spec(spec)
        commands.check_trading_mode(parsed, _process_mode())
        return await commands.open_portfolio(store, parsed, _now())

    _run(action)


@portfolio_app.command("halt")
def portfolio_halt(name: str, reason: Annotated[str, typer.Option(help="Why (recorded).")] = "operator") -> None:
    """Stop a portfolio from placing orders until resumed."""
    _run(lambda store: commands.set_portfolio_halted(store, name, True, reason, _now()))


@portfolio_app.command("resume")
def portfolio_resume(name: str, reason: Annotated[str, typer.Option(help="Why (recorded).")] = "") -> None:
    """Let a halted portfolio place orders again."""
    _run(lambda store: commands.set_portfolio_halted(store, name, False, reason, _now()))


@portfolio_app.command("list")
def portfolio_list() -> None:
    """Portfolios with their strategies and state."""
    from services.stack import connect_runtime
    from services.strategy.portfolio import load_portfolio

    async def main() -> list[Any]:
        async with connect_runtime(name="openbell-cli") as rt:
            # Every portfolio stream; one that was never opened (positions no portfolio owns) folds to None.
            ids = [stream_id.removeprefix("portfolio-") for stream_id in await rt.store.stream_ids("portfolio-")]
            return [await load_portfolio(rt.store, pid) for pid in ids]

    table = Table(title="portfolios")
    for column in ("portfolio", "mode", "cash", "positions", "strategies", "state"):
        table.add_column(column)
    for view in run_async(main):
        if view is None:
            continue
        held = [f"{s} {p.qty:f}" for s, p in sorted(view.book.positions.items()) if not p.is_flat]
        strategies = [f"{s.name} ({s.kind}{'' if s.enabled else ', disabled'})" for s in view.strategies.values()]
        state = f"[red]halted[/]: {view.halt_reason}" if view.halted else "[green]active[/]"
        table.add_row(
            view.portfolio_id,
            view.trading_mode,
            f"{view.book.cash:,.2f}",
            ", ".join(held) or "-",
            ", ".join(strategies) or "-",
            state,
        )
    console.print(table)


@strategy_app.command("attach")
def strategy_attach(
    portfolio: str,
    kind: Annotated[
        str, typer.Option("--kind", help="ma_crossover, rsi_mean_reversion, momentum, or module:function.")
    ],
    universe: Annotated[str, typer.Option("--universe", help="Comma-separated symbols, e.g. AAPL,MSFT.")],
    name: Annotated[str | None, typer.Option("--name", help="Strategy name (default: the kind).")] = None,
    params: Annotated[str | None, typer.Option("--params", help="Parameters as JSON.")] = None,
    sizing: Annotated[
        str | None,
        typer.Option("--sizing", help='Sizing as JSON, e.g. \'{"method": "fixed_notional", "notional": "5000"}\'.'),
    ] = None,
) -> None:
    """Attach a strategy to a portfolio (or reconfigure the one with that name)."""
    try:
        data: dict[str, Any] = {
            "name": name,
            "kind": kind,
            "universe": [s.strip() for s in universe.split(",") if s.strip()],
            "parameters": json.loads(params) if params else {},
        }
        if sizing:
            data["sizing"] = json.loads(sizing)
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise fail(f"--params and --sizing must be JSON ({one_line(str(exc), 80)})") from None
    _run(lambda store: commands.attach_strategy(store, portfolio, data, _now()))


@strategy_app.command("enable")
def strategy_enable(portfolio: str, strategy: str) -> None:
    """Enable a portfolio's strategy."""
    _run(lambda store: commands.set_strategy_enabled(store, portfolio, strategy, True, _now()))


@strategy_app.command("disable")
def strategy_disable(portfolio: str, strategy: str) -> None:
    """Disable a portfolio's strategy (it is no longer evaluated)."""
    _run(lambda store: commands.set_strategy_enabled(store, portfolio, strategy, False, _now()))


def register(app: typer.Typer) -> None:
    app.add_typer(portfolio_app, name="portfolio")
    app.add_typer(strategy_app, name="strategy")

    @app.command("apply")
    def apply(path: Annotated[Path, typer.Argument(help="A portfolios.toml file.")]) -> None:
        """Create or update portfolios and strategies from a TOML file (idempotent)."""
        try:
            specs = load_portfolios_toml(path.read_text(), str(path))
        except OSError as exc:
            raise fail(f"cannot read {path}: {exc.strerror}") from None
        except ConfigError as exc:
            raise fail(str(exc)) from None

        async def action(store: Any) -> list[CommandResult]:
            for spec in specs:
                commands.check_trading_mode(spec, _process_mode())
            return await commands.apply_all(store, specs, _now())

        _run(action)

    @app.command("halt")
    def halt(reason: Annotated[str, typer.Option(help="Why (recorded).")] = "operator") -> None:
        """Halt all trading: no portfolio places orders until `openbell resume`."""
        _run(lambda store: commands.set_global_halt(store, True, reason, _now()))

    @app.command("resume")
    def resume(reason: Annotated[str, typer.Option(help="Why (recorded).")] = "") -> None:
        """Resume trading after `openbell halt`."""
        _run(lambda store: commands.set_global_halt(store, False, reason, _now()))
