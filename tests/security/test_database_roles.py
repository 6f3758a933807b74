"""PostgreSQL least privilege, against the real server: the owner role migrates, a service role appends and
reads the log and writes read models, and nothing it can send removes or rewrites an event."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest

from eventstore import EventStore, NewEvent
from eventstore.projections import ProjectionRunner
from services.core.dbroles import ensure_roles, migrate_and_grant
from services.stack import all_projections


def _dsn_as(dsn: str, user: str, password: str | None, database: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    userinfo = quote(user, safe="") + (f":{quote(password, safe='')}" if password is not None else "")
    return urlunsplit((parts.scheme, f"{userinfo}@{host}", f"/{database}", parts.query, ""))


@dataclass
class Roles:
    owner_dsn: str
    service_dsn: str
    service: str
    database: str
    admin_dsn: str


@pytest.fixture
async def roles(pg_admin_dsn: str) -> AsyncIterator[Roles]:
    """A database owned by a fresh owner role, migrated by it, and a fresh service role (roles are
    cluster-wide: named per test, dropped afterwards)."""
    tag = uuid.uuid4().hex[:10]
    owner, service, database = f"owner_{tag}", f"service_{tag}", f"t_sec_{tag}"
    passwords = {owner: uuid.uuid4().hex, service: uuid.uuid4().hex}
    await ensure_roles(pg_admin_dsn, database, _dsn_as(pg_admin_dsn, "postgres", None, database),
                       passwords, owner, service)
    owner_dsn = _dsn_as(pg_admin_dsn, owner, passwords[owner], database)
    await migrate_and_grant(owner_dsn, service)
    yield Roles(owner_dsn, _dsn_as(pg_admin_dsn, service, passwords[service], database), service, database,
                pg_admin_dsn)
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{service}"')
        await admin.execute(f'DROP ROLE IF EXISTS "{owner}"')
    finally:
        await admin.close()


ATTACKS = {
    "delete": "DELETE FROM events",
    "update": "UPDATE events SET data = '{}'::jsonb",
    "truncate": "TRUNCATE events",
    "disable trigger": "ALTER TABLE events DISABLE TRIGGER ALL",
    "replica role": "SET session_replication_role = replica",
    "copy from program": "COPY eventstore_checkpoints (name, position) FROM PROGRAM 'echo x,1'",
    "copy to program": "COPY (SELECT 1) TO PROGRAM 'true'",
    "drop": "DROP TABLE events",
    "new trigger": "CREATE TRIGGER t BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION events_refuse_change()",
    "create table": "CREATE TABLE elsewhere (x int)",
    "rewrite migrations": "DELETE FROM eventstore_migrations",
    "become owner": "SET ROLE postgres",
}


async def test_a_service_connection_appends_and_reads_but_cannot_remove_or_rewrite_an_event(roles: Roles) -> None:
    store = await EventStore.connect(roles.service_dsn, max_size=2)
    try:
        event = NewEvent(type="SecurityProbe", data={"n": 1}, event_id=uuid.uuid4())
        await store.append("probe-1", [event])
        assert await store.count() == 1
        con = await asyncpg.connect(roles.service_dsn)
        try:
            assert await con.fetchval("SELECT current_user") == roles.service
            refused = {}
            for name, statement in ATTACKS.items():
                with pytest.raises(asyncpg.PostgresError) as caught:
                    await con.execute(statement)
                refused[name] = caught.value.sqlstate
            # 42501: insufficient privilege, every one of them.
            assert set(refused.values()) <= {"42501"}, refused
        finally:
            await con.close()
        assert await store.count() == 1
        recorded = [e async for e in store.read_all()]
        assert [(e.stream_id, json.loads(e.data)) for e in recorded] == [("probe-1", {"n": 1})]
        # The triggers are still there (and enabled), as the owner sees them.
        owner = await asyncpg.connect(roles.owner_dsn)
        try:
            enabled = await owner.fetch("SELECT tgname FROM pg_trigger WHERE tgrelid = 'events'::regclass"
                                        " AND NOT tgisinternal AND tgenabled = 'O' ORDER BY tgname")
            assert [r["tgname"] for r in enabled] == ["events_no_truncate", "events_no_update_or_delete"]
        finally:
            await owner.close()
    finally:
        await store.close()


async def test_a_service_connection_writes_its_read_models_and_checkpoints(roles: Roles) -> None:
    store = await EventStore.connect(roles.service_dsn, max_size=2)
    try:
        runner = ProjectionRunner(store, all_projections())
        await runner.setup()  # finds the owner's tables, creates nothing
        await store.append("probe-2", [NewEvent(type="SecurityProbe", data={"n": 2}, event_id=uuid.uuid4())])
        await runner.run_once()
        async with store.pool.acquire() as con:
            positions = await con.fetch("SELECT name, position FROM eventstore_checkpoints")
        assert positions and all(row["position"] >= 1 for row in positions if row["name"].startswith("projection:"))
    finally:
        await store.close()


async def test_a_connection_without_the_password_is_refused(roles: Roles) -> None:
    for dsn in (_dsn_as(roles.admin_dsn, roles.service, None, roles.database),
                _dsn_as(roles.admin_dsn, roles.service, "wrong", roles.database),
                _dsn_as(roles.admin_dsn, "postgres", None, roles.database)):
        with pytest.raises((asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)):
            await asyncpg.connect(dsn)
