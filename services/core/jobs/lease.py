"""Job run leases: which worker runs a tick right now, visible to every worker (a PostgreSQL table).

A worker takes a tick's lease before it looks at (and starts or takes over) the tick's run, renews it
every third of its length while the run goes on, and lets it go when the run ends. A lease whose worker
stopped renewing it (killed, frozen, cut off) runs out after ``lease`` seconds by the database's own
clock (no clock skew between workers); the next delivery of the tick then takes the run over at once.
While a live worker holds it, any other delivery of the same tick waits (the run may still complete:
its tick is never dead-lettered meanwhile).

The lease is not the ledger: who may record what is still decided by the run's stream versions
(``jobrun-<tick>``), so a worker that comes back from a freeze after its run was taken over finds its
appends refused, whatever the lease said when it froze.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg

from eventstore import EventStore
from eventstore.faults import is_retryable
from eventstore.schema import may_change_schema

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS job_run_leases (
    tick_id text PRIMARY KEY,
    worker text NOT NULL,
    expires_at timestamptz NOT NULL
)
"""
# Any constant: serialises the table's creation by workers starting together. With least privilege the
# owner's migrations create it (services/core/dbroles.py) and a service role only uses it.
_SCHEMA_LOCK_KEY = 0x0B5E11_0002

# Taken when free (no row, or run out) or already ours; true when we hold it now.
_ACQUIRE = """
INSERT INTO job_run_leases AS l (tick_id, worker, expires_at) VALUES ($1, $2, now() + $3::interval)
ON CONFLICT (tick_id) DO UPDATE SET worker = EXCLUDED.worker, expires_at = EXCLUDED.expires_at
WHERE l.expires_at <= now() OR l.worker = EXCLUDED.worker
RETURNING true
"""
_RENEW = "UPDATE job_run_leases SET expires_at = now() + $3::interval WHERE tick_id = $1 AND worker = $2"
_RELEASE = "DELETE FROM job_run_leases WHERE tick_id = $1 AND worker = $2"


async def create_lease_table(con: asyncpg.Connection) -> None:
    """Create the leases table when this connection's role may (the owner); a service role leaves it to the
    owner's migrations."""
    if not await may_change_schema(con):
        return
    async with con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK_KEY)
        await con.execute(_SCHEMA)


class RunLeases:
    def __init__(self, store: EventStore, worker: str, lease: timedelta) -> None:
        if lease <= timedelta(0):
            raise ValueError("lease must be positive")
        self.store = store
        self.worker = worker
        self.lease = lease
        self._ready = False

    async def _ensure_table(self) -> None:
        if self._ready:
            return
        async with self.store.pool.acquire() as con:
            await create_lease_table(con)
        self._ready = True

    async def acquire(self, tick_id: str) -> bool:
        """Take (or keep) the tick's lease; False while another worker's lease on it is alive."""
        await self._ensure_table()
        async with self.store.pool.acquire() as con:
            return bool(await con.fetchval(_ACQUIRE, tick_id, self.worker, self.lease))

    async def renew(self, tick_id: str) -> bool:
        """Extend our lease; False when it is no longer ours (another worker took the run over)."""
        async with self.store.pool.acquire() as con:
            return (await con.execute(_RENEW, tick_id, self.worker, self.lease)) != "UPDATE 0"

    async def release(self, tick_id: str) -> None:
        """Let the lease go (the run ended, or was left for a later delivery to take over at once). A
        release that fails leaves the lease to run out."""
        try:
            async with self.store.pool.acquire() as con:
                await con.execute(_RELEASE, tick_id, self.worker)
        except Exception as exc:
            if not is_retryable(exc):
                raise
            log.debug("lease on %s not released (%s); it runs out by itself", tick_id, exc)

    async def keep(self, tick_id: str) -> None:
        """Renew the lease every third of its length until cancelled; a server error only skips a beat."""
        interval = self.lease.total_seconds() / 3
        lost = False
        while True:
            await asyncio.sleep(interval)
            try:
                ours = await self.renew(tick_id)
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                log.debug("lease on %s not renewed (%s); trying again", tick_id, exc)
                continue
            if not ours and not lost:
                lost = True
                log.warning("%s: lease lost (this worker was frozen or cut off); another worker took the run over",
                            tick_id)

    @contextlib.asynccontextmanager
    async def kept(self, tick_id: str) -> AsyncIterator[None]:
        """Renew the (acquired) lease while the block runs; release it afterwards."""
        beat = asyncio.create_task(self.keep(tick_id), name=f"lease {tick_id}")
        try:
            yield
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            await self.release(tick_id)
