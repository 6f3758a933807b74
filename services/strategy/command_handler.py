"""The strategy service's answer to one ``<prefix>.cmd.portfolio.<name>`` request: decode and check the
request, run the matching command of ``commands``, and reply in JSON.

Apart from ``commands`` (which the command line and the web app call directly) because this is the
request/reply side only: whatever a client sends gets one answer, an error in one line, never an echo.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from services.core.host import ServiceContext
from services.core.jobs.runner import safe_error
from services.core.limits import decode_command, error_reply, reason_text
from services.model.symbols import validate_name
from services.model.text import one_line, shown
from services.strategy import commands
from services.strategy.config import ConfigError, parse_portfolio_spec

log = logging.getLogger(__name__)

# The fields each command takes besides the spec's own (``open`` and ``apply`` take a portfolio spec).
_COMMAND_FIELDS: dict[str, frozenset[str]] = {
    "attach": frozenset({"portfolio", "strategy"}),
    "enable": frozenset({"portfolio", "strategy"}),
    "disable": frozenset({"portfolio", "strategy"}),
    "halt": frozenset({"portfolio", "reason"}),
    "resume": frozenset({"portfolio", "reason"}),
}


async def handle_command(ctx: ServiceContext, name: str, body: bytes) -> dict[str, Any]:
    """One ``<prefix>.cmd.portfolio.<name>`` request: JSON in, JSON out (``{"ok": ..}`` or a one-line
    ``{"error": ..}``, whatever the body: nothing a client sends goes unanswered or is echoed whole)."""
    from datetime import UTC

    at = datetime.now(UTC)  # operator commands happen now; trading decisions use tick times
    try:
        data = decode_command(body)
        allowed = _COMMAND_FIELDS.get(name)
        if allowed is not None and not set(data) <= allowed:
            unknown = sorted(set(data) - allowed)
            raise ConfigError(f"unknown field(s) {', '.join(shown(k) for k in unknown[:5])}")
        store = ctx.rt.store
        match name:
            case "open" | "apply":
                spec = parse_portfolio_spec(data)
                commands.check_trading_mode(spec, ctx.settings.trading_mode)
                if name == "open":
                    result = await commands.open_portfolio(store, spec, at)
                else:
                    result = await commands.apply_portfolio(store, spec, at)
            case "attach":
                strategy = data.get("strategy")
                if not isinstance(strategy, dict):
                    raise ConfigError("strategy: required (an object: kind, universe, ...)")
                result = await commands.attach_strategy(store, _name(data, "portfolio"), strategy, at)
            case "enable" | "disable":
                result = await commands.set_strategy_enabled(
                    store, _name(data, "portfolio"), _name(data, "strategy"), name == "enable", at
                )
            case "halt" | "resume":
                result = await commands.set_portfolio_halted(
                    store, _name(data, "portfolio"), name == "halt", reason_text(data.get("reason")), at
                )
            case _:
                raise ConfigError(
                    f"unknown command {shown(name)} (open, apply, attach, enable, disable, halt, resume)"
                )
    except (ValueError, RecursionError) as exc:  # InputRejected, ConfigError, CommandRefused, bad names
        return error_reply(exc)
    except Exception as exc:  # noqa: BLE001 - a request always gets an answer; the service keeps running
        log.error("portfolio command %s failed: %s", one_line(name, 40), safe_error(exc))
        return error_reply(commands.CommandRefused(f"portfolio command failed: {safe_error(exc)}"))
    return {"ok": True, "portfolio": result.portfolio_id, "changes": list(result.changes)}


def _name(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: required (a name)")
    return validate_name(value, key)
