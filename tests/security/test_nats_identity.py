"""NATS identity and least privilege, against a private nats-server configured as in production (one
user per role for one subject prefix): anonymous and wrong credentials are refused, each role is refused
what it does not do, and the browser feed user reads feeds only, over the websocket, from allowed pages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import StreamConfig

from services.core.embedded import EmbeddedNats
from services.core.subjects import Subjects
from tests.waiting import until

PREFIX = "secure"
ALLOWED_ORIGIN = "http://dashboard.example:8080"
subjects = Subjects(PREFIX)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    nats_server = EmbeddedNats(tmp_path / "nats", prefix=PREFIX, websocket_origins=(ALLOWED_ORIGIN,))
    nats_server.start(reuse=False)
    yield nats_server
    nats_server.stop()


class Conn:
    """A connection as one role, collecting the errors the server reports to it (permission violations)."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.errors: list[str] = []
        self.nc: NatsClient | None = None

    async def error_cb(self, error: Exception) -> None:
        self.errors.append(str(error))


async def _connect(server: EmbeddedNats, role: str) -> Conn:
    conn = Conn(role)
    conn.nc = await nats.connect(server.url, user=role, password=server.password(role), error_cb=conn.error_cb,
                                 allow_reconnect=False, connect_timeout=5)
    return conn


@pytest.fixture
async def connect(server: EmbeddedNats) -> AsyncIterator[Callable[[str], Awaitable[Conn]]]:
    opened: list[Conn] = []

    async def open_as(role: str) -> Conn:
        conn = await _connect(server, role)
        opened.append(conn)
        return conn

    admin = await open_as("admin")
    assert admin.nc is not None
    await subjects.ensure_streams(admin.nc.jetstream())
    yield open_as
    for conn in opened:
        if conn.nc is not None and not conn.nc.is_closed:
            await conn.nc.close()


async def _delivered(admin: Conn, sender: Conn, subject: str) -> list[str]:
    """Publish ``subject`` from ``sender`` until the server's verdict: the message reaches the admin's
    subscription, or the server reports a permissions violation to the sender (it does so for every
    message it drops). Published again every half second: a busy machine may lose the first look."""
    assert admin.nc is not None and sender.nc is not None
    seen: list[str] = []

    async def collect(msg: nats.aio.msg.Msg) -> None:
        seen.append(msg.subject)

    sub = await admin.nc.subscribe(subject, cb=collect)
    await admin.nc.flush()
    refused = f'permissions violation for publish to "{subject}"'.lower()  # nats-py lowercases it
    loop = asyncio.get_running_loop()
    sent_at = -1.0

    async def verdict() -> tuple[list[str]] | None:
        nonlocal sent_at
        if loop.time() - sent_at >= 0.5:
            await sender.nc.publish(subject, b"{}")
            await sender.nc.flush()
            await admin.nc.flush()
            sent_at = loop.time()
        if any(refused in error.lower() for error in sender.errors):
            assert not seen, f"{subject} from {sender.role} was refused and delivered"
            return ([],)
        return (seen[:1],) if seen else None

    try:
        (delivered,) = await until(verdict, 30, f"delivery or refusal of {subject} from {sender.role}", interval=0.01)
        return delivered
    finally:
        await sub.unsubscribe()


@pytest.mark.parametrize("password", [None, "wrong"])
async def test_a_client_without_the_right_credentials_is_refused(server: EmbeddedNats, password: str | None) -> None:
    credentials = {} if password is None else {"user": "operator", "password": password}
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(server.url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5,
                           **credentials)


async def test_only_the_clock_publishes_ticks(connect: Callable[[str], Awaitable[Conn]]) -> None:
    admin = await connect("admin")
    tick = subjects.tick("strategy_execution")
    for role in ("services", "operator", "relay", "web"):
        assert await _delivered(admin, await connect(role), tick) == [], role
    clock = await connect("clock")
    assert await _delivered(admin, clock, tick) == [tick]
    assert admin.nc is not None
    info = await admin.nc.jetstream().stream_info(subjects.ticks_stream)
    assert info.state.messages == 1  # the clock's tick only


async def test_only_the_operator_and_the_web_send_commands(connect: Callable[[str], Awaitable[Conn]]) -> None:
    admin = await connect("admin")
    halt = subjects.cmd("portfolio.halt")
    for role in ("services", "clock", "relay"):
        assert await _delivered(admin, await connect(role), halt) == [], role
    assert await _delivered(admin, await connect("operator"), halt) == [halt]
    assert await _delivered(admin, await connect("web"), halt) == [halt]
    # The web may halt and resume, not attach strategies.
    attach = subjects.cmd("portfolio.attach")
    assert await _delivered(admin, await connect("web"), attach) == []


async def test_only_the_relay_publishes_the_event_log(connect: Callable[[str], Awaitable[Conn]]) -> None:
    admin = await connect("admin")
    event = subjects.event("portfolio", "PortfolioHalted")
    for role in ("services", "clock", "operator", "web"):
        assert await _delivered(admin, await connect(role), event) == [], role
    assert await _delivered(admin, await connect("relay"), event) == [event]


