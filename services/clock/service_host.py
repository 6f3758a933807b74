"""Hosting of the clock service (``openbell serve clock``): the real-time clock loop as a background task.

In a virtual (simulated-time) host the real-time clock does not run: the virtual clock
(:class:`services.clock.virtual.VirtualClock`) drives the ticks instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING

from services.broker import reports_exchange_calendar
from services.clock.calendar_check import BrokerCalendarDay, CalendarSource
from services.clock.service import ClockService
from services.core.host import ServiceDefinition

if TYPE_CHECKING:
    from services.core.host import ServiceContext


class _BrokerCalendar:
    """The trading broker's calendar, created on first use (only for a broker with an exchange calendar of
    its own: ``reports_exchange_calendar``)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.name = ctx.settings.broker

    async def get_calendar(self, start: date, end: date) -> Sequence[BrokerCalendarDay]:
        broker = await self.ctx.broker()
        return await broker.get_calendar(start, end)


async def setup(ctx: ServiceContext) -> None:
    if ctx.virtual:
        return
    source: CalendarSource | None = _BrokerCalendar(ctx) if reports_exchange_calendar(ctx.settings.broker) else None
    # Ticks are published as the clock, the one NATS role allowed to (README, "Security").
    nc = await ctx.rt.connect_as("clock", "openbell-clock")
    clock = ClockService(ctx.rt.store, nc.jetstream(), ctx.rt.subjects, calendar_source=source)
    ctx.background(clock.run(ctx.stop), name="clock")


# The clock consumes no ticks: it emits every job type's ticks (services/core/jobs/types.py, SPECS).
SERVICE = ServiceDefinition(name="clock", setup=setup, nats_role="clock")
