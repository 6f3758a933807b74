"""The commands from a fresh process, against the test's servers (OPENBELL_* environment)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NatsClient

from eventstore import EventStore
from services.core.jobs.runner import JobContext, JobRunner
from services.core.jobs.types import JobType, Tick, TickReason, decode_tick
from services.core.subjects import Subjects

OPENBELL = str(Path(sys.executable).parent / "openbell")


async def openbell(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        OPENBELL, *args, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_schedule_without_servers(tmp_path: Path) -> None:
    env = {"OPENBELL_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    code, out, _ = await openbell("schedule", "--date", "2026-11-02", "--json", env=env)
    assert code == 0
    data = json.loads(out)
    assert data["trading_day"] and data["open"] == "2026-11-02T09:30:00-05:00"
    assert data["slots"][0]["utc"] == "2026-11-02T14:30:00Z"
    assert len(data["slots"]) == 26 + 391 + 79 + 79 + 78 + 1
    code, out, _ = await openbell("schedule", "--date", "2026-12-24", env=env)
    assert code == 0 and "early close" in out and "13:05:00" in out and "18:05:00" in out
    assert not (tmp_path / "nats").exists(), "schedule needs no server"


async def test_server_commands(pg_dsn: str, nats_url: str, nc: NatsClient, subject_prefix: str) -> None:
    env = {"OPENBELL_DATABASE_URL": pg_dsn, "OPENBELL_NATS_URL": nats_url,
           "OPENBELL_SUBJECT_PREFIX": subject_prefix, "OPENBELL_LOG_LEVEL": "WARNING", "COLUMNS": "200"}
    code, _, err = await openbell("tick", "no_such_job", env=env)
    assert code == 1 and err.strip().startswith("error: unknown job type 'no_such_job'")
    assert "Traceback" not in err

    code, out, err = await openbell("tick", "price_update", env=env)
    assert code == 0, err
    subjects = Subjects(subject_prefix)
    msg = await nc.jetstream().get_last_msg(subjects.ticks_stream, subjects.tick("price_update"))
    tick = decode_tick(msg.data or b"")
    assert tick.reason is TickReason.MANUAL and tick.tick_id in out

    # some runs in the ledger
    store = await EventStore.connect(pg_dsn)
    runner = JobRunner(store)

    async def fails(ctx: JobContext) -> dict[str, int]:
        raise RuntimeError("quote feed down")

    async def works(ctx: JobContext) -> dict[str, int]:
        return {"symbols_updated": 7}

    await runner.run(tick, works)
    t2 = Tick.for_slot(JobType.PRICE_UPDATE, tick.scheduled_at.replace(second=0, minute=0), emitted_at=tick.emitted_at,
                       reason=TickReason.SCHEDULED)
    await runner.run(t2, fails)
    await store.close()

    code, out, err = await openbell("jobs", "disable", "strategy_execution", "--reason", "maintenance", env=env)
    assert code == 0 and "disabled" in out, err
    code, out, err = await openbell("jobs", "--json", env=env)
    assert code == 0, err
    stats: dict[str, dict[str, Any]] = {r["job_type"]: r for r in json.loads(out)}
    assert set(stats) == {j.value for j in JobType}
    assert stats["strategy_execution"]["status"] == "disabled"
    assert stats["price_update"]["total_runs"] == 2 and stats["price_update"]["total_failures"] == 1
    code, out, _ = await openbell("jobs", env=env)
    assert code == 0 and "price_update" in out and "disabled" in out

    code, out, err = await openbell("history", "--job", "price_update", "--failed", "--json", env=env)
    assert code == 0, err
    rows = json.loads(out)
    assert [r["tick_id"] for r in rows] == [t2.tick_id] and "quote feed down" in rows[0]["error"]
    code, out, _ = await openbell("history", "--limit", "1", env=env)
    assert code == 0 and out.count("price_update@") == 1
    code, out, err = await openbell("jobs", "enable", "strategy_execution", env=env)
    assert code == 0 and "enabled" in out, err
