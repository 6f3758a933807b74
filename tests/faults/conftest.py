from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from services.core.embedded import EmbeddedPostgres


@pytest.fixture
async def second_pg_dsn(pg_admin_dsn: str) -> AsyncIterator[str]:
    """Another fresh database, for comparing two independent runs."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    base, _, query = pg_admin_dsn.partition("?")
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await admin.close()
    yield f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, so the test may kill it and start it again on the same data."""
    server = EmbeddedPostgres(tmp_path / "pg").start(reuse=False)
    yield server
    server.stop(mode="immediate")
