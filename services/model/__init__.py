"""The shared domain model: the vocabulary, events, stream names and market types every service speaks.

It imports nothing from the services (only ``eventstore`` and third-party libraries), so any service may
import it, and no service needs another to talk about an order, a fill or a portfolio.
"""
