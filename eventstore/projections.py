"""Projections: named handlers that turn the event log into read-model tables.

A projection's checkpoint is updated in the same transaction as its read-model writes, so every event
takes effect exactly once, whatever crashes in between. Two runners of one projection serialize on the
checkpoint's transaction-scoped advisory lock, so running one per service copy is safe.

``rebuild(name)`` truncates the projection's tables, resets its checkpoint and replays the whole log in
one transaction: readers see the old read model until the new one is complete.

A projection that cannot apply the events after its checkpoint (the same error ``STOP_AFTER`` times in a
row at the same position: not a lost connection, which is waited out) stops loudly: it is logged as an
error, ``on_stopped`` is called (the services raise a notification and set a metric), ``stopped`` names
it with the reason, and a reader that needs it gets :class:`ProjectionStopped`. The other projections go
on. ``check(name)`` tries the next batch in a transaction that is rolled back (``openbell doctor``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from typing import ClassVar

import asyncpg

from eventstore.faults import is_retryable
from eventstore.schema import may_change_schema
from eventstore.store import EventStore, EventStoreError, RecordedEvent

log = logging.getLogger(__name__)

STOP_AFTER = 3  # failures in a row at one position before a projection is declared stopped


class ProjectionFailed(EventStoreError):
    """A projection could not apply the events after its checkpoint (this time; it is tried again)."""


class ProjectionStopped(ProjectionFailed):
    """A projection cannot apply the events after its checkpoint; its read model stays where it is."""

    def __init__(self, name: str, position: int, reason: str) -> None:
        super().__init__(f"projection {name} is stopped after position {position}: {reason}")
        self.name = name
        self.position = position
        self.reason = reason


class _Failed(Exception):
    def __init__(self, position: int, error: BaseException) -> None:
        super().__init__(str(error))
        self.position = position
        self.error = error


async def _lock_checkpoint(con: asyncpg.Connection, name: str) -> asyncpg.Record:
    """Take the projection's lock for this transaction, then read its checkpoint: (position, tx).

    An advisory lock, not ``SELECT ... FOR UPDATE`` on the checkpoint row: a row lock gives the transaction
    an id at once, and every reader of the log stops below the oldest running transaction id (so as to
    skip no late commit). The advisory lock does not: the id comes with the first write, late in the step.
    Two statements: the checkpoint must be read after the lock is granted (a fresh snapshot)."""
    await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", name)
    # set_config(.., true) is SET LOCAL: read models need not wait for the WAL flush (see _step).
    return await con.fetchrow(
        "SELECT position, tx, set_config('synchronous_commit', 'off', true) FROM eventstore_checkpoints"
        " WHERE name = $1",
        name,
    )


class Projection(ABC):
    """Subclass with a ``name``, the ``tables`` it owns, ``setup`` (idempotent DDL) and ``apply``."""

    name: ClassVar[str]
    tables: ClassVar[tuple[str, ...]] = ()
    # Only these event types are passed to ``apply`` (None: all); the checkpoint moves over the rest.
    event_types: ClassVar[frozenset[str] | None] = None

    async def setup(self, con: asyncpg.Connection) -> None:  # noqa: B027 - optional hook
        """Create the read-model tables if they do not exist (runs inside a transaction)."""

    @abstractmethod
    async def apply(self, con: asyncpg.Connection, events: list[RecordedEvent]) -> None:
        """Update the read model for these events, in order; runs inside the checkpoint's transaction."""


def checkpoint_name(projection: Projection | str) -> str:
    name = projection if isinstance(projection, str) else projection.name
    return f"projection:{name}"


