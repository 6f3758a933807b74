"""PostgreSQL least privilege: the owner role runs the migrations, the services connect as a role that may
only read and append the event log and write the read models and checkpoints.

The service role owns nothing, is no superuser and cannot create in the schema: it cannot ``ALTER TABLE
events DISABLE TRIGGER``, ``SET session_replication_role``, ``COPY ... FROM PROGRAM``, nor UPDATE, DELETE
or TRUNCATE an event (refused by privileges, and by the append-only triggers behind them).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

import asyncpg

from eventstore.projections import Projection
from eventstore.schema import migrate


def role_of(dsn: str) -> str | None:
    """The user name in a DSN (None when the DSN names none)."""
    user = urlsplit(dsn).username
    return unquote(user) if user else None


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


async def ensure_roles(
    superuser_dsn: str, database: str, database_dsn: str, passwords: dict[str, str], owner: str, service: str
) -> None:
    """(Embedded server.) Create the owner and service roles with their generated passwords and the
    database owned by the owner; a database made before the roles existed is handed to the owner."""
    con = await asyncpg.connect(superuser_dsn)
    try:
        for role in (owner, service):
            exists = await con.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            verb = "ALTER" if exists else "CREATE"
            password = passwords[role].replace("'", "''")
            with_options = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT"
            await con.execute(f"{verb} ROLE {_quote(role)} WITH {with_options} PASSWORD '{password}'")
        current_owner = await con.fetchval(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", database)
        if current_owner is None:
            try:
                await con.execute(f"CREATE DATABASE {_quote(database)} OWNER {_quote(owner)}")
            except asyncpg.DuplicateDatabaseError:
                pass  # created by a process starting at the same time
            return
        if current_owner != owner:
            await con.execute(f"ALTER DATABASE {_quote(database)} OWNER TO {_quote(owner)}")
    finally:
        await con.close()
    if current_owner != owner:
        await _hand_over_objects(database_dsn, owner)


async def _hand_over_objects(dsn: str, owner: str) -> None:
    """Objects created by the superuser before the owner role existed become the owner's."""
    con = await asyncpg.connect(dsn)
    try:
        await con.execute(
            """
            DO $$
            DECLARE r record;
            BEGIN
                FOR r IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm') LOOP
                    EXECUTE format('ALTER TABLE %I OWNER TO %I', r.relname, $owner$""" + owner + """$owner$);
                END LOOP;
                FOR r IN SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                         WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd') LOOP
                    EXECUTE format('ALTER TYPE %I OWNER TO %I', r.typname, $owner$""" + owner + """$owner$);
                END LOOP;
                FOR r IN SELECT p.oid::regprocedure AS sig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                         WHERE n.nspname = 'public' LOOP
                    EXECUTE format('ALTER FUNCTION %s OWNER TO %I', r.sig, $owner$""" + owner + """$owner$);
                END LOOP;
            END $$;
            """
        )
    finally:
        await con.close()


async def migrate_and_grant(owner_dsn: str, service: str | None, projections: Sequence[Projection] = ()) -> None:
    """Run every migration as the owner (event store, the read models of ``projections``, simulator
    tables), then give the service role what it needs and nothing more. ``service`` None or the owner
    itself: no grants."""
    from services.broker.simulator.storage import SCHEMA as SIM_SCHEMA
    from services.broker.simulator.storage import SCHEMA_LOCK_KEY
    from services.core.jobs.lease import create_lease_table

    con = await asyncpg.connect(owner_dsn)
    try:
        await migrate(con)
        await create_lease_table(con)
        for projection in projections:
            async with con.transaction():
                await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"projection:{projection.name}")
                await projection.setup(con)
        async with con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
            await con.execute(SIM_SCHEMA)
        owner = await con.fetchval("SELECT current_user")
        if service is None or service == owner:
            return
        role = _quote(service)
        database = _quote(await con.fetchval("SELECT current_database()"))
        await con.execute(
            f"""
            GRANT CONNECT ON DATABASE {database} TO {role};
            GRANT USAGE ON SCHEMA public TO {role};
            GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO {role};
            GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role};
            -- The log: read and append only. The schema's history: read only.
            REVOKE UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES ON events FROM {role};
            REVOKE INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES ON eventstore_migrations FROM {role};
            """
        )
    finally:
        await con.close()
