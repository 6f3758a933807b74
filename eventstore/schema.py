"""The event store's schema, applied idempotently under an advisory lock by ``EventStore.connect``.

Each migration runs once, in order, in its own transaction; ``eventstore_migrations`` records which ran.
The statements are idempotent too, so a half-dropped schema (an operator's manual cleanup) heals.
"""

from __future__ import annotations

import asyncpg

# An arbitrary constant: the advisory lock that serializes schema changes by concurrent connects.
MIGRATION_LOCK_KEY = 0x0B_E11_5C4E


MIGRATIONS: tuple[str, ...] = (
    # 1: the append-only events table.
    """
    CREATE TABLE IF NOT EXISTS events (
        -- Unique and increasing per append, with gaps (rolled-back sequence values) and not in commit
        -- order: readers order by (tx_id, global_position) and only read below the oldest running
        -- transaction, so a late commit is never skipped (see store.read_all).
        global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tx_id           xid8 NOT NULL DEFAULT pg_current_xact_id(),
        stream_id       text NOT NULL,
        stream_version  bigint NOT NULL,
        event_id        uuid NOT NULL,
        event_type      text NOT NULL,
        data            jsonb NOT NULL,
        metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
        recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
        CONSTRAINT events_event_id_key UNIQUE (event_id),
        CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
        CONSTRAINT events_stream_id_check CHECK (stream_id <> ''),
        CONSTRAINT events_stream_version_check CHECK (stream_version >= 0)
    );
    CREATE INDEX IF NOT EXISTS events_commit_order ON events (tx_id, global_position);

    -- Append-only, enforced by the database for every role and every client.
    CREATE OR REPLACE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the events table is append-only: % is not allowed', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END $$;
    CREATE OR REPLACE TRIGGER events_no_update_or_delete BEFORE UPDATE OR DELETE ON events
        FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
    CREATE OR REPLACE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
        FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

    -- Checkpoints of the relay and of every projection (position of the last event handled).
    CREATE TABLE IF NOT EXISTS eventstore_checkpoints (
        name        text PRIMARY KEY,
        position    bigint NOT NULL,
        updated_at  timestamptz NOT NULL DEFAULT now()
    );
    """,
    # 2: a checkpoint also records the transaction id of its event, so a reader resumes without a lookup,
    # and "is there anything new for these readers?" is one query.
    """
    ALTER TABLE eventstore_checkpoints ADD COLUMN IF NOT EXISTS tx bigint NOT NULL DEFAULT 0;
    UPDATE eventstore_checkpoints c SET tx = e.tx_id::text::bigint
        FROM events e WHERE e.global_position = c.position;
    """,
)


async def may_change_schema(con: asyncpg.Connection) -> bool:
    """Whether this connection's role may create in its schema: the owner may; a service role (least
    privilege, see README "Security") may not, and leaves the schema to the owner's migrations."""
    return bool(await con.fetchval("SELECT has_schema_privilege(current_schema(), 'CREATE')"))


async def schema_version(con: asyncpg.Connection) -> int:
    if await con.fetchval("SELECT to_regclass('eventstore_migrations')") is None:
        return 0
    return int(await con.fetchval("SELECT coalesce(max(version), 0) FROM eventstore_migrations"))


async def migrate(con: asyncpg.Connection) -> int:
    """Apply the migrations not yet applied; returns the schema version. Safe under concurrent callers.
    A role that may not change the schema only checks that the owner's migrations are all applied."""
    if not await may_change_schema(con):
        version = await schema_version(con)
        if version < len(MIGRATIONS):
            raise PermissionError(
                f"the event store schema is at version {version} of {len(MIGRATIONS)} and this database role"
                " may not migrate it: run openbell once with the owner's URL (OPENBELL_DATABASE_OWNER_URL)")
        return version
    await con.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await con.execute(
            "CREATE TABLE IF NOT EXISTS eventstore_migrations ("
            " version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = await con.fetchval("SELECT coalesce(max(version), 0) FROM eventstore_migrations")
        for version, sql in enumerate(MIGRATIONS, start=1):
            if version <= applied:
                continue
            async with con.transaction():
                await con.execute(sql)
                await con.execute("INSERT INTO eventstore_migrations (version) VALUES ($1)", version)
        return len(MIGRATIONS)
    finally:
        await con.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
