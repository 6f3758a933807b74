"""Decimal helpers shared by every service that names a quantity in an id or a cause."""

from __future__ import annotations

from decimal import Decimal

ZERO = Decimal(0)


def canonical_decimal(value: Decimal) -> str:
    """One text per numeric value (``Decimal("10.0")`` and ``Decimal("1E+1")`` both give ``"10"``)."""
    return format(value.normalize(), "f") if value != 0 else "0"
