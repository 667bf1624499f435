"""Strategies: the base class, the example crossover and the dotted-path loader."""

from core.strategy.base import IndicatorView, Strategy, StrategyContext, StrategyOutput

__all__ = ["IndicatorView", "Strategy", "StrategyContext", "StrategyOutput"]
