"""The service host on real NATS and PostgreSQL: a service whose setup fails stops what was started."""

from __future__ import annotations

import pytest

from services.core import host
from tests.jobs import broken_service
from tests.positions.helpers import settings_for


async def test_a_failing_setup_stops_what_was_started(
    pg_dsn: str, nats_url: str, subject_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(host.SERVICES, "broken", "tests.jobs.broken_service")
    broken_service.stopped.clear()
    with pytest.raises(RuntimeError, match="setup failed"):
        async with host.hosted(["relay", "orders", "broken"], settings_for(pg_dsn, nats_url, subject_prefix)):
            pytest.fail("the host must not run with a service that failed to set up")
    assert broken_service.stopped == ["loop"]
