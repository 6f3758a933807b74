"""Bounds on everything a user or a client can send: command bodies, strings, numbers, nesting.

A command arrives as bytes from anyone allowed to publish it; before any model sees it, the body is
checked here (size, JSON, depth, strings without NUL or control characters, finite numbers), and every
refusal is one short line that never echoes the input. The Decimal helpers give each money, quantity and
fraction field explicit bounds (digits, decimal places, range; no NaN or Infinity), so a value that a
PostgreSQL ``numeric`` column or a later computation cannot take never reaches the log.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import msgspec
from pydantic import Field

from services.model.text import CONTROL_CHARACTERS, LINE_BREAKS, one_line

# A command's JSON body: ample for a portfolio with its strategies, far below NATS's payload limit.
MAX_COMMAND_BYTES = 64 * 1024
MAX_DEPTH = 8  # objects and lists inside each other
MAX_STRING = 4096  # any string of a command; fields set their own, smaller, limits
MAX_REASON = 500  # an operator's reason for a halt or a resume
MAX_ITEMS = 1000  # members of one object or list

MAX_MONEY = Decimal("1e12")  # cash, notionals, prices: a trillion is beyond any portfolio
MAX_QUANTITY = Decimal("1e9")
MONEY_PLACES = 6
FRACTION_PLACES = 8


class InputRejected(ValueError):
    """A request that can never be handled; the message is one line and never contains the input."""


def money(**bounds: Any) -> Any:
    """A pydantic Field for an amount of money or a price: finite, at most 1e12, 6 decimal places."""
    bounds.setdefault("le", MAX_MONEY)
    return Field(max_digits=13 + MONEY_PLACES, decimal_places=MONEY_PLACES, allow_inf_nan=False, **bounds)


def quantity(**bounds: Any) -> Any:
    """A pydantic Field for a number of shares: finite, at most 1e9, 9 decimal places."""
    bounds.setdefault("le", MAX_QUANTITY)
    return Field(max_digits=19, decimal_places=9, allow_inf_nan=False, **bounds)


def fraction(**bounds: Any) -> Any:
    """A pydantic Field for a ratio or a percent (its range given by the caller): 8 decimal places."""
    return Field(max_digits=12 + FRACTION_PLACES, decimal_places=FRACTION_PLACES, allow_inf_nan=False, **bounds)


def check_json_value(value: Any, where: str = "request", depth: int = 0) -> None:
    """Refuse what no command takes: deep nesting, huge containers or strings, NUL and control
    characters in strings (tab and newline included: no field is multi-line), non-finite numbers."""
    if depth > MAX_DEPTH:
        raise InputRejected(f"{where}: nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise InputRejected(f"{where}: a string longer than {MAX_STRING} characters")
        if CONTROL_CHARACTERS.search(value) or LINE_BREAKS.search(value):
            raise InputRejected(f"{where}: control characters (NUL, newline, escape...) are not allowed")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InputRejected(f"{where}: numbers must be finite (no NaN, Infinity or 1e999999)")
    elif isinstance(value, dict):
        if len(value) > MAX_ITEMS:
            raise InputRejected(f"{where}: more than {MAX_ITEMS} members")
        for key, item in value.items():
            check_json_value(key, where, depth + 1)
            check_json_value(item, f"{where}.{one_line(str(key), 40)}", depth + 1)
    elif isinstance(value, list):
        if len(value) > MAX_ITEMS:
            raise InputRejected(f"{where}: more than {MAX_ITEMS} items")
        for index, item in enumerate(value):
            check_json_value(item, f"{where}[{index}]", depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        raise InputRejected(f"{where}: a number beyond 1e30")


def decode_command(body: bytes) -> dict[str, Any]:
    """A command's JSON object (empty body: ``{}``), checked by :func:`check_json_value`, or InputRejected."""
    if len(body) > MAX_COMMAND_BYTES:
        raise InputRejected(f"request too large: {len(body)} bytes (at most {MAX_COMMAND_BYTES})")
    if not body.strip():
        return {}
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise InputRejected("invalid JSON: the request body must be a JSON object") from None
    except (RecursionError, ValueError):
        raise InputRejected(f"invalid JSON: nested more than {MAX_DEPTH} levels deep") from None
    if not isinstance(data, dict):
        raise InputRejected("the request body must be a JSON object")
    check_json_value(data)
    return data


def error_reply(exc: BaseException) -> dict[str, str]:
    """The ``{"error": ...}`` reply of a refused command: one line, bounded, input never echoed whole."""
    return {"error": one_line(str(exc)) or type(exc).__name__}


def reason_text(value: object, what: str = "reason") -> str:
    """An operator's free-text reason: a string of at most MAX_REASON printable characters."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputRejected(f"{what}: must be a string")
    if len(value) > MAX_REASON:
        raise InputRejected(f"{what}: at most {MAX_REASON} characters")
    if CONTROL_CHARACTERS.search(value) or LINE_BREAKS.search(value):
        raise InputRejected(f"{what}: control characters are not allowed")
    return value
