"""The embedded servers' secrets and files: generated credentials readable by their owner only, password
authentication for every PostgreSQL connection, and no parent directory opened up beyond traversal."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from services.core.embedded import EmbeddedNats, EmbeddedPostgres


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_embedded_postgres_requires_passwords_and_keeps_parents_closed(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    outer.mkdir(mode=0o700)
    outer.chmod(0o700)
    server = EmbeddedPostgres(outer / "pg").start(reuse=False)
    try:
        rules = [line.split() for line in (server.pgdata / "pg_hba.conf").read_text().splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
        assert rules and all(rule[-1] == "scram-sha-256" for rule in rules), rules
        assert _mode(server.credentials_file) == 0o600
        assert not list((outer / "pg").glob(".initdb-password*"))  # initdb's password file is gone
    finally:
        server.stop()
    # As root PostgreSQL runs as another user: it may traverse the parent, never list or read it.
    assert _mode(outer) == (0o701 if os.geteuid() == 0 else 0o700)


def test_embedded_nats_keeps_its_credentials_and_config_to_its_owner(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats").start(reuse=False)
    try:
        assert _mode(tmp_path / "nats") == 0o700
        for name in ("credentials.json", "nats-server.conf", "nats.json"):
            assert _mode(tmp_path / "nats" / name) == 0o600, name
        config = (tmp_path / "nats" / "nats-server.conf").read_text()
        assert "authorization {" in config and server.password("feed") in config
    finally:
        server.stop()
