"""The alerts service: the alert commands and the alert_price_check job.

Commands (core NATS request/reply, JSON in and out; a worker group ``alerts`` shares them):

- ``<prefix>.cmd.alert.create``: ``{"symbol", "condition", "threshold", "reference_price"?,
  "portfolio_id"?, "alert_id"?}`` -> ``{"alert": {...}}``. A percent_change alert without a reference
  price takes the latest observed price (price_update's ``latest_quotes``), else the broker's quote.
  ``alert_id`` makes a create idempotent (the same id and spec again is the same alert); without it a new
  id is drawn.
- ``<prefix>.cmd.alert.list``: ``{"active_only"?, "portfolio_id"?}`` -> ``{"alerts": [...]}``.
- ``<prefix>.cmd.alert.remove``: ``{"alert_id"}`` -> ``{"alert_id", "removed": bool, "status"}``.

Errors are replies ``{"error": "<one line>"}``; invalid input appends nothing.

alert_price_check: the active alerts' symbols are quoted in batches (one broker call per batch); each
alert whose condition holds gets AlertTriggered and its NotificationRaised in ``alert-<alert_id>``,
appended at the version at which the alert was folded as active, so it fires exactly once whatever the
redeliveries, workers or a concurrent removal. Then ``<prefix>.feed.alert.<portfolio_id>`` (``all`` for
an alert of no portfolio) is published.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import msgspec
from nats.aio.msg import Msg

from eventstore import NO_STREAM, EventStore, NewEvent, WrongExpectedVersion
from services.alerts.conditions import AlertSpec, alert_created, check_alerts, parse_alert_spec
from services.alerts.projection import AlertsProjection
from services.alerts.state import AlertState, evolve_alert, validate_alert_id
from services.broker.quotes import QuoteSettings, QuotesUnavailable, fetch_quotes, load_quote_settings
from services.broker.views import quote_view
from services.core import feeds
from services.core.events import new_event, registry
from services.core.host import ServiceContext
from services.core.jobs.consumer import subscribe_ticks
from services.core.jobs.runner import JobContext, safe_error
from services.core.jobs.types import JobType
from services.core.limits import decode_command, error_reply
from services.model.events.alerts import AlertRemoved, AlertTriggered, NotificationRaised
from services.model.market import quote_price
from services.model.streams import alert_stream, portfolio_stream
from services.model.symbols import validate_name
from services.model.text import one_line, shown

log = logging.getLogger(__name__)

SERVICE = "alerts"
MAX_ATTEMPTS = 50

PriceLookup = Callable[[str], Awaitable[Decimal | None]]


class CommandFailed(ValueError):
    """A command refused with a one-line reason (sent back as ``{"error": ...}``)."""


async def load_alert(store: EventStore, alert_id: str) -> tuple[AlertState | None, int]:
    state: AlertState | None = None
    version = -1
    async for recorded in store.read_stream(alert_stream(alert_id)):
        version = recorded.version
        state = evolve_alert(state, registry.decode(recorded))
    return state, version


def alert_row(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    data = dict(row)
    for key, value in data.items():
        if isinstance(value, Decimal):
            data[key] = str(value)
        elif isinstance(value, datetime):
            data[key] = value.isoformat()
    return data


def _spec_dict(spec: AlertSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


class AlertCommands:
    """The command logic, shared by the service (over NATS) and the CLI (directly, when no alerts
    service answers)."""

    def __init__(self, store: EventStore, price_lookup: PriceLookup | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.price_lookup = price_lookup
        self.clock = clock  # a command's own time (not a job decision): when the alert was created/removed

    async def _refresh(self) -> None:
        from eventstore.projections import ProjectionRunner

        await ProjectionRunner(self.store, [AlertsProjection()]).run_once()

    async def create(self, payload: dict[str, Any]) -> dict[str, Any]:
        payload = dict(payload)
        given = payload.pop("alert_id", None)
        alert_id = validate_alert_id(f"a{uuid.uuid4().hex[:12]}" if given is None else given)
        if payload.get("condition") == "percent_change" and payload.get("reference_price") is None:
            probe = parse_alert_spec({**payload, "reference_price": "1"})  # everything else is valid
            price = await self.price_lookup(probe.symbol) if self.price_lookup is not None else None
            if price is None:
                raise CommandFailed(
                    f"invalid alert: no price known for {probe.symbol}; give reference_price for a percent_change alert"
                )
            payload["reference_price"] = str(price)
        spec = parse_alert_spec(payload)
        if spec.portfolio_id is not None and await self.store.stream_version(portfolio_stream(spec.portfolio_id)) < 0:
            raise CommandFailed(f"invalid alert: unknown portfolio {spec.portfolio_id!r}")
        created = alert_created(alert_id, spec, self.clock())
        try:
            written = (await self.store.append(alert_stream(alert_id), [created], NO_STREAM)).written
        except WrongExpectedVersion:
            written = False
        if not written:  # the id exists: the same alert again is fine, another definition is not
            existing, _ = await load_alert(self.store, alert_id)
            if existing is None or _spec_dict(existing.spec) != _spec_dict(spec):
                raise CommandFailed(f"alert {alert_id!r} exists already with another definition")
        return {"alert": {"alert_id": alert_id, **_spec_dict(spec)}}

    async def list(self, payload: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(payload) - {"active_only", "portfolio_id"})
        if unknown:
            raise CommandFailed(f"unknown field(s) {', '.join(shown(k) for k in unknown[:5])}")
        active_only = payload.get("active_only", False)
        if not isinstance(active_only, bool):
            raise CommandFailed("active_only: must be true or false")
        portfolio_id = payload.get("portfolio_id")
        if portfolio_id is not None:
            validate_name(portfolio_id, "portfolio")
        await self._refresh()
        async with self.store.pool.acquire() as con:
            rows = await con.fetch(
                """SELECT * FROM alerts WHERE (NOT $1 OR active) AND ($2::text IS NULL OR portfolio_id = $2)
                   ORDER BY created_at, alert_id""",
                active_only, portfolio_id,
            )
        return {"alerts": [alert_row(r) for r in rows]}

    async def remove(self, payload: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(payload) - {"alert_id"})
        if unknown:
            raise CommandFailed(f"unknown field(s) {', '.join(shown(k) for k in unknown[:5])}")
        alert_id = validate_alert_id(payload.get("alert_id"))
        for _ in range(MAX_ATTEMPTS):
            state, version = await load_alert(self.store, alert_id)
            if state is None:
                raise CommandFailed(f"no alert {alert_id!r}")
            if state.status.value == "removed":
                return {"alert_id": alert_id, "removed": False, "status": "removed"}
            removed = new_event(AlertRemoved(alert_id=alert_id, at=self.clock()), alert_id)
            try:
                await self.store.append(alert_stream(alert_id), [removed], version)
            except WrongExpectedVersion:
                continue
            return {"alert_id": alert_id, "removed": True, "status": "removed"}
        raise CommandFailed(f"alert {alert_id!r} keeps changing; try again")

    async def handle(self, name: str, data: bytes) -> dict[str, Any]:
        """One command: the reply, ``{"error": ...}`` (one line, input never echoed whole) for any refusal."""
        handlers = {"create": self.create, "list": self.list, "remove": self.remove}
        handler = handlers.get(name)
        if handler is None:
            return {"error": f"unknown alert command {shown(name)} (one of: {', '.join(handlers)})"}
        try:
            return await handler(decode_command(data))
        except (ValueError, RecursionError) as exc:  # InputRejected, ConfigError, CommandFailed, bad ids
            return error_reply(exc)


class AlertsService:
    def __init__(self, ctx: ServiceContext, settings: QuoteSettings) -> None:
        self.ctx = ctx
        self.settings = settings
        self.commands = AlertCommands(ctx.rt.store, self.price_of)

    @property
    def store(self) -> EventStore:
        return self.ctx.rt.store

    async def price_of(self, symbol: str) -> Decimal | None:
        """The latest observed price, else the broker's current quote (mid)."""
        async with self.store.pool.acquire() as con:
            price = await self.ctx.read_models.latest_price(con, symbol)  # the positions service's read model
        if price is not None:
            return price
        broker = await self.ctx.broker()
        quotes = await broker.latest_quotes([symbol])
        quote = quotes.get(symbol)
        return quote_price(quote_view(quote)) if quote is not None else None

    async def on_command(self, msg: Msg) -> None:
        name = msg.subject.rsplit(".", 1)[-1]
        try:
            reply = await self.commands.handle(name, msg.data)
        except Exception as exc:  # noqa: BLE001 - a command must always get an answer; the service keeps running
            log.error("alert command %s failed: %s", one_line(name, 40), safe_error(exc))
            reply = error_reply(CommandFailed(f"alert command failed: {safe_error(exc)}"))
        if msg.reply:
            await msg.respond(msgspec.json.encode(reply))

    async def alert_price_check(self, job: JobContext) -> dict[str, int]:
        at = job.scheduled_at
        await self.ctx.catch_up(AlertsProjection.name)
        async with self.store.pool.acquire() as con:
            rows = await con.fetch("SELECT alert_id FROM alerts WHERE active ORDER BY alert_id")
        active: dict[str, AlertSpec] = {}
        for row in rows:  # the stream is the truth (the read model may lag behind a removal)
            state, _ = await load_alert(self.store, row["alert_id"])
            if state is not None and state.active:
                active[state.alert_id] = state.spec
        if not active:
            return {"alerts_checked": 0, "alerts_triggered": 0, "alerts_unpriced": 0}
        broker = await self.ctx.at(at)
        quotes = await fetch_quotes(
            broker, {s.symbol for s in active.values()}, at=at, batch_size=self.settings.quote_batch_size,
            max_age=timedelta(seconds=self.settings.quote_max_age_seconds),
        )
        result = check_alerts(active, quotes.prices, at)
        by_alert: dict[str, list[NewEvent]] = {}
        for event in result.events:
            data = event.data
            alert_id = data.alert_id if isinstance(data, AlertTriggered) else data.ref
            by_alert.setdefault(alert_id, []).append(event)
        triggered = 0
        for alert_id, events in sorted(by_alert.items()):
            if await self._fire(alert_id, events):
                triggered += 1
        if not quotes.prices:
            raise QuotesUnavailable(f"no usable quote for any of {len(quotes.problems)} alert symbols")
        return {
            "alerts_checked": result.alerts_checked,
            "alerts_triggered": triggered,
            "alerts_unpriced": len(active) - result.alerts_checked,
        }

    async def _fire(self, alert_id: str, events: list[NewEvent]) -> bool:
        """Append the alert's trigger while it is still active; publish the feed. True when it fired now."""
        for _ in range(MAX_ATTEMPTS):
            state, version = await load_alert(self.store, alert_id)
            if state is None or not state.active:
                return False  # fired before (a redelivered tick) or removed meanwhile
            try:
                result = await self.store.append(alert_stream(alert_id), events, version)
            except WrongExpectedVersion:
                continue
            if result.written:
                triggered = next(e.data for e in events if isinstance(e.data, AlertTriggered))
                notification = next(e.data for e in events if isinstance(e.data, NotificationRaised))
                key = state.spec.portfolio_id or "all"
                await self._publish(key, feeds.encode(feeds.AlertFeed(
                    at=feeds.utc(triggered.at), alert_id=triggered.alert_id, symbol=triggered.symbol,
                    price=feeds.price(triggered.price), condition=state.spec.condition.value,
                    threshold=str(state.spec.threshold), portfolio_id=state.spec.portfolio_id,
                    title=notification.title,
                )))
            return result.written
        raise RuntimeError(f"{alert_stream(alert_id)}: too many concurrent changes")

    async def _publish(self, key: str, payload: bytes) -> None:
        nc = self.ctx.rt.nc
        if nc.is_connected:
            await nc.publish(self.ctx.rt.subjects.feed("alert", key), payload)


async def setup(ctx: ServiceContext) -> None:
    service = AlertsService(ctx, load_quote_settings())
    subscription = await ctx.rt.nc.subscribe(ctx.rt.subjects.cmd("alert.*"), queue=SERVICE, cb=service.on_command)

    async def unsubscribe_on_stop() -> None:
        try:
            await ctx.stop.wait()
        finally:
            if ctx.rt.nc.is_connected:
                await subscription.unsubscribe()

    ctx.background(unsubscribe_on_stop(), "alerts-commands")
    subscribe_ticks(
        ctx.consumers, subjects=ctx.rt.subjects, service=SERVICE, job_type=JobType.ALERT_PRICE_CHECK,
        runner=ctx.jobs, job=service.alert_price_check,
    )

