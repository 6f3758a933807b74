"""The heartbeat line and the readiness verdict are pure functions of what serve gathers."""

from __future__ import annotations

from datetime import UTC, datetime

from services.core.health import MAX_READY_RELAY_LAG, Readiness, heartbeat_line, market_state
from services.core.servers import redact_url

READY = Readiness(nats=True, postgres=True, consumers_bound=4, consumers_expected=4, relay_lag=0)


def test_closed_market_names_the_next_open_in_both_zones() -> None:
    # Saturday 2026-12-05 12:00 UTC: the next session opens Monday 09:30 New York = 14:30 UTC.
    saturday = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    assert market_state(saturday) == "market closed, opens Mon 2026-12-07 09:30 New York (14:30 UTC)"
    line = heartbeat_line(saturday, ["clock", "strategy"], READY, {"price_update": "disabled"})
    assert line.startswith("heartbeat: clock, strategy up, ready; market closed")
    assert "strategy_execution Mon 09:30 NY / 14:30 UTC" in line
    assert "portfolio_snapshot Mon 16:05 NY / 21:05 UTC" in line
    assert "price_update disabled" in line


def test_open_market_says_until_when() -> None:
    # Thursday 2026-12-03 15:00 UTC = 10:00 New York.
    assert market_state(datetime(2026, 12, 3, 15, 0, tzinfo=UTC)) == (
        "market open until Thu 2026-12-03 16:00 New York (21:00 UTC)"
    )


def test_readiness_names_what_fails() -> None:
    assert READY.ready and READY.failing == []
    broken = Readiness(nats=False, postgres=True, consumers_bound=2, consumers_expected=4,
                       relay_lag=MAX_READY_RELAY_LAG + 1, loops_stopped=("relay",))
    assert not broken.ready
    assert broken.failing == ["nats unreachable", "2 of 4 consumers fetching",
                              f"relay {MAX_READY_RELAY_LAG + 1} events behind", "relay stopped"]
    assert broken.as_json()["ready"] is False


def test_urls_in_messages_carry_no_credentials() -> None:
    assert redact_url("postgresql://bob:hunter2@db.example:5432/openbell?sslmode=require") == (
        "postgresql://db.example:5432/openbell"
    )
    assert redact_url("nats://user:pw@127.0.0.1:4222") == "nats://127.0.0.1:4222"
    assert redact_url("postgresql://postgres@/openbell?host=/tmp/pg&port=5433") == (
        "postgresql:///tmp/pg:5433/openbell"
    )
    # The servers of a NATS cluster (OPENBELL_NATS_URL), and a libpq host list: each without credentials.
    assert redact_url("nats://a:pw1@n1:4222, nats://b:pw2@n2:4223,nats://n3:4224") == (
        "nats://n1:4222,nats://n2:4223,nats://n3:4224"
    )
    assert redact_url("postgresql://bob:hunter2@db1:5432,db2:5433/openbell?sslmode=require") == (
        "postgresql://db1:5432,db2:5433/openbell"
    )
