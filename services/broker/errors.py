"""The broker's own exceptions: callers never see alpaca-py's or requests' exception types.

Every error carries the HTTP status and Alpaca's error code when there was one. Messages are built by
the adapter from sanitised text: they never contain API keys (see ``redact``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from services.broker.models import Order


class BrokerError(Exception):
    """Base of every broker failure."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status}, code={self.code})"


class BrokerConfigError(BrokerError):
    """The broker cannot be built from these settings (e.g. live trading not explicitly enabled)."""


class OrderRejected(BrokerError):
    """A definite answer: the broker refused the order (insufficient buying power, invalid, unknown symbol)."""


class BrokerUnavailable(BrokerError):
    """No usable answer: timeout, 5xx, dropped connection, non-JSON body. The request may or may not have
    taken effect; for reads it is safe to retry later."""


class AmbiguousSubmit(BrokerUnavailable):
    """An order submission whose outcome is unknown even after looking it up by client order id.

    The caller records the order as UNKNOWN and resolves it later with ``get_order_by_client_id``; it must
    never resubmit with a new client order id.
    """

    def __init__(
        self, message: str, *, client_order_id: str, status: int | None = None, code: int | None = None
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.client_order_id = client_order_id


class RateLimited(BrokerError):
    """HTTP 429 (or the local budget is exhausted); ``reset_at`` is when the budget refills."""

    def __init__(
        self, message: str, *, reset_at: datetime | None, status: int | None = 429, code: int | None = None
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.reset_at = reset_at


class NotFound(BrokerError):
    """The broker does not know this order (or resource). For a recent order this is NOT a cancel."""


class OrderNotCancelable(BrokerError):
    """The order can no longer be canceled (already filled, canceled or expired)."""


class DuplicateClientOrderId(BrokerError):
    """An order with this client order id already exists (Alpaca's 422 "client_order_id must be unique").

    ``existing`` is that order when it could be looked up: a reused client order id is not an idempotent
    replay, so the caller decides what the existing order means.
    """

    def __init__(
        self,
        message: str,
        *,
        client_order_id: str,
        existing: Order | None = None,
        status: int | None = 422,
        code: int | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.client_order_id = client_order_id
        self.existing = existing


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret that occurs in ``text`` (empty secrets are ignored)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
