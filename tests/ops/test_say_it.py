"""Commands that would have done nothing silently now say so, and their errors are one line: each as a
user runs it (a subprocess) on the test's servers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.alerts.conditions import AlertCondition, AlertSpec, trigger
from tests.trading.test_demo_cli import run_cli


def test_a_percent_change_notification_gives_the_actual_move() -> None:
    spec = AlertSpec(symbol="AAPL", condition=AlertCondition.PERCENT_CHANGE, threshold=Decimal(1),
                     reference_price=Decimal(20))
    events = trigger("a1", spec, Decimal("28.55"), datetime(2026, 12, 1, 15, tzinfo=UTC))
    notification = events[1].data
    assert "move of +1% or more from 20" in notification.title
    assert "+42.75% from 20" in notification.body


# A dozen openbell processes: half a minute on an idle machine, minutes on a loaded one.
@pytest.mark.timeout(300)
async def test_silent_acceptance_is_said(pg_dsn: str, nats_url: str, subject_prefix: str) -> None:
    def cli(*args: str) -> tuple[int, str, str]:
        result = run_cli(list(args), pg_dsn, nats_url, subject_prefix)
        return result.returncode, result.stdout, result.stderr

    code, _, err = cli("events", "--stream", "nosuch")
    assert code == 1 and err.strip() == "error: no stream 'nosuch' in the event store (streams: openbell events" \
        " shows them)"

    code, out, _ = cli("history", "--failed")
    assert code == 0 and "no failed job executions recorded" in out

    code, out, _ = cli("tick", "price_update")
    assert code == 0 and "no service consumes price_update ticks yet" in out
    assert cli("jobs", "disable", "price_update")[0] == 0
    code, out, _ = cli("tick", "position_sync")
    assert code == 0 and "is disabled" not in out
    code, out, _ = cli("tick", "price_update")
    assert "warning: price_update is disabled: this tick is recorded as skipped" in out

    code, out, err = cli("alerts", "create", "ZZZZ", "above", "1")
    assert code == 0, err
    assert "warning: no quote of ZZZZ has been observed: the alert stays unpriced" in out
    code, out, _ = cli("alerts", "list", "--json")
    assert code == 0 and [(a["symbol"], a["last_price"]) for a in json.loads(out)] == [("ZZZZ", None)]

    code, _, err = cli("portfolio", "open", "mine", "--cash", "abc")
    assert code == 1 and err.strip() == "error: --cash must be a number, e.g. 100000 (got 'abc')"

    code, out, _ = cli("--version")
    assert code == 0 and out.startswith("openbell ")

    code, out, _ = cli("events", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines and all(isinstance(e["data"], dict) and isinstance(e["metadata"], dict) for e in lines)
    assert all(datetime.fromisoformat(e["recorded_at"]).tzinfo is not None for e in lines)


def test_help_shows_no_type_on_flags_and_wraps_choices_between_words() -> None:
    from typer.testing import CliRunner

    from services.cli import _register_commands, app

    _register_commands()
    result = CliRunner().invoke(app, ["orders", "--help"], env={"COLUMNS": "70"}, terminal_width=70)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "partially_filled" in result.output  # a choice is never cut inside its name
