"""Live updates for the browser: the feeds stream (every ``<prefix>.feed.>`` message, kept by JetStream)
read from a sequence and framed as server-sent events.

The SSE ``id`` of a message is its stream sequence: a page that reconnects (the browser sends it back as
``Last-Event-ID``, or the page passes ``after``) resumes right after it, also across a restart of the web
server. When the messages after it are gone (the stream keeps two days), the page is told to reload."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from services.core.subjects import Subjects

KEEPALIVE_SECONDS = 15.0
POLL_SECONDS = 0.5  # how soon a stream notices the server stopping
RECONNECT_MS = 1000


def sse(event: str, data: Any, *, event_id: int | None = None) -> bytes:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'))}")
    return ("\n".join(lines) + "\n\n").encode()


def iso_utc(moment: datetime) -> str:
    """The one time format of the feeds and the live stream: UTC, microseconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def feed_position(js: JetStreamContext, subjects: Subjects) -> tuple[int, int]:
    """(first, last) stream sequence of the feeds stream; (0, 0) when empty."""
    try:
        info = await js.stream_info(subjects.feeds_stream)
    except NotFoundError:
        return 0, 0
    return info.state.first_seq, info.state.last_seq


def parse_after(value: str | None) -> int | None:
    """A sequence given by the page (``after`` or ``Last-Event-ID``); None when absent. ValueError if bad."""
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise ValueError("after / Last-Event-ID must be a stream sequence (a non-negative integer)")
    return int(value)


async def live_stream(
    js: JetStreamContext, subjects: Subjects, after: int | None, stop: asyncio.Event
) -> AsyncIterator[bytes]:
    """SSE frames: ``feed`` for every message after ``after`` (from now when None); ``reset`` (with the
    sequence it resumes after) when the page's sequence is gone or of another stream; a comment every few
    seconds to keep proxies from closing an idle stream."""
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    first, last = await feed_position(js, subjects)
    if after is None:
        after = last
    elif after > last or (last and after + 1 < first):
        # A sequence this stream never reached (it was recreated), or the messages right after it were
        # removed (age): the page must reload its resources, and goes on from what the stream has.
        resume_after = last if after > last else first - 1
        yield sse("reset", {"first": first, "last": last, "after": after, "resume_after": resume_after})
        after = resume_after
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1)
    sub = await js.subscribe(
        f"{subjects.prefix}.feed.>", stream=subjects.feeds_stream, ordered_consumer=True, config=config,
        idle_heartbeat=5.0,
    )
    try:
        idle = 0.0
        while not stop.is_set():
            try:
                msg = await sub.next_msg(timeout=POLL_SECONDS)
            except TimeoutError:
                idle += POLL_SECONDS
                if idle >= KEEPALIVE_SECONDS:
                    idle = 0.0
                    yield b": keepalive\n\n"
                continue
            idle = 0.0
            meta = msg.metadata
            try:
                body: Any = json.loads(msg.data)
            except ValueError:
                body = msg.data.decode(errors="replace")
            seq = meta.sequence.stream
            yield sse(
                "feed",
                {"seq": seq, "at": iso_utc(meta.timestamp), "subject": msg.subject, "body": body},
                event_id=seq,
            )
    finally:
        # The consumer is ephemeral: if NATS is gone, the server forgets it on its own.
        with contextlib.suppress(nats.errors.Error, OSError):
            await sub.unsubscribe()
