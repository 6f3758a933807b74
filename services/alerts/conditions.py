"""Price alerts: three conditions (above, below, percent change), validated, and evaluated against a price.

- ``above``: fires when the price is at or above ``threshold``;
- ``below``: fires when the price is at or below ``threshold``;
- ``percent_change``: fires when the move from ``reference_price`` (the price when the alert was
  created) reaches ``threshold`` percent IN ITS DIRECTION: ``+5`` fires at +5 % or more, ``-5`` at
  -5 % or less. (A move of either sign is two alerts, one each way.)

An alert fires once: ``evaluate`` is False for an inactive alert, and the shell makes it inactive with
the AlertTriggered event (whose id derives from the alert, so it is appended exactly once).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Self

import msgspec
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from eventstore import NewEvent
from services.core.events import new_event
from services.core.limits import fraction, money
from services.model.events.alerts import AlertCreated, AlertTriggered, NotificationRaised
from services.model.symbols import ConfigError, validate_name, validate_symbol
from services.model.vocabulary import require_aware

MAX_THRESHOLD = Decimal("1e9")  # a price (or a percent) no alert needs to exceed


class AlertCondition(StrEnum):
    ABOVE = "above"
    BELOW = "below"
    PERCENT_CHANGE = "percent_change"


class AlertSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    condition: AlertCondition
    # A price for above/below, a percent (e.g. -5 = -5 %) for percent_change.
    threshold: Decimal = fraction(ge=-100, le=MAX_THRESHOLD)
    reference_price: Decimal | None = money(default=None)  # required for percent_change: the price at creation
    portfolio_id: str | None = None  # whose notifications it raises (None: everyone's)

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, symbol: str) -> str:
        return validate_symbol(symbol)

    @field_validator("portfolio_id")
    @classmethod
    def _portfolio(cls, portfolio_id: str | None) -> str | None:
        return None if portfolio_id is None else validate_name(portfolio_id, "portfolio")

    @model_validator(mode="after")
    def _threshold_fits_condition(self) -> Self:
        if self.condition is AlertCondition.PERCENT_CHANGE:
            if self.threshold == 0:
                raise ValueError("threshold of a percent_change alert must not be 0 (e.g. 5 for +5 %, -5 for -5 %)")
            if self.reference_price is None:
                raise ValueError("reference_price is required for a percent_change alert")
            if self.reference_price <= 0:
                raise ValueError(f"reference_price must be positive, got {self.reference_price}")
        elif self.threshold <= 0:
            raise ValueError(
                f"threshold of an {self.condition} alert is a price and must be positive, got {self.threshold}"
            )
        return self


def parse_alert_spec(data: dict[str, Any]) -> AlertSpec:
    """An alert from a command's payload, or ConfigError with a one-line reason."""
    try:
        return AlertSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        raise ConfigError(f"invalid alert: {'; '.join(problems)}") from None


def condition_holds(spec: AlertSpec, price: Decimal) -> bool:
    """Whether the alert's condition holds at ``price`` (regardless of whether it already fired)."""
    if price <= 0:
        raise ValueError(f"price of {spec.symbol} must be positive, got {price}")
    match spec.condition:
        case AlertCondition.ABOVE:
            return price >= spec.threshold
        case AlertCondition.BELOW:
            return price <= spec.threshold
        case AlertCondition.PERCENT_CHANGE:
            assert spec.reference_price is not None
            # Compare price - reference with reference * threshold / 100: no division, exact.
            move = (price - spec.reference_price) * 100
            target = spec.reference_price * spec.threshold
            return move >= target if spec.threshold > 0 else move <= target


def evaluate(spec: AlertSpec, price: Decimal, *, active: bool = True) -> bool:
    """True when the alert fires now: active (it never fired) and its condition holds."""
    return active and condition_holds(spec, price)


def trigger(alert_id: str, spec: AlertSpec, price: Decimal, at: datetime) -> list[NewEvent]:
    """The events of an alert firing: AlertTriggered and its notification. Ids derive from the alert id
    alone, so however many checks see the condition, it fires once."""
    require_aware(at, "at")
    triggered = AlertTriggered(alert_id=alert_id, symbol=spec.symbol, price=price, at=at)
    title = f"{spec.symbol} alert: {describe(spec)}"
    notification = NotificationRaised(
        kind="alert",
        portfolio_id=spec.portfolio_id,
        title=title,
        body=f"{spec.symbol} at {price}{_actual_move(spec, price)} ({at.isoformat()})",
        ref=alert_id,
        at=at,
    )
    return [new_event(triggered, alert_id), new_event(notification, "alert", alert_id)]


def describe(spec: AlertSpec) -> str:
    match spec.condition:
        case AlertCondition.ABOVE:
            return f"price at or above {spec.threshold}"
        case AlertCondition.BELOW:
            return f"price at or below {spec.threshold}"
        case AlertCondition.PERCENT_CHANGE:
            direction = "or more" if spec.threshold > 0 else "or less"
            return f"move of {spec.threshold:+}% {direction} from {spec.reference_price}"


def _actual_move(spec: AlertSpec, price: Decimal) -> str:
    """``, +42.75% from 20`` for a percent_change alert (the move that fired it), else nothing."""
    if spec.condition is not AlertCondition.PERCENT_CHANGE or not spec.reference_price:
        return ""
    move = (price - spec.reference_price) / spec.reference_price * 100
    return f", {move:+.2f}% from {spec.reference_price}"


def alert_created(alert_id: str, spec: AlertSpec, at: datetime) -> NewEvent:
    created = AlertCreated(
        alert_id=alert_id,
        symbol=spec.symbol,
        condition=spec.condition.value,
        threshold=spec.threshold,
        reference_price=spec.reference_price,
        portfolio_id=spec.portfolio_id,
        at=at,
    )
    return new_event(created, alert_id)


def spec_of(created: AlertCreated) -> AlertSpec:
    """The spec of a stored alert (re-validated: the log only holds specs that were valid)."""
    return AlertSpec(
        symbol=created.symbol,
        condition=AlertCondition(created.condition),
        threshold=created.threshold,
        reference_price=created.reference_price,
        portfolio_id=created.portfolio_id,
    )


class AlertCheck(msgspec.Struct, frozen=True, kw_only=True):
    events: tuple[NewEvent, ...]
    alerts_checked: int
    alerts_triggered: int
    unpriced_symbols: tuple[str, ...]  # active alerts that could not be checked (reported, not skipped silently)


def check_alerts(active: Mapping[str, AlertSpec], prices: Mapping[str, Decimal], at: datetime) -> AlertCheck:
    """One alert_price_check run over the active alerts (alert id -> spec) at the tick's prices."""
    events: list[NewEvent] = []
    checked = 0
    unpriced: set[str] = set()
    triggered = 0
    for alert_id, spec in sorted(active.items()):
        price = prices.get(spec.symbol)
        if price is None:
            unpriced.add(spec.symbol)
            continue
        checked += 1
        if evaluate(spec, price):
            triggered += 1
            events.extend(trigger(alert_id, spec, price, at))
    return AlertCheck(
        events=tuple(events),
        alerts_checked=checked,
        alerts_triggered=triggered,
        unpriced_symbols=tuple(sorted(unpriced)),
    )
