"""The built-in simulator: a deterministic market (market.py), a pure order-lifecycle engine (engine.py),
an exchange calendar (calendar.py) and a paper broker persisted in PostgreSQL (broker.py)."""
