"""The chaos suite's quick seed: the stack as separate processes (relay, projections, two strategy, two
orders, positions, alerts, the virtual clock), each with its own role's identity as in the compose stack,
over one virtual day, one fault of each kind, then every invariant of bench.chaos and the same books,
orders and snapshots as a fault-free run of the same seed.

Longer runs: ``python -m bench.chaos --seeds 10 --days 2``.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from bench.chaos import FAULT_KINDS, STACK, ChaosConfig, Stack, compare_outcomes, nats_role, plan_faults, run_stack
from services.core.dbroles import role_of
from services.core.embedded import PG_SERVICE_ROLE

QUICK = ChaosConfig(seed=3, days=1, portfolios=3, faults=4, tick_timeout=60.0, quiet_timeout=45.0)


def test_fault_plan_is_seeded_and_covers_every_kind() -> None:
    plan = plan_faults(QUICK)
    assert plan == plan_faults(QUICK)
    assert plan != plan_faults(ChaosConfig(seed=4, faults=4))
    assert {f.kind for f in plan} == set(FAULT_KINDS)
    assert all(a.at <= b.at for a, b in itertools.pairwise(plan))
    for fault in plan:
        assert fault.at.date() == date(2026, 11, 2)
        assert 5 <= fault.seconds <= 10 if fault.kind == "stop" else 0.5 <= fault.seconds <= 3


def test_each_process_connects_as_its_role_as_in_the_compose_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An identity of the shell running the suite must not reach the stack's processes.
    monkeypatch.setenv("OPENBELL_NATS_TOKEN", "someone-elses-token")
    monkeypatch.setenv("OPENBELL_DATABASE_OWNER_URL", "postgresql://someone:else@db/openbell")
    stack = Stack(tmp_path, QUICK)
    stack.postgres.port = stack.nats.port = 4999
    stack.postgres.data_dir.mkdir()
    stack.nats.data_dir.mkdir()  # (made by the servers' start in a run)
    # Only the relay may publish the event log: it runs alone, as relay.
    assert [name for name, services in STACK.items() if "relay" in services] == ["relay"]
    assert STACK["relay"] == ("relay",)
    expected = {"clock": "clock", "relay": "relay"}
    for process in [*STACK, "clock"]:
        env = stack.env(nats_role(process))
        role = expected.get(process, "services")
        assert env["OPENBELL_NATS_USER"] == role
        assert env["OPENBELL_NATS_PASSWORD"] == stack.nats.password(role)
        assert role_of(env["OPENBELL_DATABASE_URL"]) == PG_SERVICE_ROLE
        assert "OPENBELL_NATS_TOKEN" not in env and "OPENBELL_DATABASE_OWNER_URL" not in env


def test_only_a_process_that_could_not_reach_its_servers_at_start_is_restarted(tmp_path: Path) -> None:
    stack = Stack(tmp_path, QUICK)
    cases = {
        # exit status, what the process logged since its last start
        "relay": (2, "serving: relay\nerror: cannot reach PostgreSQL at postgresql://127.0.0.1:5/openbell: refused\n"),
        "projections": (2, "serving: projections\nerror: NATS at nats://127.0.0.1:4 refused the credentials\n"),
        "alerts": (1, "serving: alerts\nerror: cannot reach NATS at nats://127.0.0.1:4: refused\n"),
        "positions": (2, "serving: positions\n... services running: positions\nerror: cannot reach NATS\n"),
    }
    for name, (status, log) in cases.items():
        (tmp_path / "logs" / f"{name}.log").write_text(log)
        stack.processes[name] = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({status})"])
        stack.processes[name].wait()
    assert [name for name in cases if stack.could_not_reach_servers(name)] == ["relay"]
    stack.in_fault.add("relay")  # a fault is killing and restarting it: not the supervisor's
    assert not stack.could_not_reach_servers("relay")


@pytest.mark.timeout(400)
async def test_quick_seed_keeps_every_invariant(tmp_path: Path) -> None:
    reference = await run_stack(QUICK, tmp_path / "reference", with_faults=False)
    assert reference.violations == [], reference.clock_output
    assert reference.facts["orders"] > 0 and reference.facts["snapshots"] == QUICK.portfolios

    result = await run_stack(QUICK, tmp_path / "faults")
    assert len(result.facts["faults_log"]) == QUICK.faults, result.facts["faults_log"]
    assert result.violations == [], "\n".join([*result.violations, *result.facts["faults_log"]])
    assert compare_outcomes(reference.outcome, result.outcome) == []
