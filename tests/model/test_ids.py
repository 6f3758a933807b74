import re

from hypothesis import given
from hypothesis import strategies as st

from services.model.ids import CLIENT_ORDER_ID_MAX_LENGTH, client_order_id, is_openbell_client_order_id
from services.model.vocabulary import Side

# Alpaca accepts letters, digits and a few punctuation marks; ours must stay within the safe subset.
SAFE = re.compile(r"^[a-z0-9-]+$")


def test_known_value_is_stable_across_runs_and_versions() -> None:
    # Pinned: a change of the format would make a redelivered tick request a second order.
    assert client_order_id("growth", "strategy_execution@2025-03-03T14:30:00Z", "AAPL", Side.BUY) == (
        "ob-56663786d6b62186b98ea97f21660a980c837315"
    )


def test_each_part_changes_the_id() -> None:
    base = ("growth", "tick-1", "AAPL", Side.BUY)
    ids = {
        client_order_id(*base),
        client_order_id("value", *base[1:]),
        client_order_id(base[0], "tick-2", *base[2:]),
        client_order_id(*base[:2], "MSFT", base[3]),
        client_order_id(*base[:3], Side.SELL),
    }
    assert len(ids) == 5


def test_parts_cannot_be_shifted_into_each_other() -> None:
    assert client_order_id("ab", "c", "AAPL", "buy") != client_order_id("a", "bc", "AAPL", "buy")


def test_side_as_text_or_enum_and_symbol_case_give_the_same_id() -> None:
    assert client_order_id("p", "t", "aapl", "buy") == client_order_id("p", "t", "AAPL", Side.BUY)


@given(
    portfolio=st.text(min_size=1, max_size=200).filter(lambda s: "\x1f" not in s),
    tick=st.text(min_size=1, max_size=200).filter(lambda s: "\x1f" not in s),
    symbol=st.from_regex(r"[A-Z][A-Z.]{0,9}", fullmatch=True),
    side=st.sampled_from(Side),
)
def test_any_cause_gives_a_short_safe_deterministic_id(portfolio: str, tick: str, symbol: str, side: Side) -> None:
    value = client_order_id(portfolio, tick, symbol, side)
    assert len(value) <= CLIENT_ORDER_ID_MAX_LENGTH
    assert SAFE.match(value)
    assert is_openbell_client_order_id(value)
    assert value == client_order_id(portfolio, tick, symbol, side)


def test_foreign_ids_are_not_ours() -> None:
    assert not is_openbell_client_order_id("my-manual-order")
