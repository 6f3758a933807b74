import pytest

from services.strategy import plugins


@pytest.fixture(autouse=True)
def allow_sample_strategies(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user strategies of these tests are allowed the way an operator allows them."""
    monkeypatch.setenv(plugins.ALLOW_VARIABLE, "tests.strategy.sample_strategies:*")
