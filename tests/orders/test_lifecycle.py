from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.broker.views import broker_status
from services.model.accounting import Book
from services.model.events.orders import (
    OrderCanceled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
    OrderSubmitUnknown,
)
from services.model.ledger import record_fill
from services.model.market import BrokerOrderView, BrokerStatus
from services.model.vocabulary import Side
from services.orders.lifecycle import (
    IllegalTransition,
    OrderState,
    OrderStatus,
    apply_broker_order,
    evolve,
    fill_event_id,
    resolve_unknown,
    submit_unknown,
    too_late_to_send,
)
from tests.builders import T0, D, order_state

COID = "ob-" + "a" * 40


def view(status: BrokerStatus, filled: str, avg: str | None, minutes: int = 1, reason: str = "") -> BrokerOrderView:
    return BrokerOrderView(
        client_order_id=COID,
        broker_order_id="broker-1",
        status=status,
        filled_qty=D(filled),
        filled_avg_price=None if avg is None else D(avg),
        updated_at=T0 + timedelta(minutes=minutes),
        reason=reason,
    )


def fold(state: OrderState, events: list) -> OrderState:  # type: ignore[type-arg]
    for event in events:
        state = evolve(state, event.data)
    return state


def test_partial_then_full_fill_prices_each_increment_from_the_cumulative_figures() -> None:
    state = order_state("10")
    first = apply_broker_order(state, view(BrokerStatus.OPEN, "4", "100"))
    assert [type(e.data) for e in first] == [OrderPartiallyFilled]
    assert (first[0].data.fill_qty, first[0].data.fill_price, first[0].data.fill_notional) == (D(4), D(100), D(400))
    state = fold(state, first)
    assert state.status is OrderStatus.PARTIALLY_FILLED

    second = apply_broker_order(state, view(BrokerStatus.FILLED, "10", "103", minutes=2))
    fill = second[0].data
    assert isinstance(fill, OrderFilled)
    # 10 x 103 - 4 x 100 = 630 for the last 6 shares: 105 each.
    assert (fill.fill_qty, fill.fill_notional, fill.fill_price) == (D(6), D(630), D(105))
    assert (fill.cumulative_qty, fill.avg_price) == (D(10), D(103))
    assert fold(state, second).status is OrderStatus.FILLED


def test_a_repeated_snapshot_adds_nothing() -> None:
    state = order_state("10")
    snapshot = view(BrokerStatus.OPEN, "4", "100")
    state = fold(state, apply_broker_order(state, snapshot))
    assert apply_broker_order(state, snapshot) == []


def test_a_stale_snapshot_with_a_lower_quantity_is_ignored() -> None:
    state = fold(order_state("10"), apply_broker_order(order_state("10"), view(BrokerStatus.OPEN, "7", "100")))
    assert apply_broker_order(state, view(BrokerStatus.OPEN, "4", "100")) == []
    assert state.filled_qty == D(7)


def test_an_order_we_had_not_seen_accepted_is_submitted_first() -> None:
    state = order_state("10", status=OrderStatus.REQUESTED)
    events = apply_broker_order(state, view(BrokerStatus.FILLED, "10", "50"))
    assert [type(e.data) for e in events] == [OrderSubmitted, OrderFilled]
    assert events[0].data.broker_order_id == "broker-1"
    assert fold(state, events).status is OrderStatus.FILLED


def test_cancel_after_a_partial_fill_books_the_fill_then_the_cancel() -> None:
    state = order_state("10")
    events = apply_broker_order(state, view(BrokerStatus.CANCELED, "3", "20"))
    assert [type(e.data) for e in events] == [OrderPartiallyFilled, OrderCanceled]
    assert events[1].data.filled_qty == D(3)
    assert fold(state, events).status is OrderStatus.CANCELED


def test_broker_rejection_is_definite() -> None:
    events = apply_broker_order(
        order_state("10"), view(BrokerStatus.REJECTED, "0", None, reason="insufficient buying power")
    )
    assert len(events) == 1
    rejected = events[0].data
    assert isinstance(rejected, OrderRejected)
    assert rejected.definite is True
    assert rejected.reason == "insufficient buying power"


def test_nothing_happens_to_a_terminal_order() -> None:
    state = order_state("10", status=OrderStatus.CANCELED)
    assert apply_broker_order(state, view(BrokerStatus.FILLED, "10", "1")) == []


