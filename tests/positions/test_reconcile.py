from decimal import Decimal

from services.model.events.positions import (
    UNASSIGNED_PORTFOLIO,
    PositionDiscrepancyDetected,
    PositionDiscrepancyResolved,
    PositionReconciled,
    SymbolQuarantined,
    SymbolQuarantineLifted,
)
from services.model.events.strategy import PortfolioHalted
from services.model.market import BrokerPosition
from services.positions.reconcile import (
    Discrepancy,
    DiscrepancyKind,
    Holding,
    PolicyAction,
    ReconcilePolicy,
    confirmed,
    find_discrepancies,
    plan_sync,
)
from tests.builders import T0, D

KNOWN = frozenset({"AAPL", "MSFT", "NVDA"})
FIX_ALL = ReconcilePolicy()


def broker(symbol: str, qty: str, price: str = "100") -> BrokerPosition:
    return BrokerPosition(symbol=symbol, qty=D(qty), avg_entry_price=D(price))


def holding(portfolio: str, symbol: str, qty: str, avg: str = "100") -> Holding:
    return Holding(portfolio_id=portfolio, symbol=symbol, qty=D(qty), cost_basis=D(qty) * D(avg))


def kinds(found: list[Discrepancy]) -> dict[str, DiscrepancyKind]:
    return {d.symbol: d.kind for d in found}


def find(
    brokers: list[BrokerPosition], holdings: list[Holding], in_flight: frozenset[str] = frozenset()
) -> list[Discrepancy]:
    return find_discrepancies(brokers, holdings, known_symbols=KNOWN, in_flight_symbols=in_flight)


def test_positions_that_agree_in_sum_are_not_discrepancies() -> None:
    assert find([broker("AAPL", "15")], [holding("a", "AAPL", "10"), holding("b", "AAPL", "5")]) == []


def test_each_kind_is_classified() -> None:
    found = find(
        [
            broker("AAPL", "10"),
            broker("MSFT", "7"),
            broker("NVDA", "3"),
            broker("ZZZZ", "1"),
            broker("TSLA", "2", "250"),
        ],
        [holding("a", "AAPL", "12"), holding("a", "GOOG", "4"), holding("a", "TSLA", "2", "200")],
    )
    assert kinds(found) == {
        "AAPL": DiscrepancyKind.QUANTITY,
        "GOOG": DiscrepancyKind.CLOSED_AT_BROKER,
        "MSFT": DiscrepancyKind.MISSING,
        "NVDA": DiscrepancyKind.MISSING,
        "TSLA": DiscrepancyKind.PRICE,
        "ZZZZ": DiscrepancyKind.UNKNOWN_AT_BROKER,
    }


def test_a_symbol_with_an_order_in_flight_is_not_a_discrepancy() -> None:
    assert find([broker("AAPL", "10")], [holding("a", "AAPL", "5")], in_flight=frozenset({"AAPL"})) == []


def test_price_is_not_compared_when_several_portfolios_hold_the_symbol() -> None:
    # The broker's single average over a shared account cannot match each portfolio's own.
    assert (
        find([broker("AAPL", "10", "130")], [holding("a", "AAPL", "5", "100"), holding("b", "AAPL", "5", "110")]) == []
    )


def test_small_price_differences_are_tolerated() -> None:
    assert find([broker("AAPL", "10", "100.05")], [holding("a", "AAPL", "10", "100")]) == []


def test_only_what_a_second_look_finds_again_is_acted_upon() -> None:
    ours = [holding("p1", "AAPL", "10"), holding("p1", "MSFT", "5"), holding("p1", "NVDA", "3")]
    # First look: AAPL and MSFT differ (MSFT: a sale filled at the broker between our read and its read).
    first = find([broker("AAPL", "7"), broker("MSFT", "2"), broker("NVDA", "3")], ours)
    assert kinds(first) == {"AAPL": DiscrepancyKind.QUANTITY, "MSFT": DiscrepancyKind.QUANTITY}
    # Second look: our books have the sale now (MSFT agrees); NVDA changed in between (a new difference).
    booked = [holding("p1", "AAPL", "10"), holding("p1", "MSFT", "2"), holding("p1", "NVDA", "3")]
    second = find([broker("AAPL", "7"), broker("MSFT", "2"), broker("NVDA", "1")], booked)
    assert kinds(confirmed(first, second)) == {"AAPL": DiscrepancyKind.QUANTITY}
    # A difference whose figures moved between the looks waits for the next sync.
    moved = find([broker("AAPL", "6"), broker("MSFT", "2"), broker("NVDA", "3")], booked)
    assert confirmed(first, moved) == []
    assert confirmed([], second) == [] and confirmed(first, []) == []


def plan(found: list[Discrepancy], holdings: list[Holding], policy: ReconcilePolicy = FIX_ALL, **kwargs: object):  # type: ignore[no-untyped-def]
    arguments: dict[str, object] = {
        "open_discrepancies": {},
        "quarantined_symbols": frozenset(),
        "skipped_symbols": frozenset(),
        "tick_id": "position_sync@2025-03-03T15:00:00Z",
        "at": T0,
    }
    arguments.update(kwargs)
    return plan_sync(found, holdings, policy, **arguments)  # type: ignore[arg-type]


def reconciled(outcome) -> dict[tuple[str, str], PositionReconciled]:  # type: ignore[no-untyped-def]
    return {
        (e.data.portfolio_id, e.data.symbol): e.data for e in outcome.events if isinstance(e.data, PositionReconciled)
    }


