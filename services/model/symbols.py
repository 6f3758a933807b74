"""Symbols, names and the error of invalid configuration input, shared by portfolios, strategies and alerts."""

from __future__ import annotations

import re

from services.model.text import shown

# Whole values only (``fullmatch``): ``$`` would also take a trailing newline, which later breaks subjects.
SYMBOL_PATTERN = re.compile(r"[A-Z][A-Z.]{0,9}")
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,47}")


class ConfigError(ValueError):
    """Invalid portfolio or strategy input; the message says which field and why."""


def validate_symbol(symbol: object) -> str:
    if not isinstance(symbol, str) or not SYMBOL_PATTERN.fullmatch(symbol):
        hint = (
            f" (did you mean {symbol.upper()!r}?)"
            if isinstance(symbol, str) and SYMBOL_PATTERN.fullmatch(symbol.upper())
            else ""
        )
        raise ValueError(f"{shown(symbol)} is not a symbol (1-10 upper-case letters or dots, e.g. 'BRK.B'){hint}")
    return symbol


def validate_name(name: object, what: str) -> str:
    """A portfolio's (or another named thing's) name: ``what`` says which, for the message."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{what} name {shown(name)} must be 1-48 lower-case letters, digits, '-' or '_',"
            " starting with a letter or digit"
        )
    return name
