"""Redaction of credentials from any text that may be logged, stored in an event or sent in a reply.

The secrets a process holds (the broker's keys) are registered once; every text is redacted as a whole
before it is cut to a length, so no prefix of a secret survives a truncation.
"""

from __future__ import annotations

import re

_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")
_KEY_VALUE = re.compile(
    r"(?i)\b(api[_-]?key|secret[_-]?key|secret|token|password|passwd|pwd|authorization|apca-api-[a-z-]+)"
    r"(\"?\s*[=:]\s*\"?)([^\s\"',;&]+)"
)
# Credentials this process holds (the broker's keys): redacted wherever they would appear in a text.
_SECRETS: set[str] = set()


def register_secrets(*secrets: str) -> None:
    """Make ``safe_error`` and the log redaction replace these values (e.g. an API key) by ``***``."""
    _SECRETS.update(s for s in secrets if len(s) >= 4)


def redact_text(text: str) -> str:
    """``text`` with the registered secrets, credentials in URLs and ``key=value`` credentials replaced."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    return _KEY_VALUE.sub(r"\1\2***", text)
