"""Shared fixtures: one embedded PostgreSQL and one embedded nats-server per test run (or the servers named
by ``OPENBELL_TEST_DATABASE_URL`` / ``OPENBELL_TEST_NATS_URL``), a fresh database and a fresh subject
prefix per test, so tests can run in any order and in parallel.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import nats
import pytest
from nats.aio.client import Client as NatsClient

from services.core import eventloop, nats_auth
from services.core.embedded import EmbeddedNats, EmbeddedPostgres


class CredentialedNats(EmbeddedNats):
    """A test's nats-server whose ``url`` carries the admin's credentials, so that tests (and the services
    they start with ``OPENBELL_NATS_URL``) connect as before. Its users' permissions are those of
    production for any subject prefix (``*``): each test has a prefix of its own. tests/security checks
    the roles themselves on servers configured for one prefix."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, prefix=nats_auth.ANY_PREFIX)

    @property
    def url(self) -> str:
        return self.admin_url


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
    """Every test runs on the event loop the services run on (uvloop where available)."""
    return {eventloop.name(): eventloop.new_loop}


@pytest.fixture(scope="session")
def servers_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="openbell-test-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="session")
def pg_admin_dsn(servers_dir: Path) -> Iterator[str]:
    """DSN of a database we may CREATE DATABASE from (the server is shared by the whole run)."""
    if url := os.environ.get("OPENBELL_TEST_DATABASE_URL"):
        yield url
        return
    # A scratch server shared by every test, never crashed: durability is tested on private servers
    # (tests/eventstore, with the defaults), so this one skips the WAL flushes.
    scratch = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
    server = EmbeddedPostgres(servers_dir / "pg", extra_settings=scratch).start(reuse=False)
    yield server.dsn()
    server.stop()


@pytest.fixture(scope="session")
def nats_url(servers_dir: Path) -> Iterator[str]:
    if url := os.environ.get("OPENBELL_TEST_NATS_URL"):
        yield url
        return
    server = CredentialedNats(servers_dir / "nats").start(reuse=False)
    yield server.url
    server.stop()


def _with_database(dsn: str, database: str) -> str:
    base, _, query = dsn.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{database}" + (f"?{query}" if query else "")


@pytest.fixture
async def pg_dsn(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A fresh, empty database for this test; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await admin.close()
    yield _with_database(pg_admin_dsn, name)
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def subject_prefix() -> str:
    """A subject prefix (and so stream names) no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def nc(nats_url: str, subject_prefix: str) -> AsyncIterator[NatsClient]:
    """A NATS connection; streams created under this test's prefix are deleted afterwards."""
    client = await nats.connect(nats_url, name=f"test-{subject_prefix}")
    yield client
    js = client.jetstream()
    upper = subject_prefix.upper()
    for info in await js.streams_info():
        if info.config.name and info.config.name.startswith(upper):
            await js.delete_stream(info.config.name)
    await client.close()


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A nats-server of this test's own (JetStream on disk), so the test may kill and restart it."""
    server = CredentialedNats(tmp_path / "nats").start(reuse=False)
    yield server
    server.stop()
