"""A local fake Alpaca (trading + market data REST and the trade_updates websocket) for tests and benches."""

from tests.fake_alpaca.server import FakeAlpaca, Fault

__all__ = ["FakeAlpaca", "Fault"]
