"""Event types are msgspec Structs registered by name; this module turns stored JSON back into them.

The store itself writes any Struct or mapping as JSON (Decimal as a string, datetimes as ISO-8601) and
hands back raw JSON bytes; decoding into a typed event needs a registry that knows the type's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

if TYPE_CHECKING:
    from eventstore.records import RecordedEvent

S = TypeVar("S", bound=type[msgspec.Struct])


class EventCodecError(Exception):
    """Base class of the errors raised when an event cannot be turned into its type."""


class UnknownEventType(EventCodecError):
    def __init__(self, event_type: str, *, position: int | None = None) -> None:
        where = f" at global position {position}" if position is not None else ""
        super().__init__(f"unknown event type {event_type!r}{where}: no event class is registered by that name")
        self.event_type = event_type


class EventDecodeError(EventCodecError):
    def __init__(self, event_type: str, reason: str, *, position: int | None = None) -> None:
        where = f" at global position {position}" if position is not None else ""
        super().__init__(f"cannot decode {event_type}{where}: {reason}")
        self.event_type = event_type


class EventRegistry:
    """Maps event type names to msgspec Struct classes."""

    def __init__(self) -> None:
        self._types: dict[str, type[msgspec.Struct]] = {}
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {}

    def register(self, cls: S, *, name: str | None = None) -> S:
        type_name = name or cls.__name__
        existing = self._types.get(type_name)
        if existing is not None and existing is not cls:
            raise ValueError(f"event type {type_name!r} is already registered by {existing.__module__}")
        self._types[type_name] = cls
        self._decoders[type_name] = msgspec.json.Decoder(cls)
        return cls

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._types

    def names(self) -> list[str]:
        return sorted(self._types)

    def type_of(self, type_name: str) -> type[msgspec.Struct]:
        try:
            return self._types[type_name]
        except KeyError:
            raise UnknownEventType(type_name) from None

    def decode_data(self, type_name: str, data: bytes | str, *, position: int | None = None) -> Any:
        decoder = self._decoders.get(type_name)
        if decoder is None:
            raise UnknownEventType(type_name, position=position)
        try:
            return decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise EventDecodeError(type_name, str(exc), position=position) from None

    def decode(self, event: RecordedEvent) -> Any:
        """The typed event (a Struct instance) of a recorded event."""
        return self.decode_data(event.type, event.data, position=event.global_position)


_encoder = msgspec.json.Encoder(decimal_format="string")


def encode(data: Any) -> bytes:
    """JSON for a Struct, a mapping or already-encoded bytes (kept as they are)."""
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    return _encoder.encode(data)
