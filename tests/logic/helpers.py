"""The plain-value builders of the strategy tests, which live in ``tests/builders.py`` (shared by the
pure tests of every service)."""

from tests.builders import T0, D, bars_from_closes, order_state

__all__ = ["T0", "D", "bars_from_closes", "order_state"]