class ProjectionRunner:
    def __init__(self, store: EventStore, projections: Iterable[Projection], *, batch_size: int = 2000) -> None:
        self.store = store
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size
        self._ready = False
        self.stopped: dict[str, ProjectionStopped] = {}
        # Called once when a projection stops (name, position after which it cannot apply, reason).
        self.on_stopped: Callable[[str, int, str], Awaitable[None]] | None = None
        self._failures: dict[str, tuple[int, int]] = {}  # name -> (checkpoint position, failures in a row)

    def __getitem__(self, name: str) -> Projection:
        try:
            return self.projections[name]
        except KeyError:
            known = ", ".join(sorted(self.projections)) or "none"
            raise KeyError(f"unknown projection {name!r} (known: {known})") from None

    async def setup(self) -> None:
        async with self.store.pool.acquire() as con:
            # A least-privilege role finds the read models made by the owner's migrations.
            ddl = await may_change_schema(con)
            for projection in self.projections.values():
                async with con.transaction():
                    # Serialize DDL of concurrent service copies starting together.
                    await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", checkpoint_name(projection))
                    if ddl:
                        await projection.setup(con)
                    await con.execute(
                        "INSERT INTO eventstore_checkpoints (name, position) VALUES ($1, 0) ON CONFLICT DO NOTHING",
                        checkpoint_name(projection),
                    )
        self._ready = True

    async def _step(self, con: asyncpg.Connection, projection: Projection) -> int:
        """Apply the next batch for one projection inside the caller's transaction; returns events read."""
        # Read models derive from the log: a crash may lose the newest of these commits, never half of
        # one (rows and checkpoint commit together), and the projection then redoes them. So they need
        # not wait for the WAL flush; the events themselves always do.
        row = await _lock_checkpoint(con, checkpoint_name(projection))
        page = await self.store.read_page(row[0], self.batch_size, con=con, after_tx=row[1])
        events = page.events
        if not events:
            return 0
        wanted = projection.event_types
        relevant = events if wanted is None else [e for e in events if e.type in wanted]
        if relevant:
            try:
                await projection.apply(con, relevant)
            except Exception as exc:  # whatever the handler raised, it is reported with its place
                if is_retryable(exc):
                    raise  # the database, not the event: waited out (eventstore.faults)
                raise _Failed(int(row[0]), exc) from exc
        await con.execute(
            "UPDATE eventstore_checkpoints SET position = $2, tx = $3, updated_at = now() WHERE name = $1",
            checkpoint_name(projection),
            events[-1].global_position,
            page.last_tx,
        )
        return len(events)

    async def run_once(self, *names: str, relevant_only: bool = False) -> int:
        """Catch the named projections (all when none are named) up with everything committed now;
        returns the number of events read. Projections with nothing new cost one query in all.

        ``relevant_only``: skip a projection when nothing after its checkpoint is of a type it handles
        (its read model is current: what a reader needs before a decision). Its checkpoint then stays
        behind the irrelevant events until the next full run moves it."""
        if not self._ready:
            await self.setup()
        for name in names:
            self[name]  # an unknown name is an error, not a no-op
        explicit = bool(names)  # a reader asked for these: a stopped one is an error, not skipped
        chosen = list(names) or list(self.projections)
        types = [self[n].event_types if relevant_only else None for n in chosen]
        behind = set(await self.store.checkpoints_behind([checkpoint_name(n) for n in chosen], types))
        names = tuple(n for n in chosen if checkpoint_name(n) in behind)
        total = 0
        for projection_name in names:
            projection = self[projection_name]
            if projection_name in self.stopped:
                if explicit:
                    raise self.stopped[projection_name]
                continue
            while True:
                try:
                    async with self.store.pool.acquire() as con, con.transaction():
                        count = await self._step(con, projection)
                except _Failed as failed:
                    stopped = await self._failed(projection_name, failed)
                    if explicit and stopped is not None:
                        raise stopped from None
                    if explicit:
                        reason = f"{type(failed.error).__name__}: {failed.error}"[:500]
                        raise ProjectionFailed(
                            f"projection {projection_name} cannot apply the events after position"
                            f" {failed.position}: {reason}"
                        ) from None
                    break
                self._failures.pop(projection_name, None)
                total += count
                if count < self.batch_size:
                    break
        return total

    async def _failed(self, name: str, failed: _Failed) -> ProjectionStopped | None:
        """Count a failure to apply; the ``STOP_AFTER``-th in a row at one position stops the projection."""
        reason = f"{type(failed.error).__name__}: {failed.error}"[:500]
        position, count = self._failures.get(name, (failed.position, 0))
        count = count + 1 if position == failed.position else 1
        self._failures[name] = (failed.position, count)
        if count < STOP_AFTER:
            log.warning("projection %s cannot apply the events after position %d (%s); trying again",
                        name, failed.position, reason)
            return None
        stopped = self.stopped[name] = ProjectionStopped(name, failed.position, reason)
        log.error("%s; its read model stays at that position until the cause is fixed", stopped)
        if self.on_stopped is not None:
            try:
                await self.on_stopped(name, failed.position, reason)
            except Exception:  # reporting must not hide the stop itself (logged above)
                log.exception("projection %s: reporting the stop failed", name)
        return stopped

    async def check(self, name: str) -> str | None:
        """Why ``name`` cannot apply its next batch of events (None: it can), in a transaction rolled back."""
        if not self._ready:
            await self.setup()
        projection = self[name]

        class _Undo(Exception):
            pass

        try:
            async with self.store.pool.acquire() as con, con.transaction():
                await self._step(con, projection)
                raise _Undo
        except _Undo:
            return None
        except _Failed as failed:
            return f"cannot apply the events after position {failed.position}: {type(failed.error).__name__}"

    async def run(self, stop: asyncio.Event, *, poll_interval: float = 0.05) -> None:
        """Keep every projection caught up until ``stop`` is set; survives database restarts (every error
        ``eventstore.faults.is_retryable`` counts is waited out; any other ends the loop with it).

        One pass every ``poll_interval``, each catching up with everything committed: under a steady flow
        of events, each pass handles a batch rather than every few events (a reader that needs a read
        model current catches it up itself, see ``run_once``)."""
        delay = poll_interval
        while not stop.is_set():
            try:
                await self.run_once()
                delay = poll_interval
            except Exception as exc:
                if not is_retryable(exc):
                    raise  # a bug: the loop dies, and the service host takes the process down with it
                log.warning("projections: database unavailable (%s); retrying in %.1fs", exc, delay)
                delay = min(delay * 2, 2.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def position(self, name: str) -> int:
        async with self.store.pool.acquire() as con:
            value = await con.fetchval(
                "SELECT position FROM eventstore_checkpoints WHERE name = $1", checkpoint_name(self[name])
            )
        return int(value or 0)

    async def rebuild(self, name: str, *, progress: Callable[[int], None] | None = None) -> int:
        """Truncate the read model, reset the checkpoint and replay the log, all in one transaction."""
        if not self._ready:
            await self.setup()
        projection = self[name]
        total = 0
        async with self.store.pool.acquire() as con, con.transaction():
            await _lock_checkpoint(con, checkpoint_name(projection))
            if projection.tables:
                await con.execute("TRUNCATE " + ", ".join(projection.tables))
            await con.execute(
                "UPDATE eventstore_checkpoints SET position = 0, tx = 0, updated_at = now() WHERE name = $1",
                checkpoint_name(projection),
            )
            while True:
                try:
                    count = await self._step(con, projection)
                except _Failed as failed:
                    reason = f"{type(failed.error).__name__}: {failed.error}"[:500]
                    raise ProjectionStopped(name, failed.position, reason) from None
                total += count
                if progress is not None and count:
                    progress(count)
                if count < self.batch_size:
                    break
        return total
