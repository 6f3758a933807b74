from collections.abc import Iterator
from importlib.metadata import EntryPoint

import pytest

from services.strategy import plugins
from services.strategy.plugins import BUILTIN_STRATEGIES, UnknownStrategy, known_kinds, resolve_strategy
from services.strategy.strategies import InvalidParameters, moving_average_crossover
from tests.strategy import sample_strategies


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(plugins.ALLOW_VARIABLE, "tests.strategy.sample_strategies:*, tests.strategy.no_such_module:f")
    plugins._resolve_installed.cache_clear()
    plugins._entry_point_targets.cache_clear()
    yield
    plugins._resolve_installed.cache_clear()
    plugins._entry_point_targets.cache_clear()


def test_builtins_resolve_with_their_parameter_models() -> None:
    definition = resolve_strategy("ma_crossover")
    assert definition.function is moving_average_crossover
    assert definition.validate_parameters({}) == {"fast_window": 10, "slow_window": 30}
    assert set(BUILTIN_STRATEGIES) <= set(known_kinds())


def test_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(UnknownStrategy) as error:
        resolve_strategy("moving_average")
    message = str(error.value)
    assert "unknown strategy kind 'moving_average'" in message
    assert "ma_crossover, momentum, rsi_mean_reversion" in message


def test_module_function_path_loads_a_user_strategy_and_its_parameter_model() -> None:
    definition = resolve_strategy("tests.strategy.sample_strategies:always")
    assert definition.function is sample_strategies.always
    assert definition.params_model is sample_strategies.AlwaysParams
    with pytest.raises(InvalidParameters, match="strength"):
        definition.validate_parameters({"strength": 0})


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.strategy.no_such_module:f", "cannot import module"),
        ("tests.strategy.sample_strategies:missing", "has no 'missing'"),
        ("tests.strategy.sample_strategies:NOT_A_FUNCTION", "is not a function"),
    ],
)
def test_bad_paths_are_clear_errors(path: str, message: str) -> None:
    with pytest.raises(UnknownStrategy, match=message):
        resolve_strategy(path)


@pytest.mark.parametrize(
    "kind", ["os:system", "subprocess:run", "this:s", "sys:exit", "tests.strategy.sample_strategies"]
)
def test_a_path_the_operator_did_not_allow_is_refused_before_any_import(kind: str) -> None:
    import sys

    module = kind.partition(":")[0]
    was_loaded = module in sys.modules
    with pytest.raises(UnknownStrategy, match=r"not allowed|unknown strategy kind"):
        resolve_strategy(kind)
    assert (module in sys.modules) == was_loaded  # nothing imported because a command named it


def test_the_allow_list_names_functions_or_whole_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(plugins.ALLOW_VARIABLE, "tests.strategy.sample_strategies:always")
    assert resolve_strategy("tests.strategy.sample_strategies:always").function is sample_strategies.always
    with pytest.raises(UnknownStrategy, match="not allowed"):
        resolve_strategy("tests.strategy.sample_strategies:broken")
    with pytest.raises(UnknownStrategy, match=r"not a .package\.module:function. path"):
        resolve_strategy("tests.strategy.sample_strategies:always\n")


def test_entry_points_of_installed_packages_are_strategy_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = [EntryPoint("always_buy", "tests.strategy.sample_strategies:always", plugins.ENTRY_POINT_GROUP)]

    def fake_entry_points(*, group: str, name: str | None = None) -> list[EntryPoint]:
        assert group == "openbell.strategies"
        return [ep for ep in installed if name is None or ep.name == name]

    monkeypatch.setattr(plugins, "entry_points", fake_entry_points)
    assert "always_buy" in known_kinds()
    definition = resolve_strategy("always_buy")
    assert definition.kind == "always_buy"
    assert definition.function is sample_strategies.always
