from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.alerts.conditions import (
    AlertCondition,
    AlertSpec,
    alert_created,
    check_alerts,
    condition_holds,
    evaluate,
    parse_alert_spec,
    spec_of,
    trigger,
)
from services.model.events.alerts import AlertTriggered, NotificationRaised
from services.strategy.config import ConfigError
from tests.builders import T0, D


def spec(condition: str, threshold: str, reference: str | None = None) -> AlertSpec:
    return parse_alert_spec(
        {"symbol": "AAPL", "condition": condition, "threshold": threshold, "reference_price": reference}
    )


def test_above_and_below_include_the_threshold() -> None:
    assert condition_holds(spec("above", "100"), D(100))
    assert not condition_holds(spec("above", "100"), D("99.99"))
    assert condition_holds(spec("below", "100"), D(100))
    assert not condition_holds(spec("below", "100"), D("100.01"))


def test_percent_change_fires_in_its_own_direction() -> None:
    up = spec("percent_change", "5", reference="200")
    assert condition_holds(up, D(210))
    assert not condition_holds(up, D("209.99"))
    assert not condition_holds(up, D(150))  # a fall is not a +5 % move
    down = spec("percent_change", "-5", reference="200")
    assert condition_holds(down, D(190))
    assert not condition_holds(down, D("190.01"))
    assert not condition_holds(down, D(300))


def test_an_alert_fires_once() -> None:
    alert = spec("above", "100")
    assert evaluate(alert, D(120), active=True)
    assert not evaluate(alert, D(120), active=False)
    first = trigger("alert-1", alert, D(120), T0)
    again = trigger("alert-1", alert, D(130), T0)
    assert [e.event_id for e in first] == [e.event_id for e in again]  # same ids: appended once
    assert [type(e.data) for e in first] == [AlertTriggered, NotificationRaised]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"symbol": "AAPL", "condition": "above", "threshold": "0"},
            "threshold of an above alert is a price and must be positive",
        ),
        ({"symbol": "AAPL", "condition": "below", "threshold": "-3"}, "must be positive"),
        ({"symbol": "AAPL", "condition": "percent_change", "threshold": "0", "reference_price": "1"}, "must not be 0"),
        ({"symbol": "AAPL", "condition": "percent_change", "threshold": "5"}, "reference_price is required"),
        (
            {"symbol": "AAPL", "condition": "crosses", "threshold": "5"},
            "condition: Input should be 'above', 'below' or 'percent_change'",
        ),
        ({"symbol": "aapl", "condition": "above", "threshold": "5"}, "symbol: 'aapl' is not a symbol"),
    ],
)
def test_invalid_alerts_are_refused_with_a_clear_message(data: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match="invalid alert") as error:
        parse_alert_spec(data)
    assert message in str(error.value)


def test_check_alerts_counts_and_reports_unpriced_symbols() -> None:
    active = {
        "a1": spec("above", "100"),
        "a2": spec("below", "50"),
        "a3": AlertSpec(symbol="MSFT", condition=AlertCondition.ABOVE, threshold=D(1)),
    }
    result = check_alerts(active, {"AAPL": D(120)}, T0)
    assert (result.alerts_checked, result.alerts_triggered, result.unpriced_symbols) == (2, 1, ("MSFT",))
    assert [e.data.alert_id for e in result.events if isinstance(e.data, AlertTriggered)] == ["a1"]


def test_a_stored_alert_reads_back_as_its_spec() -> None:
    alert = spec("percent_change", "-2.5", reference="80")
    assert spec_of(alert_created("a1", alert, T0).data) == alert


prices = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(100_000), places=2)


@given(threshold=prices, price=prices)
def test_above_and_below_agree_with_comparison(threshold: Decimal, price: Decimal) -> None:
    assert condition_holds(spec("above", str(threshold)), price) == (price >= threshold)
    assert condition_holds(spec("below", str(threshold)), price) == (price <= threshold)
    # At any price at least one of "above t" and "below t" holds; both only at t.
    both = condition_holds(spec("above", str(threshold)), price) and condition_holds(
        spec("below", str(threshold)), price
    )
    assert both == (price == threshold)


@given(
    reference=prices,
    price=prices,
    percent=st.decimals(min_value=Decimal(-99), max_value=Decimal(500), places=2).filter(lambda p: p != 0),
)
def test_percent_change_matches_the_relative_move(reference: Decimal, price: Decimal, percent: Decimal) -> None:
    alert = spec("percent_change", str(percent), reference=str(reference))
    move = (price - reference) / reference * 100
    expected = move >= percent if percent > 0 else move <= percent
    # The implementation compares without dividing; allow the division's last-digit rounding only.
    if abs(move - percent) > Decimal("1e-20"):
        assert condition_holds(alert, price) == expected
