"""Pure helpers of the positions jobs (no servers)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from services.broker.quotes import batches
from services.model.events.positions import PositionDiscrepancyDetected, PositionDiscrepancyResolved, SymbolQuarantined
from services.model.market import BrokerPosition
from services.positions.planning import SymbolSyncState, evolve_sync_state, snapshot_day
from services.positions.reconcile import DiscrepancyKind, Holding, find_discrepancies

AT = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def test_snapshot_day_is_the_latest_opened_session() -> None:
    assert snapshot_day(datetime(2026, 11, 27, 18, 5, tzinfo=UTC)) == date(2026, 11, 27)  # early close + 5
    assert snapshot_day(datetime(2026, 11, 28, 17, 0, tzinfo=UTC)) == date(2026, 11, 27)  # Saturday
    assert snapshot_day(datetime(2026, 11, 26, 21, 0, tzinfo=UTC)) == date(2026, 11, 25)  # Thanksgiving
    assert snapshot_day(datetime(2026, 11, 30, 14, 0, tzinfo=UTC)) == date(2026, 11, 27)  # before Monday's open
    assert snapshot_day(datetime(2026, 11, 30, 21, 5, tzinfo=UTC)) == date(2026, 11, 30)


@given(st.lists(st.sampled_from(["AAPL", "MSFT", "KO", "BRK.B", "T", "V"])), st.integers(1, 4))
def test_batches_cover_each_symbol_once(symbols: list[str], size: int) -> None:
    out = list(batches(symbols, size))
    assert all(1 <= len(b) <= size for b in out)
    flat = [s for b in out for s in b]
    assert flat == sorted(set(symbols))


def test_sync_state_fold() -> None:
    def detected(policy: str) -> PositionDiscrepancyDetected:
        return PositionDiscrepancyDetected(
            tick_id="t", symbol="KO", kind="quantity", ours_qty=Decimal(5), ours_avg_cost=Decimal(60),
            broker_qty=Decimal(4), broker_avg_price=Decimal(60), owners=("p",), policy=policy, at=AT)

    state = evolve_sync_state(SymbolSyncState(), detected("fix"))
    assert state.open is None
    state = evolve_sync_state(state, detected("quarantine"))
    assert state.open is not None and state.open.kind is DiscrepancyKind.QUANTITY
    state = evolve_sync_state(state, SymbolQuarantined(tick_id="t", symbol="KO", reason="r", at=AT))
    assert state.quarantined
    state = evolve_sync_state(state, PositionDiscrepancyResolved(tick_id="u", symbol="KO", kind="quantity", at=AT))
    assert state.open is None and state.quarantined


def test_price_only_compared_where_comparable() -> None:
    broker = [BrokerPosition(symbol="AAPL", qty=Decimal(10), avg_entry_price=Decimal(101))]
    ours = [Holding(portfolio_id="p", symbol="AAPL", qty=Decimal(10), cost_basis=Decimal(1000))]
    kwargs = {"known_symbols": frozenset(), "in_flight_symbols": frozenset()}
    assert [d.kind for d in find_discrepancies(broker, ours, **kwargs)] == [DiscrepancyKind.PRICE]
    assert find_discrepancies(broker, ours, price_comparable=frozenset(), **kwargs) == []
    assert len(find_discrepancies(broker, ours, price_comparable=frozenset({"AAPL"}), **kwargs)) == 1
