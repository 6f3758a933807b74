"""The Alpaca broker: the Broker protocol on alpaca-py (adapter.py), with its settings and live-trading gate
(settings.py), prepared REST clients (client.py), error mapping (errors.py), model conversions
(mapping.py) and trade-update stream (trade_updates.py).

What the rest of openbell takes from here: the adapter, its settings and the checks a process runs before
it may trade, and map_error.
"""

from services.broker.alpaca.adapter import AlpacaBroker
from services.broker.alpaca.errors import map_error
from services.broker.alpaca.settings import AlpacaSettings, check_live_gate, check_settings, load_alpaca_settings

__all__ = ["AlpacaBroker", "AlpacaSettings", "check_live_gate", "check_settings", "load_alpaca_settings", "map_error"]
