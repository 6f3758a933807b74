"""map_error: an alpaca-py or requests exception as one of services.broker.errors, with the HTTP status and
Alpaca's error code, and never a key (pure).

The adapter sends every exception of a REST call through here, so what a caller can catch is the same for
every broker.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import pydantic
import requests
from alpaca.common.exceptions import APIError

from services.broker.errors import (
    BrokerError,
    BrokerUnavailable,
    DuplicateClientOrderId,
    NotFound,
    OrderNotCancelable,
    OrderRejected,
    RateLimited,
    redact,
)

DUPLICATE_CLIENT_ORDER_ID = "client_order_id must be unique"


def map_error(exc: BaseException, *, operation: str, secrets: Sequence[str]) -> BrokerError:
    """Translate an alpaca-py / requests exception into the broker's own type, without secrets."""
    if isinstance(exc, BrokerError):
        return exc
    if isinstance(exc, APIError):
        return _map_api_error(exc, operation=operation, secrets=secrets)
    if isinstance(exc, requests.exceptions.Timeout):
        return BrokerUnavailable(redact(f"{operation}: timed out ({type(exc).__name__})", secrets))
    if isinstance(exc, requests.exceptions.ConnectionError):
        return BrokerUnavailable(redact(f"{operation}: connection failed ({type(exc).__name__})", secrets))
    if isinstance(exc, ValueError | json.JSONDecodeError | requests.exceptions.JSONDecodeError):
        # requests' JSONDecodeError is a ValueError: a 2xx answer whose body is not JSON (a proxy page).
        kind = "unexpected response shape" if isinstance(exc, pydantic.ValidationError) else "non-JSON response body"
        return BrokerUnavailable(f"{operation}: {kind} ({type(exc).__name__})")
    if isinstance(exc, requests.exceptions.RequestException):
        return BrokerUnavailable(redact(f"{operation}: request failed ({type(exc).__name__})", secrets))
    return BrokerError(f"{operation}: unexpected {type(exc).__name__}")


def _map_api_error(exc: APIError, *, operation: str, secrets: Sequence[str]) -> BrokerError:
    status = exc.status_code
    # Redacted whole, before anything is cut: a cut through a secret would leave a prefix of it behind.
    body = redact(str(exc), secrets)
    code: int | None = None
    try:
        parsed = json.loads(body)
        code = int(parsed["code"]) if isinstance(parsed, dict) and "code" in parsed else None
        message = redact(str(parsed.get("message", "")), secrets)[:500] if isinstance(parsed, dict) else body[:200]
    except (ValueError, TypeError):
        # APIError.code raises on a non-JSON body (an HTML 502 page): keep a short, redacted snippet.
        message = "non-JSON error body: " + " ".join(body[:120].split())
    message = redact(f"{operation}: HTTP {status}: {message}", secrets)
    if status == 429:
        reset_at = None
        response = exc.response
        if response is not None and (reset := response.headers.get("X-Ratelimit-Reset")):
            try:
                reset_at = datetime.fromtimestamp(float(reset), UTC)
            except ValueError:
                reset_at = None
        return RateLimited(message, reset_at=reset_at, status=status, code=code)
    if status is None or status >= 500:
        return BrokerUnavailable(message, status=status, code=code)
    if status == 404:
        return NotFound(message, status=status, code=code)
    if status == 422 and DUPLICATE_CLIENT_ORDER_ID in message:
        return DuplicateClientOrderId(message, client_order_id="", status=status, code=code)
    if operation == "submit_order":
        return OrderRejected(message, status=status, code=code)
    if operation == "cancel_order" and status == 422:
        return OrderNotCancelable(message, status=status, code=code)
    return BrokerError(message, status=status, code=code)
