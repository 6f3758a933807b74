"""Queries of the log: a typed page of it (the audit trail: one stream by version, or all streams by
position), and the events a read model has not reached yet."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, Field

from eventstore.records import RecordedEvent


class LoggedEvent(BaseModel):
    """One stored event as written."""

    global_position: int
    stream_id: str
    version: int
    event_id: str
    type: str
    data: dict[str, Any]
    recorded_at: datetime


class EventPage(BaseModel):
    items: list[LoggedEvent]
    next_after: int | None = Field(
        description="pass as `after` for the next page (a version with a stream, else a global position)"
    )


async def read_event_page(
    con: asyncpg.Connection, *, stream_id: str | None = None, after: int = -1, limit: int = 100
) -> EventPage:
    """Oldest first. With a stream: its events of version > ``after``; else every committed event of global
    position > ``after`` (a page of the log's history, not a live cursor: follow the feed for live)."""
    if stream_id is not None:
        rows = await con.fetch(
            "SELECT global_position, stream_id, stream_version AS version, event_id::text, event_type AS type, data,"
            " recorded_at FROM events WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version LIMIT $3",
            stream_id, after, limit + 1,
        )
    else:
        rows = await con.fetch(
            "SELECT global_position, stream_id, stream_version AS version, event_id::text, event_type AS type, data,"
            " recorded_at FROM events WHERE global_position > $1 ORDER BY global_position LIMIT $2",
            after, limit + 1,
        )
    items = []
    for row in rows[:limit]:
        data = dict(row)
        if isinstance(data["data"], str):
            data["data"] = json.loads(data["data"])
        items.append(LoggedEvent.model_validate(data))
    last = None
    if len(rows) > limit:
        last = items[-1].version if stream_id is not None else items[-1].global_position
    return EventPage(items=items, next_after=last)


async def events_after_checkpoint(
    con: asyncpg.Connection, checkpoint: str, event_types: Sequence[str]
) -> list[RecordedEvent]:
    """The committed events of ``event_types`` after a reader's checkpoint: what that read model has not
    applied yet (also those it could not take yet, behind an older transaction still open). Run it in the
    same transaction as the read model's own query to see both at one moment."""
    rows = await con.fetch(_AFTER_CHECKPOINT, checkpoint, list(event_types))
    return [RecordedEvent(*row[:6], {}, row[6]) for row in rows]


_AFTER_CHECKPOINT = """
WITH checkpoint AS (
    SELECT coalesce(max(position), 0) AS position, coalesce(max(tx), 0) AS tx
    FROM eventstore_checkpoints WHERE name = $1
)
SELECT e.global_position, e.stream_id, e.stream_version, e.event_id, e.event_type, e.data, e.recorded_at
FROM events e, checkpoint c
WHERE e.event_type = ANY($2::text[]) AND (e.tx_id, e.global_position) > (c.tx::text::xid8, c.position)
ORDER BY e.global_position
"""


async def stream_events_newest_first(
    con: asyncpg.Connection, stream_id: str, event_type: str, *, before: int | None = None, limit: int = 100
) -> list[RecordedEvent]:
    """A stream's events of one type, newest first; ``before``: a global position from the previous page."""
    rows = await con.fetch(
        """SELECT global_position, stream_id, stream_version, event_id, event_type, data, recorded_at FROM events
           WHERE stream_id = $1 AND event_type = $2 AND ($3::bigint IS NULL OR global_position < $3)
           ORDER BY global_position DESC LIMIT $4""",
        stream_id, event_type, before, limit,
    )
    return [RecordedEvent(*row[:6], {}, row[6]) for row in rows]
