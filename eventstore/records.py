"""The events going into the store and coming out of it: plain values with no database behind them, so the
pure decision logic can make and read events without importing the store's driver."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event to append. ``event_id`` must be derived from the event's cause (idempotency)."""

    type: str
    data: Any  # a msgspec Struct, a mapping, or JSON bytes
    event_id: uuid.UUID
    metadata: Mapping[str, Any] = msgspec.field(default_factory=dict)


class RecordedEvent(msgspec.Struct, frozen=True):
    global_position: int
    stream_id: str
    version: int
    event_id: uuid.UUID
    type: str
    data: str  # the stored JSON, exactly as written; decode with an EventRegistry
    metadata: dict[str, Any]
    recorded_at: datetime

    @property
    def category(self) -> str:
        return category_of(self.stream_id)


def category_of(stream_id: str) -> str:
    return stream_id.split("-", 1)[0]