def test_completion_without_new_quantity_is_a_zero_fill_with_its_own_id() -> None:
    state = fold(order_state("10"), apply_broker_order(order_state("10"), view(BrokerStatus.OPEN, "6", "10")))
    events = apply_broker_order(state, view(BrokerStatus.FILLED, "6", "10"))
    assert [type(e.data) for e in events] == [OrderFilled]
    assert events[0].data.fill_qty == 0
    assert events[0].event_id != fill_event_id(COID, D(6))
    assert fold(state, events).status is OrderStatus.FILLED


def test_fill_id_depends_on_order_and_cumulative_quantity_only() -> None:
    partial = apply_broker_order(order_state("10"), view(BrokerStatus.OPEN, "10.0", "5"))
    assert partial[0].event_id == fill_event_id(COID, D("1E+1"))  # 10.0 == 1E+1 == 10
    assert fill_event_id(COID, D(4)) != fill_event_id(COID, D(5))
    assert fill_event_id(COID, D(4)) != fill_event_id("ob-" + "b" * 40, D(4))


def test_unknown_statuses_never_close_an_order() -> None:
    assert broker_status("done_for_day") is BrokerStatus.OPEN
    assert broker_status("some_new_status") is BrokerStatus.OPEN
    assert broker_status("FILLED") is BrokerStatus.FILLED
    assert broker_status("replaced") is BrokerStatus.CANCELED


def test_illegal_transitions_are_refused() -> None:
    filled = order_state("10", status=OrderStatus.FILLED)
    unknown = OrderSubmitUnknown(
        portfolio_id="growth", client_order_id=COID, symbol="AAPL", side=Side.BUY, reason="x", at=T0
    )
    with pytest.raises(IllegalTransition):
        evolve(filled, unknown)


def test_broker_view_refuses_naive_times_and_missing_average() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        BrokerOrderView(
            client_order_id=COID,
            broker_order_id="b",
            status=BrokerStatus.OPEN,
            filled_qty=D(0),
            filled_avg_price=None,
            updated_at=T0.replace(tzinfo=None),
        )
    with pytest.raises(ValueError, match="filled_avg_price"):
        view(BrokerStatus.OPEN, "1", None)


# ------------------------------------------------------------------------------------------ unknown orders


def unknown_state() -> OrderState:
    requested = order_state("10", status=OrderStatus.REQUESTED)
    return evolve(requested, submit_unknown(requested, "read timeout", T0).data)


def test_unknown_order_found_by_client_id_catches_up_with_the_broker() -> None:
    events = resolve_unknown(unknown_state(), view(BrokerStatus.OPEN, "2", "9"), now=T0 + timedelta(minutes=1))
    assert [type(e.data) for e in events] == [OrderSubmitted, OrderPartiallyFilled]


def test_unknown_order_not_found_within_grace_stays_unknown() -> None:
    events = resolve_unknown(unknown_state(), None, now=T0 + timedelta(minutes=4), grace=timedelta(minutes=5))
    assert events == []


def test_unknown_order_not_found_after_grace_was_never_received() -> None:
    events = resolve_unknown(unknown_state(), None, now=T0 + timedelta(minutes=5), grace=timedelta(minutes=5))
    assert len(events) == 1
    rejected = events[0].data
    assert isinstance(rejected, OrderRejected)
    assert rejected.definite is False
    assert "never received" in rejected.reason


# ------------------------------------------------------------------------------------------ property


@st.composite
def fill_histories(draw: st.DrawFn) -> tuple[Decimal, list[BrokerOrderView]]:
    """An order's true history at the broker: snapshots with growing cumulative quantity."""
    qty = draw(st.integers(min_value=1, max_value=500))
    snapshots: list[BrokerOrderView] = []
    cumulative, notional = 0, Decimal(0)
    minute = 0
    while cumulative < qty:
        increment = draw(st.integers(min_value=1, max_value=qty - cumulative))
        price = Decimal(draw(st.integers(min_value=100, max_value=50_000))) / 100
        cumulative += increment
        notional += increment * price
        minute += 1
        done = cumulative == qty
        # Brokers report a rounded average; the fills must still add up to exactly what it says.
        average = (notional / cumulative).quantize(Decimal("0.000001"))
        snapshots.append(
            view(BrokerStatus.FILLED if done else BrokerStatus.OPEN, str(cumulative), str(average), minute)
        )
        if not done and draw(st.integers(0, 9)) == 0:
            snapshots.append(view(BrokerStatus.CANCELED, str(cumulative), str(average), minute + 1))
            break
    return Decimal(qty), snapshots


