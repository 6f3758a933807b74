"""The relay: the events table is the outbox; the relay tails it and publishes every event to JetStream.

- Subject ``<prefix>.event.<category>.<EventType>``, header ``Nats-Msg-Id = event_id``, body the JSON
  envelope (event_id, stream_id, version, global_position, type, recorded_at, data, metadata).
- The checkpoint moves only after JetStream acknowledged the batch. A crash between ack and checkpoint
  republishes the batch; JetStream drops the repeats inside its dedupe window, and consumers are
  idempotent by event id anyway.
- Exactly one relay is active per database and prefix: it holds a PostgreSQL advisory lock on a
  dedicated connection; others wait as standbys and take over when that connection dies.
- NATS or PostgreSQL going away is waited out and retried; nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import datetime
from typing import Any, Protocol

import asyncpg
import msgspec
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError

from eventstore.store import EventStore, RecordedEvent, category_of

log = logging.getLogger(__name__)


class EventEnvelope(msgspec.Struct, frozen=True):
    """The JSON body of every message on ``<prefix>.event.>``."""

    event_id: uuid.UUID
    stream_id: str
    version: int
    global_position: int
    type: str
    recorded_at: datetime
    data: msgspec.Raw
    metadata: dict[str, Any]


_encode_envelope = msgspec.json.Encoder().encode
envelope_decoder = msgspec.json.Decoder(EventEnvelope)


def envelope_of(event: RecordedEvent) -> bytes:
    return _encode_envelope(
        EventEnvelope(
            event_id=event.event_id,
            stream_id=event.stream_id,
            version=event.version,
            global_position=event.global_position,
            type=event.type,
            recorded_at=event.recorded_at,
            data=msgspec.Raw(event.data.encode()),
            metadata=event.metadata,
        )
    )


class SubjectNamer(Protocol):
    prefix: str

    def event(self, category: str, event_type: str) -> str: ...


# First pause before reading again when a noticed append is hidden behind an older open transaction.
HIDDEN_RETRY_FIRST = 0.0005


def _lock_key(prefix: str) -> str:
    return f"openbell-relay:{prefix}"


class Relay:
    def __init__(
        self,
        store: EventStore,
        nc: NatsClient,
        subjects: SubjectNamer,
        *,
        batch_size: int = 1000,
        idle_poll: float = 0.05,
        ack_timeout: float = 5.0,
    ) -> None:
        self.store = store
        self.nc = nc
        self.js = nc.jetstream()
        self.subjects = subjects
        self.batch_size = batch_size
        self.idle_poll = idle_poll
        self.ack_timeout = ack_timeout
        self.checkpoint_name = f"relay:{subjects.prefix}"
        self.published = 0
        self.is_leader = asyncio.Event()
        self._wakeup = asyncio.Event()
        store.add_append_listener(lambda _result: self._wakeup.set())

    def wake(self) -> None:
        """Read now (e.g. on a notice that another process appended)."""
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.1
        while not stop.is_set():
            try:
                async with self.store.pool.acquire() as lock_con:
                    if not await lock_con.fetchval(
                        "SELECT pg_try_advisory_lock(hashtext($1))", _lock_key(self.subjects.prefix)
                    ):
                        # Another relay is active: stand by.
                        await self._sleep(stop, 0.5)
                        continue
                    try:
                        self.is_leader.set()
                        log.info("relay active for prefix %s", self.subjects.prefix)
                        await self._lead(stop, lock_con)
                    finally:
                        self.is_leader.clear()
                        if not lock_con.is_closed():
                            with contextlib.suppress(asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                                # The store's pool skips the session reset on release: undo ours here.
                                await lock_con.execute("RESET synchronous_commit")
                                await lock_con.execute(
                                    "SELECT pg_advisory_unlock(hashtext($1))", _lock_key(self.subjects.prefix)
                                )
                delay = 0.1
            except (
                OSError,
                asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError,
                asyncpg.CannotConnectNowError,
                asyncpg.AdminShutdownError,
            ) as exc:
                log.warning("relay: database unavailable (%s); retrying in %.1fs", exc, delay)
                await self._sleep(stop, delay)
                delay = min(delay * 2, 2.0)

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    async def _lead(self, stop: asyncio.Event, lock_con: asyncpg.Connection) -> None:
        await lock_con.execute(
            "INSERT INTO eventstore_checkpoints (name, position) VALUES ($1, 0) ON CONFLICT DO NOTHING",
            self.checkpoint_name,
        )
        row = await lock_con.fetchrow(
            "SELECT position, tx FROM eventstore_checkpoints WHERE name = $1", self.checkpoint_name
        )
        position, tx = int(row[0]), int(row[1])
        # This connection is the relay's alone while it leads: the checkpoint is one autocommit statement
        # that need not wait for the WAL flush (a checkpoint lost in a crash only republishes what
        # JetStream then drops as repeats). Reset when the lock is let go (see run).
        await lock_con.execute("SET synchronous_commit TO OFF")
        idle = self.idle_poll
        nats_delay = 0.1
        hidden_retry: float | None = None  # set while an append we were told about is not readable yet
        while not stop.is_set():
            noticed = self._wakeup.is_set()
            self._wakeup.clear()
            page = await self.store.read_page(position, self.batch_size, con=lock_con, after_tx=tx)
            if page.events:
                try:
                    await self._publish(page.events)
                except (NatsError, TimeoutError, OSError) as exc:
                    log.warning("relay: NATS publish failed (%s); retrying in %.1fs", exc, nats_delay)
                    await self._sleep(stop, nats_delay)
                    nats_delay = min(nats_delay * 2, 2.0)
                    continue
                nats_delay = 0.1
                position, tx = page.events[-1].global_position, page.last_tx
                await lock_con.execute(
                    "UPDATE eventstore_checkpoints SET position = $2, tx = $3, updated_at = now() WHERE name = $1",
                    self.checkpoint_name,
                    position,
                    tx,
                )
                self.published += len(page.events)
                idle = self.idle_poll
                hidden_retry = None
                continue
            if noticed or hidden_retry is not None:
                # A committed append we were told about is not readable yet: a transaction that began
                # before it is still open (reads stop below the oldest one, so that none is skipped).
                # Such transactions are short: look again within milliseconds, not at the next poll.
                hidden_retry = HIDDEN_RETRY_FIRST if hidden_retry is None else hidden_retry * 2
                if hidden_retry > self.idle_poll:
                    hidden_retry = None
            try:
                await asyncio.wait_for(self._wakeup.wait(), hidden_retry or idle)
            except TimeoutError:
                if hidden_retry is None:
                    idle = min(idle * 2, 0.1)

    async def _publish(self, batch: list[RecordedEvent]) -> None:
        futures = []
        for event in batch:
            subject = self.subjects.event(category_of(event.stream_id), event.type)
            futures.append(
                await self.js.publish_async(subject, envelope_of(event), headers={"Nats-Msg-Id": str(event.event_id)})
            )
        await asyncio.wait_for(asyncio.gather(*futures), self.ack_timeout)
