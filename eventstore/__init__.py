"""openbell's event store: an append-only PostgreSQL log, its relay to NATS JetStream and projections.

Imports nothing from ``services``: event types are registered by the application (see ``codec``).

The names below are loaded on first use: ``from eventstore import NewEvent`` loads the plain event types
(``records``, ``codec``) and not the store's database driver, so the pure decision logic that makes
events never imports asyncpg.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventstore.codec import EventCodecError, EventDecodeError, EventRegistry, UnknownEventType
    from eventstore.records import NewEvent, RecordedEvent, category_of
    from eventstore.store import (
        ANY,
        NO_STREAM,
        STREAM_EXISTS,
        AppendResult,
        DuplicateEventId,
        EventStore,
        EventStoreError,
        Page,
        PositionNotFound,
        WrongExpectedVersion,
    )

_MODULE_OF = {
    "EventCodecError": "eventstore.codec",
    "EventDecodeError": "eventstore.codec",
    "EventRegistry": "eventstore.codec",
    "UnknownEventType": "eventstore.codec",
    "NewEvent": "eventstore.records",
    "RecordedEvent": "eventstore.records",
    "category_of": "eventstore.records",
    "ANY": "eventstore.store",
    "NO_STREAM": "eventstore.store",
    "STREAM_EXISTS": "eventstore.store",
    "AppendResult": "eventstore.store",
    "DuplicateEventId": "eventstore.store",
    "EventStore": "eventstore.store",
    "EventStoreError": "eventstore.store",
    "Page": "eventstore.store",
    "PositionNotFound": "eventstore.store",
    "WrongExpectedVersion": "eventstore.store",
}

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "DuplicateEventId",
    "EventCodecError",
    "EventDecodeError",
    "EventRegistry",
    "EventStore",
    "EventStoreError",
    "NewEvent",
    "Page",
    "PositionNotFound",
    "RecordedEvent",
    "UnknownEventType",
    "WrongExpectedVersion",
    "category_of",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'eventstore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
