"""Which errors are the servers' (retry and wait them out) and which are ours (a bug: let it be seen).

One classification for every loop that talks to PostgreSQL or NATS (the relay, the projection runner,
the durable consumers, the job runner, the trade-update stream): an error counted here means the
database or NATS is down, restarting, failing over or out of resources for a moment, and the same work
can simply be done again once it is back. Anything else is a bug and is not hidden by a retry.

Why each family is here:

- ``OSError`` (connection refused or reset, broken pipe) and ``TimeoutError`` (a subclass of it):
  a server went away, or answers too slowly.
- asyncpg's ``PostgresConnectionError`` (SQLSTATE class 08), ``InterfaceError`` (the connection closed
  under a query) and ``InternalClientError`` (the protocol state a killed server leaves a connection in,
  "cannot switch to state ..."): a PostgreSQL crash or restart.
- SQLSTATE classes 57 (operator intervention: ``AdminShutdownError``, ``CrashShutdownError``,
  ``CannotConnectNowError`` while the server recovers), 53 (insufficient resources: too many
  connections, disk full), 58 (system error: I/O), 25006 (read-only transaction: a standby promoted or
  demoted under us), 40001 / 40P01 (serialization failure, deadlock: the transaction may simply rerun).
- Every ``nats.errors.Error`` (disconnected, no servers, no responders while JetStream elects a leader,
  timeouts, JetStream API errors during a restart): NATS reconnects by itself.
"""

from __future__ import annotations

import asyncpg
from nats.errors import Error as NatsError

# SQLSTATE classes (first two characters) and codes that say "the server, not the statement".
_RETRYABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58"})
_RETRYABLE_SQLSTATES = frozenset({"25006", "40001", "40P01"})

_RETRYABLE_TYPES: tuple[type[BaseException], ...] = (
    OSError,  # includes ConnectionError and TimeoutError (asyncio.TimeoutError is TimeoutError)
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    NatsError,
)


def is_retryable(exc: BaseException) -> bool:
    """True when ``exc`` comes from a server being unavailable for a while (see the module docstring):
    the caller waits and does the same again. False for everything else (bugs, bad data)."""
    if isinstance(exc, _RETRYABLE_TYPES):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state in _RETRYABLE_SQLSTATES or state[:2] in _RETRYABLE_SQLSTATE_CLASSES
    return False


class Backoff:
    """A doubling pause between retries, from ``first`` up to ``cap`` seconds; ``reset`` after a success."""

    def __init__(self, first: float = 0.1, cap: float = 2.0) -> None:
        self.first = first
        self.cap = cap
        self.current = first

    def next(self) -> float:
        """The pause to take now; the following one is twice as long (up to the cap)."""
        pause = self.current
        self.current = min(self.current * 2, self.cap)
        return pause

    def reset(self) -> None:
        self.current = self.first