async def test_the_clock_reads_the_job_feed_and_no_other_feed(connect: Callable[[str], Awaitable[Conn]]) -> None:
    """The virtual clock is woken by the job feed when a tick's run ends (services/clock/virtual.py)."""
    clock, services = await connect("clock"), await connect("services")
    assert clock.nc is not None and services.nc is not None
    seen: list[str] = []

    async def collect(msg: nats.aio.msg.Msg) -> None:
        seen.append(msg.subject)

    await clock.nc.subscribe(f"{PREFIX}.feed.job.*", cb=collect)
    await clock.nc.subscribe(f"{PREFIX}.feed.order.*", cb=collect)
    await clock.nc.flush()
    job_ended, order = f"{PREFIX}.feed.job.completed", f"{PREFIX}.feed.order.filled"

    async def job_feed_seen() -> bool:  # core NATS: published again until the subscription has it
        await services.nc.publish(order, b"{}")
        await services.nc.publish(job_ended, b"{}")
        await services.nc.flush()
        return job_ended in seen

    await until(job_feed_seen, 30, "the job feed at the clock", interval=0.2)
    assert order not in seen
    assert any("subscription" in error.lower() and "feed.order" in error for error in clock.errors), clock.errors
    assert not any("feed.job" in error for error in clock.errors)


@pytest.mark.parametrize("role", ["services", "clock", "relay", "operator", "web"])
async def test_no_service_role_deletes_purges_or_creates_a_stream(
    connect: Callable[[str], Awaitable[Conn]], role: str
) -> None:
    admin = await connect("admin")
    assert admin.nc is not None
    admin_js = admin.nc.jetstream()
    await admin_js.publish(subjects.work("probe"), b"item")
    conn = await connect(role)
    assert conn.nc is not None
    js = conn.nc.jetstream(timeout=0.3)  # a refused request gets no answer
    attempts = {
        "delete": lambda: js.delete_stream(subjects.work_stream),
        "purge": lambda: js.purge_stream(subjects.work_stream),
        "create": lambda: js.add_stream(StreamConfig(name=f"{PREFIX.upper()}_EXTRA", subjects=[f"{PREFIX}.extra.>"])),
        "update": lambda: js.update_stream(StreamConfig(name=subjects.work_stream, subjects=[">"])),
    }
    for name, attempt in attempts.items():
        with pytest.raises((nats.errors.Error, asyncio.TimeoutError)):  # no answer: the request never passed
            await attempt()
            pytest.fail(f"{role} could {name} a stream")
    info = await admin_js.stream_info(subjects.work_stream)
    assert info.state.messages == 1 and info.config.subjects == [f"{PREFIX}.work.>"]
    assert {s.config.name for s in await admin_js.streams_info()} == {
        subjects.ticks_stream, subjects.events_stream, subjects.work_stream, subjects.dlq_stream,
        subjects.feeds_stream}


async def test_the_feed_user_is_refused_on_the_plain_listener(server: EmbeddedNats) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(server.url, user="feed", password=server.password("feed"), allow_reconnect=False,
                           max_reconnect_attempts=0, connect_timeout=5)


async def _ws_handshake(ws: aiohttp.ClientWebSocketResponse, connect: dict[str, object]) -> str:
    """INFO from the server, then CONNECT + PING; returns what the server answers (PONG or -ERR ...)."""
    assert (await _ws_read(ws, info=True)).startswith("INFO ")
    await ws.send_bytes(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
    return await _ws_read(ws)


async def _ws_read(ws: aiohttp.ClientWebSocketResponse, *, info: bool = False) -> str:
    """The next protocol lines from the server (its INFO updates left out unless ``info``)."""
    while True:
        message = await ws.receive(timeout=15)
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return "CLOSED"
        data = message.data
        text = data.decode() if isinstance(data, bytes) else str(data)
        if not info:
            text = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("INFO "))
        if text:
            return text


def _ws_url(server: EmbeddedNats) -> str:
    return f"http://127.0.0.1:{server.websocket_port}"


async def test_a_page_from_a_foreign_origin_cannot_open_the_websocket(server: EmbeddedNats) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(_ws_url(server), headers={"Origin": "http://evil.example"})
        assert refused.value.status == 403


async def test_the_feed_user_over_the_websocket_reads_feeds_and_nothing_else(
    server: EmbeddedNats, connect: Callable[[str], Awaitable[Conn]]
) -> None:
    admin = await connect("admin")
    assert admin.nc is not None
    feed = subjects.feed("price", "AAPL")
    async with aiohttp.ClientSession() as session, session.ws_connect(
        _ws_url(server), headers={"Origin": ALLOWED_ORIGIN}
    ) as ws:
        # Another role's password is refused here: only the feed user may use the websocket.
        operator = {"user": "operator", "pass": server.password("operator"), "verbose": False, "protocol": 1}
        assert "Authorization Violation" in await _ws_handshake(ws, operator)
    async with aiohttp.ClientSession() as session, session.ws_connect(
        _ws_url(server), headers={"Origin": ALLOWED_ORIGIN}
    ) as ws:
        user = {"user": "feed", "pass": server.password("feed"), "verbose": False, "protocol": 1}
        assert await _ws_handshake(ws, user) == "PONG\r\n"
        await ws.send_bytes(f"SUB {PREFIX}.cmd.> 1\r\n".encode())
        assert "Permissions Violation for Subscription" in await _ws_read(ws)
        await ws.send_bytes(f"PUB {subjects.cmd('portfolio.halt')} 2\r\n{{}}\r\n".encode())
        assert "Permissions Violation for Publish" in await _ws_read(ws)
        await ws.send_bytes(f"SUB {PREFIX}.feed.> 2\r\nPING\r\n".encode())
        assert await _ws_read(ws) == "PONG\r\n"
        await admin.nc.publish(feed, b"42")
        await admin.nc.flush()
        received = await _ws_read(ws)
        assert received.startswith(f"MSG {feed} 2 2\r\n42"), received
