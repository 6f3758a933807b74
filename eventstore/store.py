"""The append-only event store on PostgreSQL.

Appends are one SQL statement each (version check + insert of the whole batch), so a stream has exactly
one winner per version and many streams append concurrently with group commit.

Global order without skipping: identity values are taken in one order and commits happen in another, so
a reader tailing by position alone could read position 11 before position 10 commits and then never see
10. Every row records the id of the transaction that wrote it (``xid8``); a reader orders by
``(tx_id, global_position)`` and only reads rows whose transaction is older than the oldest transaction
still running (``pg_snapshot_xmin``). Nothing can commit below that line any more, so nothing is skipped,
and no lock serializes writers. A checkpoint is still a single number: the global position of the last
event handled (its transaction id is looked up from it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from eventstore.codec import encode
from eventstore.records import NewEvent, RecordedEvent
from eventstore.schema import migrate

log = logging.getLogger(__name__)

# Expected-version sentinels (any other value >= 0 is the exact version of the stream's last event).
ANY = -2
NO_STREAM = -1
STREAM_EXISTS = -4

_EXPECTED_NAMES = {ANY: "ANY", NO_STREAM: "NO_STREAM", STREAM_EXISTS: "STREAM_EXISTS"}


class EventStoreError(Exception):
    """Base class of the store's errors."""


class WrongExpectedVersion(EventStoreError):
    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        expected_text = _EXPECTED_NAMES.get(expected, str(expected))
        actual_text = "no stream" if actual == -1 else f"version {actual}"
        super().__init__(f"stream {stream_id!r}: expected {expected_text}, found {actual_text}")
        self.stream_id, self.expected, self.actual = stream_id, expected, actual


class DuplicateEventId(EventStoreError):
    """Some (not all) of the appended event ids exist already, or exist in another stream."""


class PositionNotFound(EventStoreError):
    pass


class Page(msgspec.Struct, frozen=True):
    """Events in commit-safe global order, and the transaction id of the last one (``after_tx`` when empty):
    with its global position, where a reader's checkpoint stands after this page."""

    events: list[RecordedEvent]
    last_tx: int


class AppendResult(msgspec.Struct, frozen=True):
    next_expected_version: int  # the version of the stream's last event after this append
    last_global_position: int
    written: bool = True  # False when every event id was already stored (an idempotent repeat)
    # The events as written (empty for a repeat), for listeners in this process (the relay's early
    # publish): their data is the JSON sent, which the database stores as the same value.
    recorded: tuple[RecordedEvent, ...] = ()


_APPEND = """
WITH current AS (
    SELECT coalesce(max(stream_version), -1) AS version FROM events WHERE stream_id = $1
), allowed AS (
    SELECT version FROM current
    WHERE CASE $2::bigint
        WHEN -2 THEN true
        WHEN -1 THEN version = -1
        WHEN -4 THEN version >= 0
        ELSE version = $2::bigint
    END
)
INSERT INTO events (stream_id, stream_version, event_id, event_type, data, metadata)
SELECT $1, allowed.version + n.ord, n.event_id, n.event_type, n.data::jsonb, n.metadata::jsonb
FROM allowed,
     unnest($3::uuid[], $4::text[], $5::text[], $6::text[])
         WITH ORDINALITY AS n(event_id, event_type, data, metadata, ord)
ORDER BY n.ord
RETURNING stream_version, global_position, recorded_at
"""

# The same for the common single-event append: a simpler plan, measurably faster under concurrency.
_APPEND_ONE = """
INSERT INTO events (stream_id, stream_version, event_id, event_type, data, metadata)
SELECT $1, current.version + 1, $3, $4, $5::jsonb, $6::jsonb
FROM (SELECT coalesce(max(stream_version), -1) AS version FROM events WHERE stream_id = $1) AS current
WHERE CASE $2::bigint
    WHEN -2 THEN true
    WHEN -1 THEN current.version = -1
    WHEN -4 THEN current.version >= 0
    ELSE current.version = $2::bigint
END
RETURNING stream_version, global_position, recorded_at
"""

