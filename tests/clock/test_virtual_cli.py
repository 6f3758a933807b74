"""``openbell serve ... --virtual`` with a virtual clock, from fresh processes against the test's servers:
the clock runs every slot of the days asked for, exits, and a second clock resumes from the ledger."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient
from typer.testing import CliRunner

from services.cli import app
from services.clock import schedule
from services.clock.virtual import virtual_span


async def openbell(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *args, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    return proc.returncode or 0, out.decode(), err.decode()


def test_virtual_span_covers_whole_sessions() -> None:
    # Saturday: the span starts on Monday's session, and two days end after Tuesday's close.
    start, end = virtual_span(date(2026, 10, 31), 2)
    assert start == datetime(2026, 11, 2, 14, 29, tzinfo=UTC)
    assert end == datetime(2026, 11, 3, 21, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="--days"):
        virtual_span(date(2026, 11, 2), 0)


def test_bad_virtual_options_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENBELL_DATA_DIR", str(tmp_path))
    for args, message in (
        (["serve", "clock", "--from", "2026-11-02"], "--from needs --virtual"),
        (["serve", "clock", "--virtual"], "needs --from"),
        (["serve", "strategy", "--virtual", "--from", "2026-11-02"], "add the clock service"),
        (["serve", "clock", "--virtual", "--from", "2 Nov"], "invalid --from '2 Nov'"),
        (["serve", "clock", "--virtual", "--from", "2026-11-02", "--days", "0"], "--days must be at least 1"),
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "nats").exists(), "refused before any server starts"


async def test_virtual_day_then_resume(pg_dsn: str, nats_url: str, nc: NatsClient, subject_prefix: str) -> None:
    env = {"OPENBELL_DATABASE_URL": pg_dsn, "OPENBELL_NATS_URL": nats_url, "OPENBELL_SUBJECT_PREFIX": subject_prefix,
           "OPENBELL_LOG_LEVEL": "WARNING", "COLUMNS": "300"}
    # The day after Thanksgiving closes at 13:00 New York: a short session keeps the test short.
    args = ("serve", "all", "--virtual", "--from", "2026-11-27", "--days", "1", "--tick-timeout", "60")
    slots = schedule.all_slots_between(*virtual_span(date(2026, 11, 27), 1))
    instants = len({s.scheduled_at for s in slots})
    code, out, err = await openbell(*args, env=env)
    assert code == 0, err[-2000:]
    assert f"{instants} instants (0 already run), {len(slots)} ticks" in out, out
    assert f"{{'completed': {len(slots)}}}" in out, out
    # A second clock finds every instant recorded: it publishes nothing and ends at once.
    code, out, err = await openbell(*args, env=env)
    assert code == 0, err[-2000:]
    assert f"{instants} instants ({instants} already run), {len(slots)} ticks" in out, out
