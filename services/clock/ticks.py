"""Tick payload and publication: JetStream ``<prefix>.tick.<job_type>`` with ``Nats-Msg-Id`` = tick id,
so two clocks or a restarted clock never produce a second message for the same slot (within the
stream's duplicate window; beyond it the clock's own log in the event store prevents re-emission)."""

from __future__ import annotations

from datetime import datetime

from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NotFoundError

from services.core.jobs.types import (
    InvalidTick,
    JobType,
    Tick,
    TickReason,
    decode_tick,
    encode_tick,
    tick_id,
)
from services.core.subjects import Subjects

__all__ = [
    "InvalidTick",
    "Tick",
    "TickReason",
    "decode_tick",
    "encode_tick",
    "last_published_tick",
    "manual_tick",
    "publish_tick",
    "tick_id",
]


async def publish_tick(js: JetStreamContext, subjects: Subjects, tick: Tick) -> PubAck:
    """Publish on JetStream; ``ack.duplicate`` is True when the server already had this tick id."""
    return await js.publish(
        subjects.tick(tick.job_type.value), encode_tick(tick), headers={"Nats-Msg-Id": tick.tick_id}
    )


def manual_tick(job_type: JobType, now: datetime) -> Tick:
    """A manual run "now" (seconds precision): ``<job_type>@<now>``."""
    return Tick.for_slot(job_type, now, emitted_at=now, reason=TickReason.MANUAL)


async def last_published_tick(js: JetStreamContext, subjects: Subjects, job_type: JobType) -> Tick | None:
    """The newest tick in the stream for ``job_type`` (None when there is none or it is unreadable)."""
    try:
        msg = await js.get_last_msg(subjects.ticks_stream, subjects.tick(job_type.value))
    except NotFoundError:
        return None
    try:
        return decode_tick(msg.data or b"")
    except InvalidTick:
        return None
