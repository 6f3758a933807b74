"""The HTTP API and dashboard (FastAPI). Reads go through the read models' own query functions; operator
actions (halt, resume, enable a job) need the operator token and append the same events as the CLI.

Authentication and CSRF: a write carries the token in the ``X-Openbell-Token`` header, which a page of
another origin cannot set without a CORS preflight this app never grants (no cookies are used, so a forged
form post carries nothing); a request whose ``Origin`` is not this server is refused as well. With no
token configured (``OPENBELL_WEB_TOKEN`` unset) the app is read-only."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from eventstore.queries import EventPage, read_event_page
from services.alerts.queries import Alert, Notification, list_alerts, list_notifications
from services.core.jobs.events import ExecutionStatus
from services.core.jobs.queries import BadCursor as BadExecutionCursor
from services.core.jobs.queries import ExecutionPage, Job, list_executions, list_jobs
from services.core.jobs.runner import JobRunner
from services.core.jobs.types import JobType
from services.core.runtime import Runtime
from services.orders.queries import BadCursor as BadOrderCursor
from services.orders.queries import OrderPage, OrderStatus, list_orders
from services.positions.queries import (
    Discrepancy,
    Fill,
    Portfolio,
    PortfolioDetail,
    Position,
    Snapshot,
    get_portfolio,
    list_discrepancies,
    list_fills,
    list_portfolios,
    list_positions,
    list_snapshots,
)
from services.strategy import commands
from services.web.live import feed_position, live_stream, parse_after

TOKEN_HEADER = "X-Openbell-Token"
STATIC = resources.files("services.web") / "static"


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: bool
    nats: bool
    feed_first: int = Field(description="first sequence still kept in the feeds stream")
    feed_last: int = Field(description="last feed sequence: pass as `after` to /api/live to start from now")
    operator_actions: bool = Field(description="true when an operator token is configured")
    at: datetime


class ActionRequest(BaseModel):
    reason: str = Field(default="", max_length=200)


class ActionResult(BaseModel):
    ok: bool
    changes: list[str] = Field(description="what was appended; empty when it was so already")


async def _connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    async with request.app.state.rt.store.pool.acquire() as con:
        yield con


# Module level: FastAPI resolves the (postponed) annotations of the endpoints in this module's globals.
Con = Annotated[asyncpg.Connection, Depends(_connection)]


def create_app(rt: Runtime) -> FastAPI:
    stop = asyncio.Event()
    token = rt.settings.web_token

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        stop.set()  # ends the live streams, so a shutdown does not wait on them

    app = FastAPI(
        title="openbell", version="1", lifespan=lifespan,
        # FastAPI's /docs and /redoc pages load their scripts from a CDN: only the document itself is served.
        docs_url=None, redoc_url=None,
        description="Portfolios, orders, jobs, alerts and the event log of openbell; live updates at /api/live.",
    )
    app.state.stop = stop
    app.state.rt = rt

    def operator(
        request: Request, x_openbell_token: Annotated[str | None, Header(alias=TOKEN_HEADER)] = None
    ) -> None:
        if token is None:
            raise HTTPException(403, "read-only: no operator token is configured (OPENBELL_WEB_TOKEN)")
        origin = request.headers.get("origin")
        # Host and port only: behind a TLS proxy the page is https while this server sees http.
        if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
            raise HTTPException(403, "cross-origin writes are refused")
        if x_openbell_token is None or not hmac.compare_digest(
            x_openbell_token.encode(), token.get_secret_value().encode()
        ):
            raise HTTPException(401, f"operator token missing or wrong ({TOKEN_HEADER} header)")

    Operator = Depends(operator)
    api = APIRouter(prefix="/api")

    @api.get("/health")
    async def health() -> Health:
        try:
            async with rt.store.pool.acquire() as con:
                await con.fetchval("SELECT 1")
            database = True
        except (OSError, asyncpg.PostgresError):
            database = False
        first, last = await feed_position(rt.js, rt.subjects) if rt.nc.is_connected else (0, 0)
        ok = database and rt.nc.is_connected
        return Health(
            status="ok" if ok else "degraded", database=database, nats=rt.nc.is_connected, feed_first=first,
            feed_last=last, operator_actions=token is not None, at=datetime.now(UTC),
        )

    @api.get("/portfolios")
    async def portfolios(con: Con) -> list[Portfolio]:
        return await list_portfolios(con)

    @api.get("/portfolios/{portfolio_id}")
    async def portfolio(con: Con, portfolio_id: str) -> PortfolioDetail:
        found = await get_portfolio(con, portfolio_id)
        if found is None:
            raise HTTPException(404, f"no portfolio {portfolio_id!r}")
        return found

    @api.get("/positions")
    async def positions(con: Con, portfolio: str | None = None) -> list[Position]:
        return await list_positions(con, portfolio)

    @api.get("/portfolios/{portfolio_id}/fills")
    async def fills(
        con: Con, portfolio_id: str, before: Annotated[int | None, Query(ge=0)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[Fill]:
        return await list_fills(con, portfolio_id, before=before, limit=limit)

    @api.get("/snapshots")
    async def snapshots(con: Con, portfolio: str | None = None) -> list[Snapshot]:
        return await list_snapshots(con, portfolio)

    @api.get("/orders")
    async def orders(
        con: Con,
        portfolio: str | None = None,
        status: OrderStatus | None = None,
        open: bool = False,
        symbol: str | None = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> OrderPage:
        try:
            return await list_orders(
                con, portfolio_id=portfolio, status=status, open_only=open, symbol=symbol, cursor=cursor, limit=limit
            )
        except BadOrderCursor as exc:
            raise HTTPException(400, str(exc)) from None

    @api.get("/jobs")
    async def jobs(con: Con, last_runs: Annotated[int, Query(ge=0, le=100)] = 10) -> list[Job]:
        return await list_jobs(con, last_runs=last_runs)

    @api.get("/executions")
    async def executions(
        con: Con,
        job_type: JobType | None = None,
        status: ExecutionStatus | None = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> ExecutionPage:
        try:
            return await list_executions(con, job_type=job_type, status=status, cursor=cursor, limit=limit)
        except BadExecutionCursor as exc:
            raise HTTPException(400, str(exc)) from None

    @api.get("/alerts")
    async def alerts(con: Con, active: bool = False) -> list[Alert]:
        return await list_alerts(con, active_only=active)

    @api.get("/notifications")
    async def notifications(
        con: Con, before: Annotated[int | None, Query(ge=0)] = None, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> list[Notification]:
        return await list_notifications(con, before=before, limit=limit)

    @api.get("/discrepancies")
    async def discrepancies(con: Con, open: bool = False) -> list[Discrepancy]:
        return await list_discrepancies(con, open_only=open)

    @api.get("/events")
    async def events(
        con: Con, stream: str | None = None, after: Annotated[int, Query(ge=-1)] = -1,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> EventPage:
        return await read_event_page(con, stream_id=stream, after=after, limit=limit)

    @api.get(
        "/live",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}},
    )
    async def live(
        after: str | None = None, last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None
    ) -> StreamingResponse:
        """Every feed message as a server-sent event ``feed`` with ``id`` = its sequence and a JSON body
        ``{seq, at, subject, body}``; from after ``Last-Event-ID`` (a reconnect) or ``after``, else from now.
        ``reset``: messages after the given sequence are gone, reload the resources."""
        try:
            start = parse_after(last_event_id) if last_event_id else parse_after(after)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return StreamingResponse(
            live_stream(rt.js, rt.subjects, start, stop),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # ---------------------------------------------------------------------------- operator actions

    def _result(result: commands.CommandResult) -> ActionResult:
        return ActionResult(ok=True, changes=list(result.changes))

    @api.post("/halt", dependencies=[Operator])
    async def halt_all(body: ActionRequest) -> ActionResult:
        return _result(await commands.set_global_halt(rt.store, True, body.reason or "operator (web)", _now()))

    @api.post("/resume", dependencies=[Operator])
    async def resume_all(body: ActionRequest) -> ActionResult:
        return _result(await commands.set_global_halt(rt.store, False, body.reason, _now()))

    @api.post("/portfolios/{portfolio_id}/halt", dependencies=[Operator])
    async def halt_portfolio(portfolio_id: str, body: ActionRequest) -> ActionResult:
        return _result(await _portfolio_action(portfolio_id, True, body.reason or "operator (web)"))

    @api.post("/portfolios/{portfolio_id}/resume", dependencies=[Operator])
    async def resume_portfolio(portfolio_id: str, body: ActionRequest) -> ActionResult:
        return _result(await _portfolio_action(portfolio_id, False, body.reason))

    async def _portfolio_action(portfolio_id: str, halted: bool, reason: str) -> commands.CommandResult:
        try:
            return await commands.set_portfolio_halted(rt.store, portfolio_id, halted, reason, _now())
        except commands.CommandRefused as exc:
            raise HTTPException(404, str(exc)) from None

    @api.post("/jobs/{job_type}/enable", dependencies=[Operator])
    async def enable_job(job_type: JobType, body: ActionRequest) -> ActionResult:
        # The token names no person: the record says the dashboard (an operator holding the token) did it.
        changed = await JobRunner(rt.store).enable(job_type, by="web", reason=body.reason)
        return ActionResult(ok=True, changes=[f"enable job {job_type.value}"] if changed else [])

    app.include_router(api)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.exception_handler(HTTPException)
    async def one_line(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(asyncpg.UndefinedTableError)
    async def no_read_model(_: Request, exc: asyncpg.UndefinedTableError) -> JSONResponse:
        # A fresh database: the read models are created by the first service that starts (any of them).
        return JSONResponse({"error": "the read models do not exist yet: start openbell's services"}, 503)

    @app.exception_handler(OSError)
    async def database_down(_: Request, exc: OSError) -> JSONResponse:
        return JSONResponse({"error": "the database is unreachable"}, 503)

    return app


def _now() -> datetime:
    return datetime.now(UTC)  # operator actions happen now; trading decisions use the tick's time
