"""Typed page of the event log (the audit trail): one stream by version, or all streams by position."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, Field


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
