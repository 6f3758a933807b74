from datetime import timedelta

from services.broker import models as broker
from services.broker.views import order_view, position_view, quote_view
from services.model.events.orders import OrderFilled, OrderSubmitted
from services.model.market import BrokerStatus
from services.orders.lifecycle import OrderStatus, apply_broker_order
from tests.builders import T0, D, order_state


def broker_order(status: broker.OrderStatus, filled: str, avg: str | None) -> broker.Order:
    return broker.Order(
        id="broker-1",
        client_order_id="ob-" + "a" * 40,
        symbol="AAPL",
        side=broker.OrderSide.BUY,
        type=broker.OrderType.MARKET,
        qty=D(10),
        limit_price=None,
        time_in_force=broker.TimeInForce.DAY,
        status=status,
        filled_qty=D(filled),
        filled_avg_price=None if avg is None else D(avg),
        submitted_at=T0,
        updated_at=T0 + timedelta(minutes=2),
        filled_at=T0 + timedelta(minutes=1) if D(filled) > 0 else None,
    )


def test_a_filled_broker_order_becomes_a_fill_at_its_fill_time() -> None:
    view = order_view(broker_order(broker.OrderStatus.FILLED, "10", "99.5"))
    assert (view.status, view.updated_at) == (BrokerStatus.FILLED, T0 + timedelta(minutes=1))
    events = apply_broker_order(order_state("10", status=OrderStatus.REQUESTED), view)
    assert [type(e.data) for e in events] == [OrderSubmitted, OrderFilled]


def test_open_statuses_stay_open_and_an_empty_fill_has_no_price() -> None:
    for status in (broker.OrderStatus.NEW, broker.OrderStatus.PENDING_CANCEL, broker.OrderStatus.DONE_FOR_DAY):
        view = order_view(broker_order(status, "0", "0"))
        assert view.status is BrokerStatus.OPEN
        assert view.filled_avg_price is None


def test_positions_and_quotes() -> None:
    position = broker.Position(
        symbol="AAPL",
        qty=D(-3),
        avg_entry_price=D(10),
        cost_basis=D(-30),
        market_value=None,
        current_price=None,
        unrealized_pl=None,
    )
    assert position_view(position).qty == D(-3)
    quote = broker.Quote(symbol="AAPL", bid_price=D(0), ask_price=D(11), bid_size=D(0), ask_size=D(1), timestamp=T0)
    assert quote_view(quote).bid is None  # no bid is not a bid of 0
