"""An order-heavy strategy for benchmarks and soak tests: it trades on every quote.

On each quote it asks for the opposite of what it holds: ``quantity`` shares when
flat, flat when holding. Execution keeps one working order per symbol, so every
quote that finds no order working sends a new one; quotes that arrive while the
last order is still on its way repeat the same target, which costs nothing.
It is deliberately not a trading idea: it exists to load the order path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from core.model import Quote, TargetPosition
from core.strategy.base import IndicatorView, Strategy, StrategyContext, StrategyOutput


class EveryQuote(Strategy):
    """Alternates each symbol's target between ``quantity`` shares and flat, quote by quote."""

    name: ClassVar[str] = "every_quote"
    defaults: ClassVar[dict[str, Any]] = {"quantity": 100}

    def __init__(self, symbols: Sequence[str], context: StrategyContext, **params: Any) -> None:
        super().__init__(symbols, context, **params)
        quantity = self.params["quantity"]
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity <= 0:
            raise ValueError(f"every_quote quantity must be a positive integer, got {quantity!r}")
        # Targets are immutable: build the two per symbol once instead of on every quote.
        self._long = {s: TargetPosition(s, quantity, "every quote: buy") for s in self.symbols}
        self._flat = {s: TargetPosition(s, 0, "every quote: flatten") for s in self.symbols}
        self._target: dict[str, int | None] = dict.fromkeys(self.symbols)

    def on_quote(self, quote: Quote) -> StrategyOutput:
        symbol = quote.symbol
        long = self._long.get(symbol)
        if long is None:
            return None
        target = self._flat[symbol] if self.context.position(symbol) else long
        self._target[symbol] = target.quantity
        return target

    def indicator_view(self, symbol: str) -> IndicatorView:
        target = self._target.get(symbol)
        signal = "" if target is None else ("buy" if target else "flatten")
        return IndicatorView(values={}, signal=signal, target=target)
