"""``openbell demo`` is repeatable byte for byte: two runs with the same seed, each on a database and a
subject prefix of its own, give identical orders, fills and snapshots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import asyncpg

from tests.conftest import _with_database

# Event data of fills as stored (jsonb, so key order is the database's: the same in both runs).
FILLS = """
SELECT stream_id, stream_version, event_type, data::text FROM events
WHERE event_type IN ('OrderFilled', 'OrderPartiallyFilled') ORDER BY stream_id, stream_version
"""
ORDERS = """
SELECT client_order_id, portfolio_id, symbol, side, order_type, qty, limit_price, status, filled_qty,
       avg_fill_price, filled_notional, tick_id, requested_at, submitted_at, filled_at, closed_at
FROM trades ORDER BY client_order_id
"""
SNAPSHOTS = "SELECT * FROM portfolio_snapshots ORDER BY portfolio_id, trading_day"


def run_demo(dsn: str, nats_url: str, prefix: str) -> None:
    env = {**os.environ, "OPENBELL_DATABASE_URL": dsn, "OPENBELL_NATS_URL": nats_url,
           "OPENBELL_SUBJECT_PREFIX": prefix, "OPENBELL_LOG_LEVEL": "WARNING"}
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", "--days", "1", "--portfolios", "4", "--seed", "7"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]


async def outcome(dsn: str) -> dict[str, list[str]]:
    con = await asyncpg.connect(dsn)
    try:
        return {
            name: [json.dumps([str(v) for v in row.values()]) for row in await con.fetch(sql)]
            for name, sql in (("orders", ORDERS), ("fills", FILLS), ("snapshots", SNAPSHOTS))
        }
    finally:
        await con.close()


async def test_two_demo_runs_with_one_seed_are_identical(
    pg_admin_dsn: str, pg_dsn: str, nats_url: str, subject_prefix: str, nc: object
) -> None:
    second_db = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    await admin.execute(f'CREATE DATABASE "{second_db}" TEMPLATE template0')
    second_prefix = f"{subject_prefix}b"  # its streams start with the first's: the nc fixture deletes both
    try:
        run_demo(pg_dsn, nats_url, subject_prefix)
        second_dsn = _with_database(pg_admin_dsn, second_db)
        run_demo(second_dsn, nats_url, second_prefix)
        first, second = await outcome(pg_dsn), await outcome(second_dsn)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{second_db}" WITH (FORCE)')
        await admin.close()
    assert first["orders"] and first["fills"] and first["snapshots"]
    for part in ("orders", "fills", "snapshots"):
        differing = sorted(set(first[part]) ^ set(second[part]))
        assert first[part] == second[part], f"{part} differ between two runs of seed 7: {differing[:2]}"
