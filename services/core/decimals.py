"""Decimals in JSON: exact, as strings, in plain notation (``"100000"``, never PostgreSQL's ``"1.0E+5"``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import PlainSerializer, WithJsonSchema


def plain(value: Decimal) -> str:
    return f"{value:f}"


PlainDecimal = Annotated[
    Decimal,
    PlainSerializer(plain, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^-?\d+(\.\d+)?$", "description": "an exact decimal"}),
]
