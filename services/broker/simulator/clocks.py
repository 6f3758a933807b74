"""The simulator's clocks: ManualClock (simulated time that moves only when told to, as the virtual clock
drives it) and the wall clock (a live demo).

A SimBroker reads its time from whichever it is given; the service host drives a ManualClock too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.broker.models import utc


class ManualClock:
    """Simulated time that only moves when told to (the virtual clock drives it)."""

    def __init__(self, start: datetime) -> None:
        self._now = utc(start)

    def __call__(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        moment = utc(moment)
        if moment < self._now:
            raise ValueError("simulated time never goes backwards")
        self._now = moment

    def advance(self, delta: timedelta) -> datetime:
        self.set(self._now + delta)
        return self._now


def wall_clock() -> datetime:
    return datetime.now(UTC)
