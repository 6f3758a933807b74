"""``openbell demo`` as a user runs it (a subprocess), on the test's servers: it trades, summarizes, and
refuses to mix a second run into the first's data."""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg


def run_cli(args: list[str], pg_dsn: str, nats_url: str, prefix: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OPENBELL_DATABASE_URL": pg_dsn,
        "OPENBELL_NATS_URL": nats_url,
        "OPENBELL_SUBJECT_PREFIX": prefix,
        "OPENBELL_LOG_LEVEL": "WARNING",
        "COLUMNS": "160",
    }
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


async def test_demo_runs_and_summarizes(pg_dsn: str, nats_url: str, subject_prefix: str, nc: object) -> None:
    result = run_cli(["demo", "--days", "1", "--portfolios", "3", "--seed", "7"], pg_dsn, nats_url, subject_prefix)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for heading in ("orders", "portfolios", "jobs"):
        assert heading in out
    assert "simulated 1 trading day (" in out and "3 portfolios, seed 7" in out
    assert "openbell jobs" in out and "openbell history" in out and "openbell events" in out
    assert "dashboard: openbell serve web then open http://127.0.0.1:8080" in out

    con = await asyncpg.connect(pg_dsn)
    try:
        runs = await con.fetch("SELECT job_type::text, total_runs, total_failures FROM scheduled_jobs")
        assert {r[0]: r[1] for r in runs} == {
            "strategy_execution": 26, "order_status_check": 391, "position_sync": 79,
            "price_update": 79, "alert_price_check": 78, "portfolio_snapshot": 1,
        }
        assert all(r[2] == 0 for r in runs)
        portfolios = await con.fetchval("SELECT count(*) FROM portfolios")
        assert portfolios == 3
    finally:
        await con.close()

    # The trades read model, filtered by status; an unknown status is refused with the known ones.
    filled = run_cli(["orders", "--status", "filled", "--limit", "500"], pg_dsn, nats_url, subject_prefix)
    assert filled.returncode == 0, filled.stderr[-2000:]
    cells = [line.split("│")[8].strip() for line in filled.stdout.splitlines() if line.count("│") == 12]
    assert "filled" in cells and set(cells) <= {"filled", ""}, cells  # "": a cell wrapped onto a second line
    bogus = run_cli(["orders", "--status", "bogus"], pg_dsn, nats_url, subject_prefix)
    assert bogus.returncode == 2 and "'bogus' is not one of" in bogus.stderr and "partially_filled" in bogus.stderr

    again = run_cli(["demo", "--days", "1"], pg_dsn, nats_url, subject_prefix)
    assert again.returncode == 1
    assert "already holds" in again.stderr and "--reset" in again.stderr
    assert "Traceback" not in again.stderr


async def test_demo_reset_never_removes_a_users_portfolios(pg_dsn: str, nats_url: str, subject_prefix: str) -> None:
    opened = run_cli(["portfolio", "open", "mine", "--cash", "1000"], pg_dsn, nats_url, subject_prefix)
    assert opened.returncode == 0, opened.stderr[-2000:]
    refused = run_cli(["demo", "--days", "1", "--portfolios", "1", "--reset"], pg_dsn, nats_url, subject_prefix)
    assert refused.returncode == 1
    assert "not all a demo's (your own: mine)" in refused.stderr and "OPENBELL_DATA_DIR" in refused.stderr
    listed = run_cli(["portfolio", "list"], pg_dsn, nats_url, subject_prefix)
    assert "mine" in listed.stdout
