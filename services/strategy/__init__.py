"""The strategy service: portfolios and their strategies, and the strategy_execution job that turns a
tick into orders.

Its modules, from the wiring down to the pure decision:

- ``service``: ``setup(ctx)``, the wiring: the tick's job, the fan-out's work items, the commands.
- ``execution``: the strategy_execution job: the tick's portfolios, evaluated here or fanned out; totals.
- ``evaluation``: one portfolio at one tick: read what it needs, decide, append the result atomically.
- ``market_data``: the bars kept across ticks (only the new ones are fetched).
- ``tick_controls``: what every portfolio of a tick shares, loaded once per tick (other services' read models
  through their owners' queries, ``ServiceContext.reads``).
- ``portfolio``: a portfolio as the fold of its stream, and the global halt.
- ``decide``: ``decide_portfolio``, pure: signals, sizing, risk checks -> events.
- ``strategies``, ``plugins``, ``sizing``, ``risk``, ``config``: the pure parts it is made of.
- ``commands`` (the operator's commands, also called by the command line and the web app),
  ``command_handler`` (their NATS request/reply), ``projection`` (its read models), ``definition`` (what it
  provides to the host), ``cli``.
"""
