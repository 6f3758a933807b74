"""Where strategy kinds come from: the built-ins, the ``openbell.strategies`` entry point group of any
installed package, or a ``package.module:function`` path that the operator allowed.

Nothing is imported because a message named it: a ``module:function`` kind resolves only when it is in
``OPENBELL_STRATEGY_ALLOW`` (comma-separated ``package.module:function`` entries, or ``package.module:*``
for every function of one module), set in the environment of the processes that run strategies and of
the commands that attach them. Installing a package with an entry point is the other way to allow code:
both are the operator's acts, on the machine, never a command's.

A user strategy is a function ``(StrategyInput) -> Signal``. It may carry a pydantic model of its
parameters as a ``params_model`` attribute; parameters are then validated when the strategy is attached
(a bad value is refused before anything is stored), not only when it runs.

    # pyproject.toml of a user package
    [project.entry-points."openbell.strategies"]
    breakout = "my_strategies:breakout"
"""

from __future__ import annotations

import functools
import importlib
import os
import re
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

import msgspec
from pydantic import BaseModel

from services.strategy.strategies import (
    MomentumParams,
    MovingAverageCrossoverParams,
    RsiMeanReversionParams,
    StrategyFunction,
    momentum,
    moving_average_crossover,
    parse_parameters,
    rsi_mean_reversion,
)

ENTRY_POINT_GROUP = "openbell.strategies"
ALLOW_VARIABLE = "OPENBELL_STRATEGY_ALLOW"
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
_PATH = re.compile(f"{_DOTTED}:{_DOTTED}")
MAX_KIND_LENGTH = 200


class StrategyDef(msgspec.Struct, frozen=True):
    kind: str
    function: StrategyFunction
    params_model: type[BaseModel] | None = None

    def validate_parameters(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters as they will be stored (defaults filled in), or InvalidParameters."""
        if self.params_model is None:
            return dict(parameters)
        return parse_parameters(self.params_model, parameters, self.kind).model_dump(mode="json")


class UnknownStrategy(ValueError):
    pass


BUILTIN_STRATEGIES: Mapping[str, StrategyDef] = {
    "ma_crossover": StrategyDef("ma_crossover", moving_average_crossover, MovingAverageCrossoverParams),
    "rsi_mean_reversion": StrategyDef("rsi_mean_reversion", rsi_mean_reversion, RsiMeanReversionParams),
    "momentum": StrategyDef("momentum", momentum, MomentumParams),
}


def known_kinds() -> list[str]:
    """Every kind that resolves by name (built-ins and installed entry points), sorted."""
    return sorted(set(BUILTIN_STRATEGIES) | set(_entry_point_targets()))


def allowed_paths(value: str | None = None) -> frozenset[str]:
    """The ``module:function`` (and ``module:*``) entries the operator allowed (``OPENBELL_STRATEGY_ALLOW``)."""
    text = os.environ.get(ALLOW_VARIABLE, "") if value is None else value
    return frozenset(entry.strip() for entry in text.split(",") if entry.strip())


def is_allowed_path(kind: str, allowed: frozenset[str]) -> bool:
    module, _, _ = kind.partition(":")
    return kind in allowed or f"{module}:*" in allowed


def resolve_strategy(kind: str) -> StrategyDef:
    """The strategy of a kind: a built-in name, an entry point name, or an allowed ``module:function``.

    Anything else raises UnknownStrategy before anything is imported."""
    if not isinstance(kind, str) or len(kind) > MAX_KIND_LENGTH:
        raise UnknownStrategy(f"a strategy kind is a name of at most {MAX_KIND_LENGTH} characters")
    if kind in BUILTIN_STRATEGIES:
        return BUILTIN_STRATEGIES[kind]
    if kind in _entry_point_targets():
        return _resolve_installed(kind)
    if ":" in kind:
        if _PATH.fullmatch(kind) is None:
            raise UnknownStrategy(f"strategy kind {kind[:80]!r} is not a 'package.module:function' path")
        if not is_allowed_path(kind, allowed_paths()):
            raise UnknownStrategy(
                f"strategy kind {kind!r} is not allowed: the operator allows a 'package.module:function' kind"
                f" in {ALLOW_VARIABLE} or installs it as an {ENTRY_POINT_GROUP!r} entry point"
                f" (known kinds: {', '.join(known_kinds())})"
            )
        return _resolve_installed(kind)
    raise UnknownStrategy(
        f"unknown strategy kind {kind[:80]!r}: known kinds are {', '.join(known_kinds())}, "
        f"or a 'package.module:function' path allowed in {ALLOW_VARIABLE}"
    )


@functools.cache
def _resolve_installed(kind: str) -> StrategyDef:
    """An entry point or an allowed path, loaded once per process (the allow-list is checked first)."""
    target = _entry_point_targets().get(kind)
    if target is not None:
        return _definition(kind, target, _load_entry_point(kind))
    return _definition(kind, kind, _load_path(kind))


@functools.cache
def _entry_point_targets() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _load_entry_point(name: str) -> object:
    (entry_point,) = entry_points(group=ENTRY_POINT_GROUP, name=name)
    try:
        return entry_point.load()
    except Exception as exc:  # an entry point can fail in any way its package does
        raise UnknownStrategy(f"strategy {name!r} ({entry_point.value}) cannot be loaded: {exc}") from exc


def _load_path(path: str) -> object:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownStrategy(f"strategy {path!r}: cannot import module {module_name!r} ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - an allowed module may fail to import in any way its code does
        raise UnknownStrategy(f"strategy {path!r}: importing {module_name!r} failed ({type(exc).__name__})") from None
    found: object = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise UnknownStrategy(f"strategy {path!r}: module {module_name!r} has no {attribute!r}")
        found = getattr(found, part)
    return found


def _definition(kind: str, where: str, loaded: object) -> StrategyDef:
    if isinstance(loaded, StrategyDef):
        return msgspec.structs.replace(loaded, kind=kind)
    if not callable(loaded):
        raise UnknownStrategy(f"strategy {kind!r}: {where} is not a function")
    params_model = getattr(loaded, "params_model", None)
    if params_model is not None and not (isinstance(params_model, type) and issubclass(params_model, BaseModel)):
        raise UnknownStrategy(f"strategy {kind!r}: params_model of {where} is not a pydantic model")
    return StrategyDef(kind, loaded, params_model)  # type: ignore[arg-type]
