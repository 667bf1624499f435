"""The example strategy: a fast/slow simple-moving-average crossover on bars."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from core.indicators import RSI, SMA
from core.model import Bar, TargetPosition
from core.strategy.base import IndicatorView, Strategy, StrategyContext, StrategyOutput


class MovingAverageCross(Strategy):
    """Long when the fast SMA is above the slow one; flat (or short) when below.

    The target is sized from a dollar amount at the bar's close and emitted only
    when the signal changes, so a rejected or clamped order is not retried on
    every bar. RSI is computed for the operator's information only.

    ``stop_pct`` (optional): each position it opens is protected by a GTC stop at the
    broker that far from the average cost (``trailing_stop``: the stop trails the best
    price since entry). Stopped out, it stays flat until the signal changes again.
    """

    name: ClassVar[str] = "ma_cross"
    defaults: ClassVar[dict[str, Any]] = {
        "fast": 5,
        "slow": 20,
        "trade_dollars": 10_000.0,
        "allow_short": False,
        "rsi_period": 14,
        "stop_pct": None,
        "trailing_stop": False,
    }

    def __init__(self, symbols: Sequence[str], context: StrategyContext, **params: Any) -> None:
        super().__init__(symbols, context, **params)
        fast, slow = int(self.params["fast"]), int(self.params["slow"])
        if not 0 < fast < slow:
            raise ValueError(f"ma_cross needs 0 < fast < slow, got fast={fast} slow={slow}")
        if float(self.params["trade_dollars"]) <= 0:
            raise ValueError("ma_cross trade_dollars must be positive")
        stop_pct = self.params["stop_pct"]
        if stop_pct is not None and not 0 < float(stop_pct) <= 50:
            raise ValueError(f"ma_cross stop_pct must be in (0, 50], got {stop_pct}")
        self._stop_pct = None if stop_pct is None else float(stop_pct)
        self._fast = {s: SMA(fast) for s in self.symbols}
        self._slow = {s: SMA(slow) for s in self.symbols}
        self._rsi = {s: RSI(int(self.params["rsi_period"])) for s in self.symbols}
        self._signal: dict[str, str] = dict.fromkeys(self.symbols, "warming up")
        self._target: dict[str, int | None] = dict.fromkeys(self.symbols)

    def on_bar(self, bar: Bar) -> StrategyOutput:
        if bar.symbol not in self._fast:
            return None
        fast = self._fast[bar.symbol].update(bar.close)
        slow = self._slow[bar.symbol].update(bar.close)
        self._rsi[bar.symbol].update(bar.close)
        if fast is None or slow is None:
            return None
        if fast > slow:
            signal, direction = "long", 1
        elif fast < slow:
            signal, direction = ("short", -1) if self.params["allow_short"] else ("flat", 0)
        else:
            return None
        if signal == self._signal[bar.symbol]:
            return None
        self._signal[bar.symbol] = signal
        quantity = direction * math.floor(float(self.params["trade_dollars"]) / bar.close)
        self._target[bar.symbol] = quantity
        return TargetPosition(
            bar.symbol,
            quantity,
            f"fast SMA {fast:.4f} {'>' if direction > 0 else '<'} slow {slow:.4f}",
            stop_pct=self._stop_pct,
            trailing=bool(self.params["trailing_stop"]),
        )

    def indicator_view(self, symbol: str) -> IndicatorView:
        return IndicatorView(
            values={
                f"sma{self._fast[symbol].period}": self._fast[symbol].value,
                f"sma{self._slow[symbol].period}": self._slow[symbol].value,
                f"rsi{self._rsi[symbol].period}": self._rsi[symbol].value,
            },
            signal=self._signal[symbol],
            target=self._target[symbol],
        )
