"""Loading a portfolio's books from its stream, and appending to it with optimistic concurrency.

``portfolio-<portfolio_id>`` holds the portfolio's configuration (strategy service) and its book events
(FillApplied, PositionReconciled); the books are the fold ``evolve_book`` over the book events. Several
writers append to that stream (the strategy service, commands, the positions service), so every append
here is made at the version that was folded, and a concurrent change means: fold again, decide again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from eventstore import AppendResult, EventStore, NewEvent, WrongExpectedVersion
from services.core.events import registry
from services.model.accounting import Book
from services.model.events.positions import UNASSIGNED_PORTFOLIO
from services.model.ledger import evolve_book, unassigned_book
from services.model.streams import portfolio_stream

BOOK_EVENT_TYPES = frozenset({"PortfolioOpened", "FillApplied", "PositionReconciled"})
MAX_ATTEMPTS = 50


class PortfolioNotFound(LookupError):
    def __init__(self, portfolio_id: str) -> None:
        super().__init__(f"portfolio {portfolio_id!r} is not opened")
        self.portfolio_id = portfolio_id


class ConcurrentChanges(RuntimeError):
    """The stream kept changing under us for MAX_ATTEMPTS folds."""


async def load_book(store: EventStore, portfolio_id: str) -> tuple[Book | None, int]:
    """The portfolio's books and the stream's version (-1: no stream). The books are None before the
    portfolio's PortfolioOpened, except for the unassigned bucket, which exists implicitly (no cash)."""
    book: Book | None = unassigned_book() if portfolio_id == UNASSIGNED_PORTFOLIO else None
    version = -1
    async for recorded in store.read_stream(portfolio_stream(portfolio_id)):
        version = recorded.version
        if recorded.type in BOOK_EVENT_TYPES:
            book = evolve_book(book, registry.decode(recorded))
    return book, version


Decide = Callable[[Book, int], Sequence[NewEvent]]


async def append_to_portfolio(store: EventStore, portfolio_id: str, decide: Decide) -> AppendResult | None:
    """Fold the books, let ``decide(book, version)`` choose the events, append them at that version;
    on a concurrent change, start over. Returns None when ``decide`` chose nothing.

    ``decide`` must be pure and derive event ids from the cause: a retried decision then produces the
    same ids, and an event appended before (a redelivery) is an idempotent no-op in the store.
    Raises PortfolioNotFound when the portfolio was never opened.
    """
    stream = portfolio_stream(portfolio_id)
    for _ in range(MAX_ATTEMPTS):
        book, version = await load_book(store, portfolio_id)
        if book is None:
            raise PortfolioNotFound(portfolio_id)
        events = list(decide(book, version))
        if not events:
            return None
        try:
            return await store.append(stream, events, version)
        except WrongExpectedVersion:
            continue
    raise ConcurrentChanges(f"{stream}: could not append after {MAX_ATTEMPTS} concurrent changes")
