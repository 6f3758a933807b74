"""The positions and alerts commands from a fresh process, against the test's servers."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nats.aio.client import Client as NatsClient

from services.core.jobs.types import JobType
from services.model.vocabulary import Side
from services.positions.books import load_book
from services.stack import hosted
from tests.positions.helpers import append_fill, fill, open_portfolio, run_tick, settings_for, sim_factory
from tests.waiting import until

OPENBELL = str(Path(sys.executable).parent / "openbell")
T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


async def openbell(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        OPENBELL, *args, env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_commands(pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient, tmp_path: Path) -> None:
    env = {"OPENBELL_DATABASE_URL": pg_dsn, "OPENBELL_NATS_URL": nats_url, "OPENBELL_SUBJECT_PREFIX": subject_prefix,
           "OPENBELL_LOG_LEVEL": "WARNING", "COLUMNS": "200"}
    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    async with hosted(["relay", "projections", "positions"], settings, broker_factory=sim_factory(pg_dsn)) as ctx:
        store = ctx.rt.store
        await open_portfolio(store, "p1", "10000", T0)
        await append_fill(store, fill("p1", "o1", "AAPL", Side.BUY, "10", "10", "100", T0, final=True))

        async def booked() -> bool:
            book, _ = await load_book(store, "p1")
            return book is not None and book.position("AAPL").qty == 10

        await until(booked, what="the fill booked into p1")
        for day in range(2):
            at = T0 + timedelta(days=day)
            await run_tick(ctx, JobType.PRICE_UPDATE, at.replace(hour=21))
            await run_tick(ctx, JobType.PORTFOLIO_SNAPSHOT, at.replace(hour=21, minute=5))

        # tail: started before a feed message, prints it, stops after --count.
        tail = asyncio.create_task(openbell("tail", "--count", "1", env=env))
        # Core NATS keeps nothing for a subscriber that is not there yet: publish until the tail has one.
        async def tail_ended() -> bool:
            await nc.publish(f"{subject_prefix}.feed.price.AAPL",
                             b'{"kind": "price", "symbol": "AAPL", "price": "1.5"}')
            await nc.flush()
            await asyncio.wait({tail}, timeout=0.2)
            return tail.done()

        await until(tail_ended, 60, "openbell tail to print a feed message and end", interval=0)
        code, out, err = await tail
        assert code == 0, err
        assert f"{subject_prefix}.feed.price.AAPL  symbol=AAPL  price=1.5" in out

    code, out, err = await openbell("positions", "--portfolio", "p1", env=env)
    assert code == 0, err
    assert "AAPL" in out and "10" in out and "10,000.00" not in out  # cash moved: 9,000.00
    assert "9,000.00" in out
    code, out, err = await openbell("positions", "--json", env=env)
    assert code == 0 and json.loads(out)[0]["qty"] == "10"

    plot = tmp_path / "equity.png"
    code, out, err = await openbell("snapshots", "--plot", str(plot), env=env)
    assert code == 0, err
    assert "2026-11-24" in out and "2026-11-25" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = await openbell("snapshots", "--plot", str(tmp_path / "x.txt"), env=env)
    assert code == 1 and err.strip() == f"error: --plot needs a .png file name, got '{tmp_path / 'x.txt'}'"

    code, out, err = await openbell("discrepancies", env=env)
    assert code == 0 and "no position discrepancies" in out

    # No alerts service running: the CLI applies the same validation and appends itself.
    code, _, err = await openbell("alerts", "create", "aapl", "above", "3", env=env)
    assert code == 1 and err.startswith("error: invalid alert: symbol:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = await openbell("alerts", "create", "--id", "drop", "AAPL", "percent_change", "--", "-5",
                                    env=env)
    assert code == 0, err
    assert "alert drop: AAPL percent_change -5 (reference " in out  # the latest observed price
    code, out, err = await openbell("alerts", "list", "--json", env=env)
    assert code == 0 and [a["alert_id"] for a in json.loads(out)] == ["drop"]
    code, out, err = await openbell("alerts", "remove", "drop", env=env)
    assert code == 0 and "removed" in out
    code, _, err = await openbell("alerts", "remove", "nope", env=env)
    assert code == 1 and err.strip() == "error: no alert 'nope'"
    code, out, err = await openbell("notifications", "--limit", "5", env=env)
    assert code == 0, err