def test_fix_assigns_a_quantity_difference_to_the_single_owner_keeping_its_average() -> None:
    holdings = [holding("a", "AAPL", "12", "90")]
    outcome = plan(find([broker("AAPL", "10")], holdings), holdings)
    fix = reconciled(outcome)[("a", "AAPL")]
    assert (fix.qty_before, fix.qty_after, fix.cost_basis_after) == (D(12), D(10), D(900))
    assert (outcome.discrepancies_found, outcome.discrepancies_fixed) == (1, 1)
    assert isinstance(outcome.events[0].data, PositionDiscrepancyDetected)


def test_fix_puts_a_difference_shared_by_several_owners_in_the_unassigned_bucket() -> None:
    holdings = [holding("a", "AAPL", "5"), holding("b", "AAPL", "5")]
    outcome = plan(find([broker("AAPL", "13", "100")], holdings), holdings)
    assert set(reconciled(outcome)) == {(UNASSIGNED_PORTFOLIO, "AAPL")}
    fix = reconciled(outcome)[(UNASSIGNED_PORTFOLIO, "AAPL")]
    assert (fix.qty_after, fix.cost_basis_after) == (D(3), D(300))


def test_fix_puts_missing_and_unknown_positions_in_the_unassigned_bucket() -> None:
    outcome = plan(find([broker("MSFT", "7", "10"), broker("ZZZZ", "1", "5")], []), [])
    assert {k: (v.qty_after, v.cost_basis_after) for k, v in reconciled(outcome).items()} == {
        (UNASSIGNED_PORTFOLIO, "MSFT"): (D(7), D(70)),
        (UNASSIGNED_PORTFOLIO, "ZZZZ"): (D(1), D(5)),
    }


def test_fix_flattens_every_holder_of_a_position_closed_at_the_broker() -> None:
    holdings = [holding("a", "GOOG", "4"), holding("b", "GOOG", "1")]
    outcome = plan(find([], holdings), holdings)
    assert {k: v.qty_after for k, v in reconciled(outcome).items()} == {("a", "GOOG"): 0, ("b", "GOOG"): 0}


def test_fix_sets_the_owners_cost_to_the_brokers_average() -> None:
    holdings = [holding("a", "TSLA", "2", "200")]
    outcome = plan(find([broker("TSLA", "2", "250")], holdings), holdings)
    assert reconciled(outcome)[("a", "TSLA")].cost_basis_after == D(500)


def test_quarantine_policy_quarantines_the_symbol_and_reports_once() -> None:
    policy = ReconcilePolicy(quantity=PolicyAction.QUARANTINE)
    holdings = [holding("a", "AAPL", "12")]
    found = find([broker("AAPL", "10")], holdings)
    first = plan(found, holdings, policy)
    assert [type(e.data) for e in first.events] == [PositionDiscrepancyDetected, SymbolQuarantined]
    assert first.quarantined_symbols == ("AAPL",)

    # The next sync finds the same difference: it is open already, nothing new is said.
    again = plan(
        found, holdings, policy, open_discrepancies={"AAPL": found[0]}, quarantined_symbols=frozenset({"AAPL"})
    )
    assert again.events == ()

    # Once the books agree again, the discrepancy is resolved and the quarantine lifted.
    resolved = plan(
        [], holdings, policy, open_discrepancies={"AAPL": found[0]}, quarantined_symbols=frozenset({"AAPL"})
    )
    assert [type(e.data) for e in resolved.events] == [PositionDiscrepancyResolved, SymbolQuarantineLifted]


def test_an_open_discrepancy_skipped_for_an_order_in_flight_stays_open() -> None:
    holdings = [holding("a", "AAPL", "12")]
    found = find([broker("AAPL", "10")], holdings)
    outcome = plan([], holdings, open_discrepancies={"AAPL": found[0]}, skipped_symbols=frozenset({"AAPL"}))
    assert outcome.events == ()


def test_halt_policy_halts_the_owners_or_quarantines_an_ownerless_symbol() -> None:
    policy = ReconcilePolicy(quantity=PolicyAction.HALT, missing=PolicyAction.HALT)
    holdings = [holding("a", "AAPL", "5"), holding("b", "AAPL", "5")]
    outcome = plan(find([broker("AAPL", "3"), broker("MSFT", "1")], holdings), holdings, policy)
    halts = [e.data for e in outcome.events if isinstance(e.data, PortfolioHalted)]
    assert {h.portfolio_id for h in halts} == {"a", "b"}
    assert all(h.rule == "position_sync" for h in halts)
    assert outcome.halted_portfolios == ("a", "b")
    assert outcome.quarantined_symbols == ("MSFT",)


def test_event_ids_derive_from_the_tick_so_a_redelivery_adds_nothing() -> None:
    holdings = [holding("a", "AAPL", "12")]
    found = find([broker("AAPL", "10")], holdings)
    first = [e.event_id for e in plan(found, holdings).events]
    assert first == [e.event_id for e in plan(found, holdings).events]
    assert first != [e.event_id for e in plan(found, holdings, tick_id="position_sync@later").events]


def test_policy_defaults_to_fixing_everything_and_refuses_unknown_actions() -> None:
    policy = ReconcilePolicy()
    assert all(policy.action_for(kind) is PolicyAction.FIX for kind in DiscrepancyKind)
    try:
        ReconcilePolicy.model_validate({"missing": "ignore"})
    except ValueError as exc:
        assert "missing" in str(exc)
    else:
        raise AssertionError("an unknown policy action was accepted")
    assert ReconcilePolicy(price_tolerance=Decimal(0)).price_tolerance == 0
