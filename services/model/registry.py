"""The domain event registry and deterministic event ids (part of the shared model: every service
registers its events here, and the model imports nothing from the services).

Every domain event is a frozen msgspec Struct registered by its class name::

    @domain_event
    class OrderFilled(msgspec.Struct, frozen=True, kw_only=True):
        ...

Every effect has an id derived from its cause, so a redelivered message, a restarted service or a second
worker produces the same id, and the store turns the repeat into a no-op.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from eventstore import EventRegistry, NewEvent

registry = EventRegistry()

# Namespace of every openbell event id (uuid5 of the cause).
OPENBELL_NAMESPACE = uuid.UUID("6f70656e-6265-4c6c-8000-6576656e7473")

S = TypeVar("S", bound=type[msgspec.Struct])


def domain_event(cls: S) -> S:
    """Class decorator: register a Struct as a domain event type under its class name."""
    return registry.register(cls)


def event_id_for(*cause: str) -> uuid.UUID:
    """A deterministic event id from the parts of its cause (e.g. tick id, stream, event type)."""
    if not cause:
        raise ValueError("an event id needs a cause")
    return uuid.uuid5(OPENBELL_NAMESPACE, "\x1f".join(cause))


def new_event(data: msgspec.Struct, *cause: str, metadata: Mapping[str, Any] | None = None) -> NewEvent:
    """A NewEvent for a registered Struct, its id derived from the type name and the cause."""
    type_name = type(data).__name__
    if type_name not in registry:
        raise TypeError(f"{type_name} is not a registered domain event (decorate it with @domain_event)")
    return NewEvent(
        type=type_name,
        data=data,
        event_id=event_id_for(type_name, *cause),
        metadata=dict(metadata or {}),
    )
