"""Logging for every ``openbell`` command: the level from OPENBELL_LOG_LEVEL for openbell's own loggers,
never below INFO for the libraries that can print credentials, and redaction of every record.

At DEBUG, ``websockets`` logs each frame it sends (alpaca-py's authenticate frame carries the API key and
secret), ``urllib3`` and ``requests`` log URLs and headers, ``alpaca`` its requests: those loggers are held
at INFO or above whatever the setting says. Every record is also redacted before a handler formats it:
the secrets the process registered (``register_secrets``), credentials in URLs and ``key=value`` pairs.
"""

from __future__ import annotations

import logging

from services.core.redaction import redact_text

# Loggers of libraries that log request or frame contents at DEBUG (credentials included).
CREDENTIAL_LOGGERS = ("websockets", "alpaca", "urllib3", "requests", "httpx", "httpcore", "asyncpg", "nats")


class RedactingFilter(logging.Filter):
    """Redacts a record's final message (arguments merged in) before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is left to the handler's own error path
            return True
        redacted = redact_text(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return True


def configure_logging(level: str) -> None:
    """Root logging at ``level``; credential-printing libraries at INFO or above; every record redacted."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    numeric = logging.getLevelName(level) if isinstance(logging.getLevelName(level), int) else logging.INFO
    for name in CREDENTIAL_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
