"""Deterministic client order ids.

The client order id is how a redelivered tick, a second worker or a retried HTTP POST is recognised as
the same order: it is a pure function of the order's cause (portfolio, tick, symbol, side), so the same
cause always produces the same id, in any process and any Python version.

Format: ``ob-`` + the first 40 hex digits (160 bits) of a SHA-256 = 43 characters, within the 48 the
design allows and made only of characters Alpaca accepts (lowercase letters, digits, ``-``).
"""

from __future__ import annotations

import hashlib
import re

from services.model.vocabulary import Side

CLIENT_ORDER_ID_PREFIX = "ob-"
CLIENT_ORDER_ID_MAX_LENGTH = 48
_HEX_DIGITS = 40
CLIENT_ORDER_ID_PATTERN = re.compile(r"^ob-[0-9a-f]{40}$")

# A separator that cannot appear in any of the parts, so ("ab", "c") and ("a", "bc") never collide.
_SEPARATOR = "\x1f"


def client_order_id(portfolio_id: str, tick_id: str, symbol: str, side: Side | str) -> str:
    """The client order id of the order a portfolio requests for ``symbol`` and ``side`` at a tick."""
    parts = (str(portfolio_id), str(tick_id), symbol.upper(), Side(side).value)
    for part in parts:
        if not part or _SEPARATOR in part:
            raise ValueError(f"client order id parts must be non-empty and printable, got {parts!r}")
    digest = hashlib.sha256(_SEPARATOR.join(parts).encode("utf-8")).hexdigest()
    return CLIENT_ORDER_ID_PREFIX + digest[:_HEX_DIGITS]


def is_openbell_client_order_id(value: str) -> bool:
    """True for ids this module produces (orders placed by someone else in the account are not ours)."""
    return CLIENT_ORDER_ID_PATTERN.match(value) is not None
