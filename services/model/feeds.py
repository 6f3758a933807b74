"""The body of a live feed message (core NATS ``<prefix>.feed.<kind>.<key>``), the same for every service."""

from __future__ import annotations

from datetime import date, datetime

import msgspec

_encoder = msgspec.json.Encoder(decimal_format="string")


def feed_payload(kind: str, data: msgspec.Struct, **extra: object) -> bytes:
    """The JSON body of a live feed message: ``{"kind": ..., **event fields, **extra}``."""
    body = msgspec.to_builtins(data, builtin_types=(datetime, date))
    if not isinstance(body, dict):
        raise TypeError("a feed payload must be a Struct")
    return _encoder.encode({"kind": kind, **body, **extra})