def replay(qty: Decimal, observations: list[BrokerOrderView]) -> tuple[OrderState, Book, list]:  # type: ignore[type-arg]
    state = order_state(str(qty))
    book = Book(portfolio_id="growth", cash=D(1_000_000))
    appended = []
    for observed in observations:
        events = apply_broker_order(state, observed)
        for event in events:
            state = evolve(state, event.data)
            if isinstance(event.data, OrderPartiallyFilled | OrderFilled):
                book, _ = record_fill(book, event.data)
        appended.extend(events)
    return state, book, appended


@settings(max_examples=150, deadline=None)
@given(history=fill_histories(), data=st.data())
def test_any_interleaving_of_poll_and_stream_counts_each_fill_once(
    history: tuple[Decimal, list[BrokerOrderView]], data: st.DataObject
) -> None:
    qty, snapshots = history
    final = snapshots[-1]
    # Polling sees some snapshots, the stream others, both may repeat and arrive late; the final state
    # is seen at least once by someone.
    seen = data.draw(st.lists(st.sampled_from(snapshots), max_size=3 * len(snapshots)))
    position = data.draw(st.integers(min_value=0, max_value=len(seen)))
    observations = data.draw(st.permutations([*seen[:position], final, *seen[position:]]))

    state, book, appended = replay(qty, observations)
    once_state, once_book, _ = replay(qty, [final])

    assert state.filled_qty == once_state.filled_qty == final.filled_qty
    assert state.status == once_state.status
    assert book.cash == once_book.cash == D(1_000_000) - final.filled_qty * final.filled_avg_price
    assert book.position("AAPL").qty == final.filled_qty
    ids = [event.event_id for event in appended]
    assert len(ids) == len(set(ids)), "an event id was produced twice"


def test_a_request_too_old_to_send_is_refused_not_sent() -> None:
    requested = order_state("10", status=OrderStatus.REQUESTED)
    limit = timedelta(minutes=5)
    assert too_late_to_send(requested, T0 + timedelta(seconds=2), limit) is None
    assert too_late_to_send(requested, T0 + limit, limit) is None  # the limit itself is still in time
    refusal = too_late_to_send(requested, T0 + timedelta(hours=1), limit)
    assert refusal is not None and isinstance(refusal.data, OrderRejected)
    assert refusal.data.definite is False and refusal.data.at == T0 + timedelta(hours=1)
    assert "3600 s after its tick" in refusal.data.reason and "300 s" in refusal.data.reason
    assert fold(requested, [refusal]).status is OrderStatus.REJECTED
    # Sent already (or unknown: resolved by lookup, never refused for its age).
    for status in (OrderStatus.SUBMITTED, OrderStatus.UNKNOWN):
        assert too_late_to_send(order_state("10", status=status), T0 + timedelta(hours=1), limit) is None
    with pytest.raises(ValueError):
        too_late_to_send(requested, (T0 + timedelta(hours=1)).replace(tzinfo=None), limit)


def test_a_request_of_a_session_is_not_sent_after_its_close() -> None:
    """The broker would queue a day order sent after the close for the next open: a request decided in a
    session and reaching submission after its close is refused, however young; one decided outside any
    session (a manual tick at night) is left to the age limit."""
    requested = order_state("10", status=OrderStatus.REQUESTED)
    limit, close = timedelta(hours=2), T0 + timedelta(minutes=10)
    assert too_late_to_send(requested, close - timedelta(seconds=1), limit, close) is None
    refusal = too_late_to_send(requested, close + timedelta(seconds=1), limit, close)
    assert refusal is not None and isinstance(refusal.data, OrderRejected) and not refusal.data.definite
    assert "its session closed at" in refusal.data.reason
    # decided after that close (outside the session): only the age limit applies
    late = order_state("10", status=OrderStatus.REQUESTED, requested_at=close + timedelta(minutes=5))
    assert too_late_to_send(late, close + timedelta(minutes=6), limit, close) is None
