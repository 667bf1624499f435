"""Load a strategy class by dotted path so an operator's own module plugs in untouched."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from core.strategy.base import Strategy, StrategyContext


class StrategyLoadError(Exception):
    """The configured STRATEGY cannot be imported or built; the message says why."""


def load_strategy_class(path: str) -> type[Strategy]:
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StrategyLoadError(f"STRATEGY: cannot import module {module_name!r}: {exc}") from exc
    cls = getattr(module, attr, None)
    if cls is None:
        raise StrategyLoadError(f"STRATEGY: module {module_name!r} has no {attr!r}")
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise StrategyLoadError(f"STRATEGY: {path!r} is not a subclass of core.strategy.Strategy")
    return cls


def build_strategy(
    path: str, symbols: Sequence[str], context: StrategyContext, params: Mapping[str, Any]
) -> Strategy:
    cls = load_strategy_class(path)
    try:
        return cls(symbols, context, **params)
    except (TypeError, ValueError) as exc:
        raise StrategyLoadError(f"STRATEGY_PARAMS: {exc}") from exc
