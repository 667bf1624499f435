"""The Strategy base class every strategy (ours or the operator's) derives from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

from core.model import Bar, OrderIntent, Quote, TargetPosition

StrategyOutput = TargetPosition | OrderIntent | Sequence[TargetPosition | OrderIntent] | None


class StrategyContext(Protocol):
    """What a strategy may look at: its positions, the latest quotes and the clock."""

    def position(self, symbol: str) -> int: ...

    def latest_quote(self, symbol: str) -> Quote | None: ...

    def now(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class IndicatorView:
    """What the console's indicator pane shows for one symbol."""

    values: Mapping[str, float | None]
    signal: str
    target: int | None


class Strategy:
    """Override `on_bar` and/or `on_quote`; return a target position, order intents or None.

    Strategies keep their own state between calls and must not do I/O: they run
    synchronously on the hot path. Parameters arrive as keyword arguments from
    STRATEGY_PARAMS; declare defaults in ``defaults``.
    """

    name: ClassVar[str] = "strategy"
    defaults: ClassVar[Mapping[str, Any]] = {}
    # Whether the class overrides on_quote: set for every subclass as it is defined. The
    # quote path calls on_quote only when it is, so a bar strategy costs no call a quote.
    handles_quotes: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.handles_quotes = cls.on_quote is not Strategy.on_quote

    def __init__(self, symbols: Sequence[str], context: StrategyContext, **params: Any) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(
                f"unknown parameter(s) for {type(self).__name__}: {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(sorted(self.defaults)) or 'none'}"
            )
        self.symbols = tuple(symbols)
        self.context = context
        self.params: dict[str, Any] = {**self.defaults, **params}

    def on_quote(self, quote: Quote) -> StrategyOutput:
        return None

    def on_bar(self, bar: Bar) -> StrategyOutput:
        return None

    def on_stop(self) -> None:
        """Called once when the system stops; release anything held."""

    def indicator_view(self, symbol: str) -> IndicatorView:
        return IndicatorView(values={}, signal="", target=None)
