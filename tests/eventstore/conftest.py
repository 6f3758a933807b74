from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from eventstore import EventStore
from services.core.embedded import EmbeddedPostgres


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[EventStore]:
    s = await EventStore.connect(pg_dsn, max_size=20)
    yield s
    await s.close()


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, so the test may kill and restart it."""
    server = EmbeddedPostgres(tmp_path / "pg").start(reuse=False)
    yield server
    server.stop(mode="immediate")
