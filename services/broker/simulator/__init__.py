"""The built-in simulator: a deterministic market (market.py), a pure order-lifecycle engine (engine.py),
an exchange calendar (calendar.py) and a paper broker (broker.py) persisted in PostgreSQL (storage.py),
driven by a clock of its own (clocks.py) and failing on request (faults.py)."""

from services.broker.simulator.broker import SimBroker, SimConfig
from services.broker.simulator.clocks import ManualClock, wall_clock
from services.broker.simulator.faults import SimFaults

__all__ = ["ManualClock", "SimBroker", "SimConfig", "SimFaults", "wall_clock"]
