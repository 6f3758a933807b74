from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventstore import EventStore


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[EventStore]:
    s = await EventStore.connect(pg_dsn)
    yield s
    await s.close()
