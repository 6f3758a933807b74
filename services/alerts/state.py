"""The state of one alert, folded from its stream ``alert-<alert_id>`` (pure)."""

from __future__ import annotations

import re
from enum import StrEnum

import msgspec

from services.alerts.conditions import AlertSpec, spec_of
from services.model.events.alerts import AlertCreated, AlertRemoved, AlertTriggered, NotificationRaised
from services.model.text import shown

ALERT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # fullmatch: a trailing newline is not an id


class AlertStatus(StrEnum):
    ACTIVE = "active"
    TRIGGERED = "triggered"
    REMOVED = "removed"


class AlertState(msgspec.Struct, frozen=True, kw_only=True):
    alert_id: str
    spec: AlertSpec
    status: AlertStatus = AlertStatus.ACTIVE

    @property
    def active(self) -> bool:
        return self.status is AlertStatus.ACTIVE


AlertEvent = AlertCreated | AlertTriggered | AlertRemoved | NotificationRaised


def evolve_alert(state: AlertState | None, event: AlertEvent) -> AlertState | None:
    match event:
        case AlertCreated():
            return AlertState(alert_id=event.alert_id, spec=spec_of(event)) if state is None else state
        case AlertTriggered() if state is not None and state.active:
            return msgspec.structs.replace(state, status=AlertStatus.TRIGGERED)
        case AlertRemoved() if state is not None and state.status is not AlertStatus.REMOVED:
            return msgspec.structs.replace(state, status=AlertStatus.REMOVED)
    return state


def validate_alert_id(alert_id: object) -> str:
    if not isinstance(alert_id, str) or not ALERT_ID.fullmatch(alert_id):
        raise ValueError(f"invalid alert_id {shown(alert_id)}: 1-64 letters, digits, '_' or '-'")
    return alert_id
