"""The relay: the events table is the outbox; the relay tails it and publishes every event to JetStream.

- Subject ``<prefix>.event.<category>.<EventType>``, header ``Nats-Msg-Id = event_id``, body the JSON
  envelope (event_id, stream_id, version, global_position, type, recorded_at, data, metadata).
- The checkpoint moves only after JetStream acknowledged the batch, and is written at most every
  ``checkpoint_every`` seconds while events keep coming (and whenever the relay goes idle or stops): one
  statement less on the path of every event. A crash before the write republishes what went out since
  the last one; JetStream drops the repeats inside its dedupe window, and consumers are idempotent by
  event id anyway.
- Early publish (``early_types``): an event of one of these types appended in the relay's own process is
  published at once, from the append's result, without waiting for the tailing read (the order path:
  an OrderRequested reaches the orders service a read sooner). The tailing read still meets it, in
  order, and then only moves past it (or publishes it again, which JetStream drops as a repeat, if the
  early publish was not acknowledged by then): the log stays the only source, and nothing is lost.
  Only for types where no consumer depends on the stream's order across streams: the first event of a
  stream of its own.
- Exactly one relay is active per database and prefix: it holds a PostgreSQL advisory lock on a
  dedicated connection; others wait as standbys and take over when that connection dies.
- NATS or PostgreSQL going away (any error ``eventstore.faults.is_retryable`` counts) is waited out and
  retried; nothing is lost. Any other error ends ``run`` with it (a bug must not hide behind retries).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any, Protocol

import asyncpg
import msgspec
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError

from eventstore.faults import is_retryable
from eventstore.records import RecordedEvent, category_of
from eventstore.store import AppendResult, EventStore

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

    def dlq(self, service: str) -> str: ...


# Room kept below the server's max_payload for the headers of a message.
HEADER_ROOM = 1024


# Pauses between reads while an append we were told about is hidden behind an older open transaction
# (0.5 ms, 1 ms, then every 2 ms), and for how long at most before falling back to the idle poll.
HIDDEN_RETRY_FIRST = 0.0005
HIDDEN_RETRY_MAX = 0.002
HIDDEN_RETRY_FOR = 1.0
# Positions of the last events published, remembered to ignore notices that arrive after the event went out.
RECENT_POSITIONS = 4096
# What undoing the lock connection's session state may raise when its server died under it: ignored, the
# session is gone with it.
_CLEANUP_ERRORS = (asyncpg.PostgresError, OSError, asyncpg.InterfaceError, asyncpg.InternalClientError)


def _look_at(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


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
        checkpoint_every: float = 0.25,
        early_types: Collection[str] = (),
    ) -> None:
        self.store = store
        self.nc = nc
        self.js = nc.jetstream()
        self.subjects = subjects
        self.batch_size = batch_size
        self.idle_poll = idle_poll
        self.ack_timeout = ack_timeout
        self.checkpoint_every = checkpoint_every
        self.checkpoint_name = f"relay:{subjects.prefix}"
        self.published = 0  # events published (or moved past, when published early) since start
        self.published_position = 0  # the global position of the last event published (checkpoint included)
        self.is_leader = asyncio.Event()
        self._wakeup = asyncio.Event()
        # Global positions of appends we were told about and have not published yet; and the last ones
        # published, so that a notice arriving after its event went out is not waited for.
        self._noticed: set[int] = set()
        self._recent: collections.deque[int] = collections.deque(maxlen=RECENT_POSITIONS)
        self._recent_set: set[int] = set()
        # Event ids published early and acknowledged, until the tailing read meets them.
        self.early_types = frozenset(early_types)
        self._early: collections.OrderedDict[uuid.UUID, None] = collections.OrderedDict()
        self._early_tasks: set[asyncio.Task[None]] = set()
        store.add_append_listener(self._on_append)

    def _on_append(self, result: AppendResult) -> None:
        self.notice(result.last_global_position)
        if self.early_types and self.is_leader.is_set():
            early = [event for event in result.recorded if event.type in self.early_types]
            if early:
                task = asyncio.get_running_loop().create_task(self._publish_early(early))
                self._early_tasks.add(task)
                task.add_done_callback(self._early_tasks.discard)

    def _not_published_early(self, events: list[RecordedEvent]) -> list[RecordedEvent]:
        """The events of a page still to publish: those published early are only moved past (the
        tailing read meets each id once, in log order, so its entry goes)."""
        due = []
        for event in events:
            if event.event_id in self._early:
                del self._early[event.event_id]
            else:
                due.append(event)
        return due

    async def _publish_early(self, events: list[RecordedEvent]) -> None:
        try:
            await self._publish(events)
        except (NatsError, TimeoutError, OSError) as exc:
            log.debug("relay: early publish failed (%s); the tailing read publishes them", exc)
            return
        for event in events:
            self._early[event.event_id] = None
        while len(self._early) > RECENT_POSITIONS:
            self._early.popitem(last=False)

    def notice(self, global_position: int) -> None:
        """An append up to ``global_position`` was committed (in this process, or announced by another):
        read now, and look again soon if it is not readable yet."""
        if global_position not in self._recent_set:
            self._noticed.add(global_position)
        self._wakeup.set()

    def wake(self) -> None:
        """Read now (e.g. on a notice that another process appended)."""
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self._run(stop)
        finally:
            for task in list(self._early_tasks):
                task.cancel()  # the tailing read publishes what they had not

    async def _run(self, stop: asyncio.Event) -> None:
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
                            with contextlib.suppress(*_CLEANUP_ERRORS):
                                # The store's pool skips the session reset on release: undo ours here.
                                await lock_con.execute("RESET synchronous_commit")
                                await lock_con.execute(
                                    "SELECT pg_advisory_unlock(hashtext($1))", _lock_key(self.subjects.prefix)
                                )
                delay = 0.1
            except Exception as exc:
                if not is_retryable(exc):
                    raise  # a bug: the loop dies, and the service host takes the process down with it
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
        self.published_position = max(self.published_position, position)  # published before, by any relay
        # This connection is the relay's alone while it leads: the checkpoint is one autocommit statement
        # that need not wait for the WAL flush (a checkpoint lost in a crash only republishes what
        # JetStream then drops as repeats). Reset when the lock is let go (see run).
        await lock_con.execute("SET synchronous_commit TO OFF")
        idle = self.idle_poll
        nats_delay = 0.1
        loop = asyncio.get_running_loop()
        hidden_since: float | None = None  # when a noticed append was first found not readable
        hidden_delay = HIDDEN_RETRY_FIRST
        saved = (position, tx)  # the checkpoint as stored
        saved_at = loop.time()

        async def save_checkpoint() -> None:
            nonlocal saved, saved_at
            await lock_con.execute(
                "UPDATE eventstore_checkpoints SET position = $2, tx = $3, updated_at = now() WHERE name = $1",
                self.checkpoint_name,
                position,
                tx,
            )
            saved, saved_at = (position, tx), loop.time()

        try:
            while not stop.is_set():
                self._wakeup.clear()
                page = await self.store.read_page(position, self.batch_size, con=lock_con, after_tx=tx)
                if page.events:
                    due = self._not_published_early(page.events)
                    try:
                        if due:
                            await self._publish(due)
                    except Exception as exc:
                        if not is_retryable(exc):
                            raise
                        log.warning("relay: NATS publish failed (%s); retrying in %.1fs", exc, nats_delay)
                        await self._sleep(stop, nats_delay)
                        nats_delay = min(nats_delay * 2, 2.0)
                        continue
                    nats_delay = 0.1
                    position, tx = page.events[-1].global_position, page.last_tx
                    self.published += len(page.events)
                    self.published_position = position
                    self._published(page.events)
                    if loop.time() - saved_at >= self.checkpoint_every:
                        await save_checkpoint()
                    idle = self.idle_poll
                    hidden_since = None
                    if len(page.events) == self.batch_size or self._noticed:
                        continue  # more to read, or a noticed append still to come
                elif self._noticed:
                    # A committed append we were told about is not readable yet: a transaction that began
                    # before it is still open (reads stop below the oldest one, so that none is skipped).
                    # Such transactions are short: look again within a millisecond or two, not at the next
                    # poll (and not with a doubling pause, which lets one 20 ms transaction cost 30 ms more).
                    if hidden_since is None:
                        hidden_since, hidden_delay = loop.time(), HIDDEN_RETRY_FIRST
                    else:
                        hidden_delay = min(hidden_delay * 2, HIDDEN_RETRY_MAX)
                    if loop.time() - hidden_since > HIDDEN_RETRY_FOR:
                        # An unusually long transaction (or a notice from another database): back to polling.
                        log.debug("relay: %d noticed appends not readable after %.1fs", len(self._noticed),
                                  HIDDEN_RETRY_FOR)
                        self._noticed.clear()
                        hidden_since = None
                elif (position, tx) != saved:
                    await save_checkpoint()  # caught up: store where we are before waiting
                try:
                    await asyncio.wait_for(self._wakeup.wait(), hidden_delay if hidden_since is not None else idle)
                except TimeoutError:
                    if hidden_since is None:
                        idle = min(idle * 2, 0.1)
        finally:
            if (position, tx) != saved and not lock_con.is_closed():
                with contextlib.suppress(*_CLEANUP_ERRORS):
                    await save_checkpoint()

    def _published(self, events: list[RecordedEvent]) -> None:
        for event in events:
            self._noticed.discard(event.global_position)
            if len(self._recent) == self._recent.maxlen:
                self._recent_set.discard(self._recent[0])
            self._recent.append(event.global_position)
            self._recent_set.add(event.global_position)

    def _dead_letter(self, event: RecordedEvent, size: int, limit: int) -> tuple[str, bytes, dict[str, str]]:
        """What goes out instead of an event NATS would refuse (larger than its max_payload): a small
        message on ``<prefix>.dlq.relay`` naming it and the reason. The event stays in the log; the relay
        moves on instead of retrying it forever (nothing after it would ever reach NATS)."""
        reason = f"event of {size} bytes exceeds the NATS max_payload of {limit} bytes: not published"
        log.error("relay: %s at position %d (%s %s): %s", event.type, event.global_position, event.stream_id,
                  event.event_id, reason)
        headers = {
            "Nats-Msg-Id": f"dlq:relay:{event.event_id}",
            "Openbell-Dlq-Reason": reason,
            "Openbell-Dlq-Service": "relay",
            "Openbell-Dlq-Subject": self.subjects.event(category_of(event.stream_id), event.type),
            "Openbell-Event-Id": str(event.event_id),
            "Openbell-Event-Position": str(event.global_position),
        }
        body = msgspec.json.encode({"event_id": str(event.event_id), "stream_id": event.stream_id[:200],
                                    "type": event.type, "global_position": event.global_position, "reason": reason})
        return self.subjects.dlq("relay"), body, headers

    async def _publish(self, batch: list[RecordedEvent]) -> None:
        futures = []
        # The server's limit as it announced it (1 MiB by default); 0 when not known yet.
        limit = int(getattr(self.nc, "max_payload", 0) or 0)
        for event in batch:
            subject = self.subjects.event(category_of(event.stream_id), event.type)
            payload = envelope_of(event)
            headers = {"Nats-Msg-Id": str(event.event_id)}
            if limit and len(payload) > limit - HEADER_ROOM:
                subject, payload, headers = self._dead_letter(event, len(payload), limit)
            futures.append(await self.js.publish_async(subject, payload, headers=headers))
        acks = asyncio.gather(*futures)
        try:
            await asyncio.wait_for(acks, self.ack_timeout)
        finally:
            # On a shutdown the client cancels the pending acks before wait_for looks at them: their
            # outcome is then looked at here, not reported as "never retrieved".
            acks.add_done_callback(_look_at)