# Several streams in one statement (one transaction, one commit): every stream's expectation holds, or
# nothing is written (the count check). ``idx`` ties each event to its stream; ``k`` numbers the events
# of one stream from 1.
_APPEND_MANY = """
WITH wanted AS (
    SELECT w.stream_id, w.expected, w.idx,
           coalesce((SELECT max(e.stream_version) FROM events e WHERE e.stream_id = w.stream_id), -1) AS version
    FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS w(stream_id, expected, idx)
), allowed AS (
    SELECT * FROM wanted
    WHERE CASE expected
        WHEN -2 THEN true
        WHEN -1 THEN version = -1
        WHEN -4 THEN version >= 0
        ELSE version = expected
    END
), numbered AS (
    SELECT n.*, row_number() OVER (PARTITION BY n.idx ORDER BY n.ord) AS k
    FROM unnest($3::bigint[], $4::uuid[], $5::text[], $6::text[], $7::text[])
        WITH ORDINALITY AS n(idx, event_id, event_type, data, metadata, ord)
)
INSERT INTO events (stream_id, stream_version, event_id, event_type, data, metadata)
SELECT a.stream_id, a.version + n.k, n.event_id, n.event_type, n.data::jsonb, n.metadata::jsonb
FROM numbered n JOIN allowed a ON a.idx = n.idx
WHERE (SELECT count(*) FROM allowed) = (SELECT count(*) FROM wanted)
ORDER BY n.ord
RETURNING stream_id, stream_version, global_position, recorded_at
"""

_COLUMNS = "global_position, stream_id, stream_version, event_id, event_type, data, metadata, recorded_at"

# ORDER BY names the table's columns (events.tx_id), not the output column of the same name (the cast to
# bigint): sorted by the cast, every page would sort every event after the checkpoint instead of walking
# the (tx_id, global_position) index, and reading the whole log would take time quadratic in its length.
_READ_ALL = f"""
SELECT {_COLUMNS}, tx_id::text::bigint AS tx
FROM events
WHERE (tx_id, global_position) > ($1::text::xid8, $2::bigint)
  AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY events.tx_id, events.global_position
LIMIT $3
"""

_READ_STREAM = f"""
SELECT {_COLUMNS} FROM events
WHERE stream_id = $1 AND stream_version >= $2
ORDER BY stream_version
LIMIT $3
"""

_json_decoder = msgspec.json.Decoder(dict[str, Any])


def _recorded(row: asyncpg.Record) -> RecordedEvent:
    metadata = row[6]
    return RecordedEvent(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        {} if metadata == "{}" else _json_decoder.decode(metadata),  # most events carry none: skip the decoder
        row[7],
    )


def _metadata_of(text: str) -> dict[str, Any]:
    return {} if text == "{}" else _json_decoder.decode(text)


def _as_recorded(
    stream_id: str,
    events: Sequence[NewEvent],
    data: Sequence[str],
    metadata: Sequence[str],
    written: Sequence[tuple[int, int, datetime]],
) -> tuple[RecordedEvent, ...]:
    """The events of one stream's append as written: their encoded data and metadata, and what the
    statement returned for them as (version, global position, recorded_at)."""
    return tuple(
        RecordedEvent(position, stream_id, version, event.event_id, event.type, text, _metadata_of(meta), at)
        for event, (version, position, at), text, meta in zip(
            events, sorted(written, key=lambda row: row[0]), data, metadata, strict=True
        )
    )


async def _no_session_reset(con: asyncpg.Connection) -> None:
    """The pool's default reset (RESET ALL, UNLISTEN, unlock advisory locks...) is one more round trip on
    every release, a third of a single append's time. The store leaves no session state behind (open
    transactions are still rolled back by asyncpg before this hook), so skip it."""


