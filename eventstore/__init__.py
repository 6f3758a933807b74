"""openbell's event store: an append-only PostgreSQL log, its relay to NATS JetStream and projections.

Imports nothing from ``services``: event types are registered by the application (see ``codec``).
"""

from eventstore.codec import EventCodecError, EventDecodeError, EventRegistry, UnknownEventType
from eventstore.store import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    DuplicateEventId,
    EventStore,
    EventStoreError,
    NewEvent,
    Page,
    PositionNotFound,
    RecordedEvent,
    WrongExpectedVersion,
    category_of,
)

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
