"""Symbols and the error of invalid configuration input, shared by portfolios, strategies and alerts."""

from __future__ import annotations

import re

SYMBOL_PATTERN = re.compile(r"^[A-Z][A-Z.]{0,9}$")


class ConfigError(ValueError):
    """Invalid portfolio or strategy input; the message says which field and why."""


def validate_symbol(symbol: str) -> str:
    if not isinstance(symbol, str) or not SYMBOL_PATTERN.match(symbol):
        hint = (
            f" (did you mean {symbol.upper()!r}?)"
            if isinstance(symbol, str) and SYMBOL_PATTERN.match(symbol.upper())
            else ""
        )
        raise ValueError(f"{symbol!r} is not a symbol (1-10 upper-case letters or dots, e.g. 'BRK.B'){hint}")
    return symbol