class EventStore:
    def __init__(self, pool: asyncpg.Pool, *, on_append: Callable[[AppendResult], None] | None = None) -> None:
        self.pool = pool
        # Called after every append that wrote events: lets a relay in this process wake up at once.
        self._on_append: list[Callable[[AppendResult], None]] = [on_append] if on_append else []
        self._appended = asyncio.Event()

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        on_append: Callable[[AppendResult], None] | None = None,
    ) -> EventStore:
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, reset=_no_session_reset)
        assert pool is not None
        try:
            async with pool.acquire() as con:
                await migrate(con)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, on_append=on_append)

    async def close(self, timeout: float = 10.0) -> None:
        """Close the pool, waiting up to ``timeout`` seconds for connections in use to be released; then
        terminate them (a connection stuck on a dead server must not keep a stopping process alive)."""
        try:
            await asyncio.wait_for(self.pool.close(), timeout)
        except TimeoutError:
            log.warning("closing the event store's connections took over %.0f s: terminating them", timeout)
            self.pool.terminate()

    def add_append_listener(self, listener: Callable[[AppendResult], None]) -> None:
        self._on_append.append(listener)

    # ------------------------------------------------------------------------------------------ append

    async def append(self, stream_id: str, events: Sequence[NewEvent], expected_version: int = ANY) -> AppendResult:
        if not stream_id:
            raise ValueError("stream_id must not be empty")
        if not events:
            raise ValueError("append needs at least one event")
        if expected_version < 0 and expected_version not in _EXPECTED_NAMES:
            raise ValueError(f"expected_version must be >= 0, ANY, NO_STREAM or STREAM_EXISTS, not {expected_version}")
        ids = [event.event_id for event in events]
        if len(set(ids)) != len(ids):
            raise DuplicateEventId(f"stream {stream_id!r}: the same event id appears twice in one append")
        if len(events) == 1:
            only = events[0]
            sql = _APPEND_ONE
            args: tuple[Any, ...] = (
                stream_id,
                expected_version,
                only.event_id,
                only.type,
                encode(only.data).decode(),
                encode(dict(only.metadata)).decode(),
            )
        else:
            sql = _APPEND
            args = (
                stream_id,
                expected_version,
                ids,
                [event.type for event in events],
                [encode(event.data).decode() for event in events],
                [encode(dict(event.metadata)).decode() for event in events],
            )
        async with self.pool.acquire() as con:
            while True:
                try:
                    rows = await con.fetch(sql, *args)
                except asyncpg.UniqueViolationError as exc:
                    repeat = await self._already_stored(con, stream_id, ids)
                    if repeat is not None:
                        return repeat
                    if exc.constraint_name == "events_event_id_key":
                        raise DuplicateEventId(
                            f"stream {stream_id!r}: event ids already stored elsewhere or only in part"
                        ) from None
                    # Another writer took the version between our read and our insert.
                    if expected_version in (ANY, STREAM_EXISTS):
                        continue
                    actual = await self._version(con, stream_id)
                    raise WrongExpectedVersion(stream_id, expected_version, actual) from None
                if rows:
                    data, metadata = (args[4], args[5]) if len(events) > 1 else ([args[4]], [args[5]])
                    written = [(int(row[0]), int(row[1]), row[2]) for row in rows]
                    recorded = _as_recorded(stream_id, events, data, metadata, written)
                    result = AppendResult(rows[-1][0], rows[-1][1], recorded=recorded)
                    self._notify(result)
                    return result
                repeat = await self._already_stored(con, stream_id, ids)
                if repeat is not None:
                    return repeat
                raise WrongExpectedVersion(stream_id, expected_version, await self._version(con, stream_id))

    async def append_many(self, appends: Sequence[tuple[str, Sequence[NewEvent], int]]) -> list[AppendResult]:
        """Append to several streams atomically, in one statement: ``(stream_id, events, expected_version)``
        each, with the same rules as :meth:`append`. Either every expectation holds and everything is
        written (one commit), or nothing is. A repeat of the same event ids is a success that writes
        nothing. Returns one result per stream, in the order given."""
        if not appends:
            raise ValueError("append_many needs at least one stream")
        streams = [stream_id for stream_id, _, _ in appends]
        if len(set(streams)) != len(streams):
            raise ValueError("append_many: each stream may appear once")
        for stream_id, events, expected_version in appends:
            if not stream_id:
                raise ValueError("stream_id must not be empty")
            if not events:
                raise ValueError(f"stream {stream_id!r}: append needs at least one event")
            if expected_version < 0 and expected_version not in _EXPECTED_NAMES:
                raise ValueError(
                    f"expected_version must be >= 0, ANY, NO_STREAM or STREAM_EXISTS, not {expected_version}"
                )
        if len(appends) == 1:
            return [await self.append(*appends[0])]
        ids = [event.event_id for _, events, _ in appends for event in events]
        if len(set(ids)) != len(ids):
            raise DuplicateEventId("append_many: the same event id appears twice")
        args = (
            streams,
            [expected for _, _, expected in appends],
            [i + 1 for i, (_, events, _) in enumerate(appends) for _ in events],
            ids,
            [event.type for _, events, _ in appends for event in events],
            [encode(event.data).decode() for _, events, _ in appends for event in events],
            [encode(dict(event.metadata)).decode() for _, events, _ in appends for event in events],
        )
        async with self.pool.acquire() as con:
            for _ in range(10):
                try:
                    rows = await con.fetch(_APPEND_MANY, *args)
                except asyncpg.UniqueViolationError as exc:
                    repeat = await self._already_stored_many(con, appends)
                    if repeat is not None:
                        return repeat
                    if exc.constraint_name == "events_event_id_key":
                        raise DuplicateEventId(
                            "append_many: event ids already stored elsewhere or only in part"
                        ) from None
                    await self._raise_wrong_version(con, appends)
                    continue  # another writer took a version of an ANY / STREAM_EXISTS stream: again
                if rows:
                    per_stream: dict[str, list[tuple[int, int, datetime]]] = {}
                    for row in rows:
                        per_stream.setdefault(row[0], []).append((int(row[1]), int(row[2]), row[3]))
                    results = []
                    offset = 0
                    for stream_id, events, _ in appends:
                        end = offset + len(events)
                        recorded = _as_recorded(stream_id, events, args[5][offset:end], args[6][offset:end],
                                                per_stream[stream_id])
                        offset = end
                        last = recorded[-1]
                        results.append(AppendResult(last.version, last.global_position, recorded=recorded))
                    for result in sorted(results, key=lambda result: result.last_global_position):
                        self._notify(result)
                    return results
                repeat = await self._already_stored_many(con, appends)
                if repeat is not None:
                    return repeat
                await self._raise_wrong_version(con, appends)
                # Every expectation holds now: a concurrent writer moved on in between; look again.
        raise EventStoreError(f"append_many to {streams}: no stable outcome after repeated concurrent changes")

    async def _raise_wrong_version(
        self, con: asyncpg.Connection, appends: Sequence[tuple[str, Sequence[NewEvent], int]]
    ) -> None:
        """Raise WrongExpectedVersion for the first stream whose expectation does not hold (if any)."""
        for stream_id, _, expected in appends:
            actual = await self._version(con, stream_id)
            holds = (
                expected == ANY
                or (expected == NO_STREAM and actual == -1)
                or (expected == STREAM_EXISTS and actual >= 0)
                or expected == actual
            )
            if not holds:
                raise WrongExpectedVersion(stream_id, expected, actual)

    @staticmethod
    async def _already_stored_many(
        con: asyncpg.Connection, appends: Sequence[tuple[str, Sequence[NewEvent], int]]
    ) -> list[AppendResult] | None:
        """The results of the original append when every id is stored, each in its own stream."""
        wanted = {event.event_id: stream_id for stream_id, events, _ in appends for event in events}
        rows = await con.fetch(
            "SELECT event_id, stream_id, stream_version, global_position FROM events WHERE event_id = ANY($1::uuid[])",
            list(wanted),
        )
        if not rows:
            return None
        if len(rows) != len(wanted) or any(wanted[row[0]] != row[1] for row in rows):
            raise DuplicateEventId(f"append_many: {len(rows)} of {len(wanted)} event ids are already stored")
        last: dict[str, tuple[int, int]] = {}
        for row in rows:
            if row[1] not in last or row[2] > last[row[1]][0]:
                last[row[1]] = (int(row[2]), int(row[3]))
        return [AppendResult(*last[stream_id], written=False) for stream_id, _, _ in appends]

    def _notify(self, result: AppendResult) -> None:
        self._appended.set()
        for listener in self._on_append:
            listener(result)

    @staticmethod
    async def _version(con: asyncpg.Connection, stream_id: str) -> int:
        version = await con.fetchval("SELECT max(stream_version) FROM events WHERE stream_id = $1", stream_id)
        return -1 if version is None else int(version)

    @staticmethod
    async def _already_stored(con: asyncpg.Connection, stream_id: str, ids: list[uuid.UUID]) -> AppendResult | None:
        """The result of the original append when every id is stored in this stream (idempotent repeat)."""
        rows = await con.fetch(
            "SELECT stream_id, stream_version, global_position FROM events WHERE event_id = ANY($1::uuid[])",
            ids,
        )
        if not rows:
            return None
        if len(rows) != len(ids) or any(row[0] != stream_id for row in rows):
            raise DuplicateEventId(
                f"stream {stream_id!r}: {len(rows)} of {len(ids)} event ids are already stored"
                + ("" if all(row[0] == stream_id for row in rows) else " in another stream")
            )
        last = max(rows, key=lambda row: row[1])
        return AppendResult(int(last[1]), int(last[2]), written=False)

    # -------------------------------------------------------------------------------------------- read

    async def stream_version(self, stream_id: str) -> int:
        async with self.pool.acquire() as con:
            return await self._version(con, stream_id)

    async def read_stream(
        self, stream_id: str, from_version: int = 0, *, batch_size: int = 1000
    ) -> AsyncIterator[RecordedEvent]:
        version = from_version
        while True:
            async with self.pool.acquire() as con:
                rows = await con.fetch(_READ_STREAM, stream_id, version, batch_size)
            for row in rows:
                yield _recorded(row)
            if len(rows) < batch_size:
                return
            version = rows[-1][2] + 1

    async def _tx_of(self, con: asyncpg.Connection, position: int) -> int:
        if position == 0:
            return 0
        tx = await con.fetchval("SELECT tx_id::text::bigint FROM events WHERE global_position = $1", position)
        if tx is None:
            raise PositionNotFound(f"no event at global position {position}")
        return int(tx)

    async def read_batch(
        self,
        after_position: int = 0,
        limit: int = 1000,
        *,
        con: asyncpg.Connection | None = None,
        after_tx: int | None = None,
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events after the event at ``after_position`` (0: from the start), in commit-safe
        global order; empty when nothing more is committed below the oldest running transaction.
        ``after_tx``: that event's transaction id when the caller knows it (saves a lookup)."""
        return (await self.read_page(after_position, limit, con=con, after_tx=after_tx)).events

    async def read_page(
        self,
        after_position: int = 0,
        limit: int = 1000,
        *,
        con: asyncpg.Connection | None = None,
        after_tx: int | None = None,
    ) -> Page:
        """:meth:`read_batch` with the last event's transaction id: a checkpoint moves without a lookup."""
        if con is None:
            async with self.pool.acquire() as own:
                return await self.read_page(after_position, limit, con=own, after_tx=after_tx)
        tx = await self._tx_of(con, after_position) if after_tx is None else after_tx
        rows = await con.fetch(_READ_ALL, str(tx), after_position, limit)
        return Page([_recorded(row) for row in rows], int(rows[-1][8]) if rows else tx)

    async def tx_of(self, position: int, *, con: asyncpg.Connection | None = None) -> int:
        """The transaction id of the event at ``position`` (0 for position 0), for checkpoints."""
        if con is None:
            async with self.pool.acquire() as own:
                return await self._tx_of(own, position)
        return await self._tx_of(con, position)

    async def checkpoints_behind(
        self, names: Sequence[str], event_types: Sequence[Sequence[str] | None] | None = None
    ) -> list[str]:
        """Which of these checkpoints have committed events after them (one query for all). With
        ``event_types`` (one entry per name; None: any type), only events of those types count."""
        types = [None if t is None else ",".join(t) for t in (event_types or [None] * len(names))]
        async with self.pool.acquire() as con:
            rows = await con.fetch(
                """
                SELECT c.name FROM eventstore_checkpoints c
                JOIN unnest($1::text[], $2::text[]) AS wanted(name, types) ON wanted.name = c.name
                WHERE EXISTS (
                    SELECT 1 FROM events e
                    WHERE (e.tx_id, e.global_position) > (c.tx::text::xid8, c.position)
                      AND e.tx_id < pg_snapshot_xmin(pg_current_snapshot())
                      AND (wanted.types IS NULL OR e.event_type = ANY(string_to_array(wanted.types, ','))))
                """,
                list(names),
                types,
            )
        return [row[0] for row in rows]

    async def read_all(
        self, from_position: int = 0, *, limit: int | None = None, batch_size: int = 5000
    ) -> AsyncIterator[RecordedEvent]:
        """Every event after ``from_position`` (a checkpoint: the global position of the last event
        already handled, 0 for the start) in commit-safe global order, up to ``limit`` events."""
        remaining = limit
        async with self.pool.acquire() as con:
            tx = await self._tx_of(con, from_position)
            position = from_position
            statement = await con.prepare(_READ_ALL)
            while remaining is None or remaining > 0:
                size = batch_size if remaining is None else min(batch_size, remaining)
                rows = await statement.fetch(str(tx), position, size)
                for row in rows:
                    yield _recorded(row)
                if remaining is not None:
                    remaining -= len(rows)
                if len(rows) < size:
                    return
                position = rows[-1][0]
                tx = await self._tx_of(con, position)

    async def subscribe_all(
        self, from_position: int = 0, *, poll_interval: float = 0.1, batch_size: int = 1000
    ) -> AsyncIterator[RecordedEvent]:
        """Catch up from ``from_position``, then follow new events as they commit (forever)."""
        position = from_position
        while True:
            self._appended.clear()
            batch = await self.read_batch(position, batch_size)
            for event in batch:
                yield event
                position = event.global_position
            if len(batch) < batch_size:
                # Appends in this process wake us at once; other processes' appends are polled.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._appended.wait(), poll_interval)

    async def read_last(self, stream_id: str) -> RecordedEvent | None:
        """The stream's last event (one index probe), or None when the stream does not exist."""
        async with self.pool.acquire() as con:
            row = await con.fetchrow(
                f"SELECT {_COLUMNS} FROM events WHERE stream_id = $1 ORDER BY stream_version DESC LIMIT 1", stream_id
            )
        return None if row is None else _recorded(row)

    async def existing_streams(self, stream_ids: Sequence[str]) -> set[str]:
        """Which of these streams have at least one event (one query, however many ids)."""
        async with self.pool.acquire() as con:
            rows = await con.fetch(
                "SELECT stream_id FROM events WHERE stream_id = ANY($1::text[]) AND stream_version = 0",
                list(stream_ids),
            )
        return {row[0] for row in rows}

    async def read_events_of(self, stream_ids: Sequence[str]) -> list[RecordedEvent]:
        """Every event of these streams, stream by stream in version order (one query)."""
        async with self.pool.acquire() as con:
            rows = await con.fetch(
                f"SELECT {_COLUMNS} FROM events WHERE stream_id = ANY($1::text[]) ORDER BY stream_id, stream_version",
                list(stream_ids),
            )
        return [_recorded(row) for row in rows]

    async def head_position(self) -> int:
        """The highest global position stored (0 when empty); for progress reports, not for tailing."""
        async with self.pool.acquire() as con:
            return int(await con.fetchval("SELECT coalesce(max(global_position), 0) FROM events"))

    async def stream_ids(self, prefix: str) -> list[str]:
        """The ids of the streams whose id starts with ``prefix`` (``portfolio-``: every portfolio's), sorted."""
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        async with self.pool.acquire() as con:
            rows = await con.fetch("SELECT DISTINCT stream_id FROM events WHERE stream_id LIKE $1 ORDER BY 1", pattern)
        return [row[0] for row in rows]

    async def checkpoints(self) -> dict[str, int]:
        """Every reader's stored checkpoint (a projection's, a relay's): name -> global position."""
        async with self.pool.acquire() as con:
            rows = await con.fetch("SELECT name, position FROM eventstore_checkpoints ORDER BY name")
        return {row["name"]: int(row["position"]) for row in rows}

    async def count(self) -> int:
        async with self.pool.acquire() as con:
            return int(await con.fetchval("SELECT count(*) FROM events"))
