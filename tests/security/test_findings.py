"""Each finding of the security review, reproduced on real NATS and PostgreSQL, and now refused: code
loading from commands, unbounded input that wedged the log, ticks for any time, the paper/live side door,
secrets in logs, and the smaller ones. Nothing is appended by what is refused; the services keep answering.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NatsClient

from eventstore import ANY, NO_STREAM
from services.clock import calendar
from services.core.events import new_event
from services.core.host import ServiceContext
from services.core.jobs.types import JobType, Tick, TickReason, encode_tick
from services.model.events.alerts import NotificationRaised
from services.model.events.strategy import PortfolioOpened
from services.stack import hosted
from services.strategy import plugins
from tests.positions.helpers import job_end, run_tick, settings_for, sim_factory
from tests.waiting import until

SESSION = calendar.session(datetime(2026, 11, 18).date())
assert SESSION is not None
TICK = SESSION.open + timedelta(hours=2)  # a strategy_execution slot

PORTFOLIO = {"name": "p1", "starting_cash": "100000"}


async def command(nc: NatsClient, prefix: str, name: str, body: Any) -> dict[str, Any]:
    data = body if isinstance(body, bytes) else msgspec.json.encode(body)
    reply = await nc.request(f"{prefix}.cmd.{name}", data, timeout=10)
    answer: dict[str, Any] = msgspec.json.decode(reply.data)
    return answer


async def dead_letters(ctx: ServiceContext, at_least: int) -> list[str]:
    """The reasons of the dead letters so far (empty until there are ``at_least``)."""
    js, subjects = ctx.rt.js, ctx.rt.subjects
    info = await js.stream_info(subjects.dlq_stream)
    if info.state.messages < at_least:
        return []
    reasons = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(subjects.dlq_stream, seq)
        reasons.append(f"{msg.subject}: {(msg.headers or {}).get('Openbell-Dlq-Reason')}")
    return reasons


# ------------------------------------------------------------------------------------------ code loading


async def test_a_command_cannot_load_code_and_a_broken_strategy_fails_only_its_evaluation(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The operator allowed one module of strategies (as OPENBELL_STRATEGY_ALLOW in the service's environment).
    monkeypatch.setenv(plugins.ALLOW_VARIABLE, "tests.strategy.sample_strategies:*")
    sys.modules.pop("this", None)  # `import this` prints the Zen of Python: the proof of an import
    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    async with hosted(["relay", "projections", "strategy", "alerts"], settings,
                      broker_factory=sim_factory(pg_dsn)) as ctx:
        store = ctx.rt.store
        assert (await command(nc, subject_prefix, "portfolio.open", PORTFOLIO)).get("ok") is True
        before = await store.count()
        for kind in ("os:system", "subprocess:run", "this:s", "sys:exit", "builtins:eval"):
            answer = await command(nc, subject_prefix, "portfolio.attach",
                                   {"portfolio": "p1", "strategy": {"kind": kind, "universe": ["AAPL"]}})
            assert "not allowed" in answer.get("error", ""), (kind, answer)
            applied = await command(nc, subject_prefix, "portfolio.apply",
                                    {**PORTFOLIO, "strategy": [{"kind": kind, "universe": ["AAPL"]}]})
            assert "not allowed" in applied.get("error", ""), (kind, applied)
        assert "this" not in sys.modules, "a command imported a module"
        assert await store.count() == before

        # Allowed strategies that exit, raise or return no signal: each evaluation fails alone, recorded.
        for name, function in (("exits", "exits"), ("none", "returns_none"), ("buyer", "always")):
            answer = await command(nc, subject_prefix, "portfolio.attach", {
                "portfolio": "p1",
                "strategy": {"name": name, "kind": f"tests.strategy.sample_strategies:{function}",
                             "universe": ["AAPL"] if name != "buyer" else ["MSFT"]},
            })
            assert answer.get("ok") is True, answer
        end = await run_tick(ctx, JobType.STRATEGY_EXECUTION, TICK)
        assert end["type"] == "JobExecutionCompleted", end
        assert end["counters"]["strategy_errors"] == 2 and end["counters"]["trades_requested"] == 1, end
        evaluated = [e async for e in store.read_stream(f"evaluation-p1@{end['tick_id']}")]
        closing = msgspec.json.decode(evaluated[-1].data)
        assert evaluated[-1].type == "PortfolioEvaluated"
        failures = closing["strategy_failures"]
        assert any(f.startswith("exits on AAPL: SystemExit") for f in failures), failures
        assert any(f.startswith("none on AAPL: returned NoneType") for f in failures), failures
        notified = [msgspec.json.decode(e.data) for e in evaluated if e.type == "NotificationRaised"]
        assert notified and notified[0]["kind"] == "strategy_error" and "SystemExit" in notified[0]["body"]

        # The process is still up and answering (SystemExit did not escape).
        assert (await command(nc, subject_prefix, "alert.list", {})).get("alerts") == []


# ------------------------------------------------------------------------------------------ bounded input


async def test_values_that_wedged_the_log_are_refused_and_nothing_is_appended(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient
) -> None:
    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    async with hosted(["relay", "projections", "strategy", "alerts"], settings,
                      broker_factory=sim_factory(pg_dsn)) as ctx:
        store = ctx.rt.store
        refused: list[tuple[str, Any, str]] = [
            ("portfolio.open", {"name": "p1", "starting_cash": "1e999999"}, "starting_cash"),
            ("portfolio.open", {"name": "p1", "starting_cash": "NaN"}, "finite"),
            ("portfolio.open", {"name": "p1", "starting_cash": "1e-999999"}, "starting_cash"),
            ("portfolio.open", {**PORTFOLIO, "risk": {"max_order_notional": "1e999999"}}, "max_order_notional"),
            ("portfolio.open", {**PORTFOLIO, "risk": {"max_orders_per_tick": 10**12}}, "max_orders_per_tick"),
            ("portfolio.open", {"name": "p1\n", "starting_cash": "100"}, "control characters"),
            ("portfolio.open", {**PORTFOLIO, "trading_mode": "live"}, "OPENBELL_TRADING_MODE=paper"),
            ("portfolio.open", {**PORTFOLIO, "strategy": [{"kind": "momentum", "universe": ["AAPL\n"]}]},
             "control characters"),
            ("alert.create", {"symbol": "AAPL", "condition": "above", "threshold": "1e999999"}, "threshold"),
            ("alert.create", {"symbol": "AAPL", "condition": "percent_change", "threshold": "5",
                              "reference_price": "1e999999"}, "reference_price"),
            ("alert.create", {"symbol": "AAPL", "condition": "above", "threshold": "1", "alert_id": "a1\n"},
             "control characters"),
            ("portfolio.halt", {"portfolio": "p1", "reason": {"not": "a string"}}, "reason: must be a string"),
            ("portfolio.halt", {"portfolio": "p1", "reason": "r" * 600}, "at most 500"),
            ("portfolio.halt", {"portfolio": "p1", "reason": "r" * 900_000}, "request too large"),
            ("portfolio.halt", {"portfolio": "p1", "reason": "a\x00b"}, "control characters"),
        ]
        for name, body, expected in refused:
            answer = await command(nc, subject_prefix, name, body)
            assert expected in answer.get("error", ""), (name, str(body)[:100], answer)
            assert len(answer["error"]) <= 300 and "r" * 100 not in answer["error"]
        assert await store.count() == 0

        # The bounds leave ordinary values alone.
        assert (await command(nc, subject_prefix, "portfolio.open", {
            **PORTFOLIO, "risk": {"max_order_notional": "25000.50", "daily_loss_limit": "0.05"},
        })).get("ok") is True
        halted = await command(nc, subject_prefix, "portfolio.halt", {"portfolio": "p1", "reason": "lunch"})
        assert halted.get("ok") is True, halted


async def test_an_event_a_projection_cannot_apply_stops_it_loudly_and_the_others_go_on(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient
) -> None:
    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    async with hosted(["relay", "projections", "strategy", "alerts"], settings,
                      broker_factory=sim_factory(pg_dsn)) as ctx:
        store = ctx.rt.store
        # What the unbounded commands let in before: a starting cash no numeric column takes.
        poison = PortfolioOpened(portfolio_id="wedge", starting_cash=Decimal("1e999999"), trading_mode="paper",
                                 risk_limits={}, at=datetime.now(UTC))
        await store.append("portfolio-wedge", [new_event(poison, "wedge")], NO_STREAM)
        # Other projections still follow the log after it (the alerts projection keeps notifications).
        later = NotificationRaised(kind="test", portfolio_id=None, title="after the poison", body="", ref="x",
                                   at=datetime.now(UTC))
        await store.append("test-later", [new_event(later, "later")], ANY)

        stopped = await until(lambda: _stopped(ctx), 30, "the poisoned projection to stop")
        names = set(stopped)
        # Only projections that read PortfolioOpened stop; the alerts projection is not one of them.
        assert names and all("PortfolioOpened" in (ctx.projections[n].event_types or {"PortfolioOpened"})
                             for n in names), names
        assert "alerts" not in names

        async def notified() -> list[str]:
            await ctx.catch_up("alerts")
            async with store.pool.acquire() as con:
                rows = await con.fetch("SELECT kind, title FROM notifications ORDER BY position")
            return [f"{r['kind']}: {r['title']}" for r in rows] if len(rows) >= 2 else []

        shown = await until(notified, 30, "two notifications in the alerts read model")
        assert any(s.startswith("projection_stopped: projection ") for s in shown), shown
        assert "test: after the poison" in shown
        from services.core import metrics

        for name in names:
            assert metrics.PROJECTION_STOPPED.labels(name)._value.get() == 1
            assert "cannot apply the events after position" in str(await ctx.projections.check(name))
        # A reader of a stopped projection gets a clear error, not a traceback from PostgreSQL.
        from eventstore.projections import ProjectionStopped

        with pytest.raises(ProjectionStopped, match="is stopped after position"):
            await ctx.projections.run_once(next(iter(names)))

        # openbell doctor names it, in one line, and fails.
        doctor = await asyncio.to_thread(openbell, "doctor", env={
            "OPENBELL_DATABASE_URL": pg_dsn, "OPENBELL_NATS_URL": nats_url, "OPENBELL_SUBJECT_PREFIX": subject_prefix,
            "OPENBELL_LOG_LEVEL": "WARNING", "COLUMNS": "200"})
        assert doctor.returncode == 1, (doctor.stdout, doctor.stderr)
        assert "STOPPED" in doctor.stdout and "projection(s) stopped:" in doctor.stderr, doctor.stderr
        assert all(name in doctor.stderr for name in names), doctor.stderr


async def _stopped(ctx: ServiceContext) -> dict[str, Any]:
    return dict(ctx.projections.stopped)


async def test_the_relay_dead_letters_an_event_nats_refuses_and_goes_on(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient
) -> None:
    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    async with hosted(["relay"], settings, broker_factory=sim_factory(pg_dsn)) as ctx:
        store, js, subjects = ctx.rt.store, ctx.rt.js, ctx.rt.subjects
        huge = NotificationRaised(kind="test", portfolio_id=None, title="huge", body="x" * (ctx.rt.nc.max_payload + 10),
                                  ref="huge", at=datetime.now(UTC))
        small = NotificationRaised(kind="test", portfolio_id=None, title="small", body="", ref="small",
                                   at=datetime.now(UTC))
        await store.append("test-huge", [new_event(huge, "huge")], NO_STREAM)
        await store.append("test-small", [new_event(small, "small")], NO_STREAM)

        async def published() -> int:
            info = await js.stream_info(subjects.events_stream)
            return info.state.messages

        assert await until(published, 20, "an event published") == 1  # the small one; the huge one went to the DLQ
        reasons = await until(lambda: dead_letters(ctx, 1), 20, "the huge event's dead letter")
        assert any(r.startswith(subjects.dlq("relay")) and "exceeds the NATS max_payload" in r for r in reasons)


# ------------------------------------------------------------------------------------------ ticks


async def test_ticks_for_the_future_for_no_slot_or_with_unknown_fields_are_dead_lettered(
    pg_dsn: str, nats_url: str, subject_prefix: str, nc: NatsClient
) -> None:
    settings = settings_for(pg_dsn, nats_url, subject_prefix)
    async with hosted(["relay", "projections", "positions"], settings, broker_factory=sim_factory(pg_dsn)) as ctx:
        js, subjects = ctx.rt.js, ctx.rt.subjects
        job = JobType.PRICE_UPDATE  # a job of the positions service, every 5 minutes
        far = datetime(2099, 1, 5, 15, 0, tzinfo=UTC)
        soon = calendar.session(datetime.now(UTC).date() + timedelta(days=7))
        next_week = SESSION.open if soon is None else soon.open  # a real slot, a week ahead
        bad = {
            "2099": Tick.for_slot(job, far, emitted_at=far, reason=TickReason.SCHEDULED),
            "next week": Tick.for_slot(job, next_week, emitted_at=next_week, reason=TickReason.SCHEDULED),
            "no slot": Tick.for_slot(job, SESSION.open + timedelta(seconds=30), emitted_at=SESSION.open,
                                     reason=TickReason.SCHEDULED),
            "night": Tick.for_slot(job, SESSION.close + timedelta(hours=3), emitted_at=SESSION.close,
                                   reason=TickReason.SCHEDULED),
        }
        published = 0
        for tick in bad.values():
            await js.publish(subjects.tick(job.value), encode_tick(tick), headers={"Nats-Msg-Id": tick.tick_id})
            published += 1
        extra = msgspec.json.decode(encode_tick(Tick.for_slot(job, SESSION.open, emitted_at=SESSION.open,
                                                              reason=TickReason.SCHEDULED)))
        await js.publish(subjects.tick(job.value), msgspec.json.encode({**extra, "run_as": "root"}))
        published += 1

        reasons = await until(lambda: dead_letters(ctx, published), 30, "a dead letter for each bad tick")
        joined = "\n".join(reasons)
        assert joined.count("is for a time in the future") == 2, joined
        assert joined.count(f"is not a slot of {job.value}") == 2, joined
        assert "run_as" in joined or "unknown field" in joined.lower(), joined
        for tick in bad.values():
            assert await job_end(ctx.rt.store, tick.tick_id) is None

        # A manual tick now and a scheduled tick for a real slot are still obeyed.
        now = datetime.now(UTC).replace(microsecond=0)
        manual = await run_tick(ctx, job, now, reason=TickReason.MANUAL)
        assert manual["type"] in ("JobExecutionCompleted", "JobExecutionFailed"), manual
        scheduled = await run_tick(ctx, job, SESSION.open + timedelta(minutes=5))
        assert scheduled["type"] == "JobExecutionCompleted", scheduled


def test_a_trading_job_is_never_caught_up_and_manual_ticks_run_any_past_time() -> None:
    from services.clock.schedule import tick_problem

    now = SESSION.close + timedelta(hours=1)
    catch_up = Tick.for_slot(JobType.STRATEGY_EXECUTION, SESSION.open, emitted_at=now, reason=TickReason.CATCH_UP)
    assert "never caught up" in str(tick_problem(catch_up, now))
    manual = Tick.for_slot(JobType.STRATEGY_EXECUTION, SESSION.open + timedelta(seconds=7), emitted_at=now,
                           reason=TickReason.MANUAL)
    assert tick_problem(manual, now) is None
    assert "future" in str(tick_problem(manual, SESSION.open - timedelta(minutes=1)))


# ------------------------------------------------------------------------------------------ the live gate


def openbell(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "openbell"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENBELL_", "APCA_"))}
    return subprocess.run([str(executable), *args], env={**clean, **env}, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"OPENBELL_BROKER": "alpaca", "APCA_API_BASE_URL": "https://api.alpaca.markets"},
         "not Alpaca's paper host"),
        ({"OPENBELL_BROKER": "alpaca", "APCA_API_BASE_URL": "http://paper-api.alpaca.markets"},
         "must use https://"),
        ({"OPENBELL_BROKER": "alpaca", "OPENBELL_TRADING_MODE": "live"}, "OPENBELL_LIVE_TRADING=yes"),
        ({"OPENBELL_TRADING_MODE": "live"}, "OPENBELL_LIVE_TRADING=yes"),
        ({"OPENBELL_BROKER": "alpaca", "APCA_API_STREAM_URL": "wss://stream.example.com/v2"},
         "not Alpaca's paper host"),
    ],
)
def test_serve_refuses_a_side_door_to_live_trading_at_start(env: dict[str, str], expected: str) -> None:
    secret = "s3cr3t-value-never-printed"
    result = openbell("serve", "orders", env={"APCA_API_KEY_ID": "key-id", "APCA_API_SECRET_KEY": secret,
                                              "OPENBELL_DATA_DIR": "/nonexistent/openbell", **env})
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert secret not in result.stderr + result.stdout


def test_the_live_gate_lets_through_only_paper_or_an_explicit_opt_in() -> None:
    from services.broker.alpaca import check_live_gate, load_alpaca_settings
    from services.broker.errors import BrokerConfigError

    check_live_gate(load_alpaca_settings())  # paper, Alpaca's paper host
    check_live_gate(load_alpaca_settings(trading_mode="live", live_trading="yes"))  # the opt-in, live host
    check_live_gate(load_alpaca_settings(trading_mode="live", live_trading="yes",
                                         api_base_url="http://127.0.0.1:8080"))  # a local server, opted in
    for overrides in (
        {"api_base_url": "http://127.0.0.1:8080"},  # any host but the paper host needs the opt-in
        {"api_base_url": "https://api.alpaca.markets"},
        {"trading_mode": "live", "live_trading": "yes", "api_data_url": "http://data.example.com"},
        {"trading_mode": "live", "live_trading": "yes", "api_base_url": "ftp://api.alpaca.markets"},
    ):
        with pytest.raises(BrokerConfigError):
            check_live_gate(load_alpaca_settings(**overrides))


# ------------------------------------------------------------------------------------------ secrets


def test_debug_logging_holds_credential_loggers_at_info_and_redacts_secrets(caplog: pytest.LogCaptureFixture) -> None:
    from services.core.logs import CREDENTIAL_LOGGERS, RedactingFilter, configure_logging
    from services.core.redaction import register_secrets

    secret = "SK-" + "q" * 37
    register_secrets(secret)
    configure_logging("DEBUG")
    for name in CREDENTIAL_LOGGERS:
        assert logging.getLogger(name).getEffectiveLevel() >= logging.INFO, name
    assert not logging.getLogger("websockets.client").isEnabledFor(logging.DEBUG)
    record = logging.LogRecord("openbell", logging.ERROR, __file__, 1, "auth frame %s", (
        f'{{"action": "authenticate", "data": {{"key_id": "k", "secret_key": "{secret}"}}}}',), None)
    RedactingFilter().filter(record)
    assert secret not in record.getMessage() and secret[:10] not in record.getMessage()


def test_redaction_happens_before_truncation() -> None:
    from alpaca.common.exceptions import APIError

    from services.broker.alpaca import map_error
    from services.core.jobs.runner import MAX_ERROR_CHARS, safe_error
    from services.core.redaction import register_secrets

    secret = "PK" + "Z" * 38
    register_secrets(secret)
    # A secret that straddles the cut: before, its first half was kept and no longer recognizable.
    text = "x" * (MAX_ERROR_CHARS - 20) + f" token={secret} " + secret
    kept = safe_error(RuntimeError(text))
    assert "ZZZZZ" not in kept
    body = "<html>" + "y" * 100 + secret + "</html>"
    mapped = str(map_error(APIError(body), operation="get_account", secrets=[secret]))
    assert "ZZZZZ" not in mapped, mapped


# ------------------------------------------------------------------------------------------ smaller


def test_cli_output_drops_terminal_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.table import Table

    from services.cli_support import console
    from services.positions.cli import format_feed_line

    table = Table()
    table.add_column("name")
    table.add_row("p1\x1b[2J\x1b]0;owned\x07\x9b31m")
    console.print(table)
    console.print(format_feed_line("openbell.feed.alert.all", b'{"title": "\\u001b[31mred\\u001b[0m"}', raw=False),
                  markup=False, highlight=False)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "p1" in out


def test_plot_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    from services.positions.cli import draw_equity_curve

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "equity.png"
    target.symlink_to(victim)
    rows = [{"portfolio_id": "p1", "trading_day": SESSION.day, "total_value": Decimal("100000")}]
    draw_equity_curve(rows, target)
    assert victim.read_text() == "precious"
    assert not target.is_symlink() and target.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["equity.png", "victim.txt"]


def test_reaching_the_data_dir_never_makes_its_parents_listable(tmp_path: Path) -> None:
    from services.core.embedded import _let_user_reach

    private = tmp_path / "home"
    data_dir = private / "project" / ".openbell"
    data_dir.mkdir(parents=True)
    private.chmod(0o700)
    _let_user_reach(data_dir)
    assert private.stat().st_mode & 0o777 == 0o701  # traverse only: others cannot list it
    assert data_dir.stat().st_mode & 0o005 == 0o005
