"""Faults injected into the simulator's calls: what to inject (SimFaults, from the OPENBELL_SIM_FAULT_*
settings) and when (a hash of the seed, the operation and its call number, so that one seed fails the same
calls in every run).

They let the tests and the demo meet the failures a real broker has (errors, 429s, hangs, lost answers)
without one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.broker.errors import BrokerUnavailable, RateLimited
from services.broker.simulator.market import hash_unit

OPERATIONS = (
    "submit_order", "get_order", "get_order_by_client_id", "list_orders", "cancel_order", "list_positions",
    "get_account", "get_clock", "get_calendar", "latest_quotes", "latest_bars", "get_bars",
)  # fmt: skip


@dataclass(frozen=True)
class SimFaults:
    """Injected faults per operation name (see OPERATIONS; "*" matches all). Decisions are drawn from a
    hash of (seed, operation, call number), so a run with the same seed fails the same calls."""

    error_rate: Mapping[str, float] = field(default_factory=dict)  # BrokerUnavailable before acting
    rate_limit_rate: Mapping[str, float] = field(default_factory=dict)  # RateLimited (429) before acting
    latency_seconds: Mapping[str, float] = field(default_factory=dict)  # real delay before acting
    hang: frozenset[str] = frozenset()  # sleep hang_seconds, then BrokerUnavailable (a timeout)
    hang_seconds: float = 30.0
    # The order is accepted but the answer is lost and the lookup fails too: AmbiguousSubmit.
    lost_submit_response_rate: float = 0.0
    rate_limit_reset_seconds: float = 1.0

    def value(self, table: Mapping[str, float], operation: str) -> float:
        return table.get(operation, table.get("*", 0.0))


async def before_call(faults: SimFaults, seed: int, operation: str, count: int) -> None:
    """The faults of call number ``count`` of ``operation``, before it acts: a delay, a hang, a 429 or an
    error (raised), or nothing."""
    if delay := faults.value(faults.latency_seconds, operation):
        await asyncio.sleep(delay)
    if operation in faults.hang or "*" in faults.hang:
        await asyncio.sleep(faults.hang_seconds)
        raise BrokerUnavailable(f"simulated hang in {operation}: timed out")
    if hash_unit(seed, "fault-429", operation, count) < faults.value(faults.rate_limit_rate, operation):
        reset = datetime.now(UTC) + timedelta(seconds=faults.rate_limit_reset_seconds)
        raise RateLimited(f"simulated 429 in {operation}", reset_at=reset, code=42910000)
    if hash_unit(seed, "fault-error", operation, count) < faults.value(faults.error_rate, operation):
        raise BrokerUnavailable(f"simulated server error in {operation}", status=500)


def loses_submit_response(faults: SimFaults, seed: int, count: int) -> bool:
    """Whether the answer to accepted submit number ``count`` is lost (the caller sees AmbiguousSubmit)."""
    return hash_unit(seed, "fault-lost", count) < faults.lost_submit_response_rate
