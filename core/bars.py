"""Time bars built from validated quotes on the injected clock.

A bar covers [start, start + interval) aligned to the epoch, built from quote
mids. It closes when a quote of a later interval arrives or when the clock
passes its end (`close_due`, called from the system timer), so a quiet symbol
still gets its bar on time. Intervals without quotes produce no bar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core.model import Bar, Quote

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class _OpenBar:
    start: datetime
    open: float
    high: float
    low: float
    close: float
    ticks: int

    def add(self, price: float) -> None:
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.ticks += 1


class BarBuilder:
    def __init__(self, interval_seconds: int, on_bar: Callable[[Bar], None]) -> None:
        if interval_seconds <= 0:
            raise ValueError("bar interval must be positive")
        self._interval = timedelta(seconds=interval_seconds)
        self._on_bar = on_bar
        self._open: dict[str, _OpenBar] = {}

    def _bucket_start(self, ts: datetime) -> datetime:
        return ts - (ts - _EPOCH) % self._interval

    def on_quote(self, quote: Quote) -> None:
        start = self._bucket_start(quote.ts)
        price = quote.mid
        current = self._open.get(quote.symbol)
        if current is not None and current.start != start:
            self._emit(quote.symbol, current)
            current = None
        if current is None:
            self._open[quote.symbol] = _OpenBar(start, price, price, price, price, 1)
        else:
            current.add(price)

    def close_due(self, now: datetime) -> None:
        """Close every open bar whose interval has ended by ``now``."""
        for symbol, bar in list(self._open.items()):
            if bar.start + self._interval <= now:
                self._emit(symbol, bar)

    def _emit(self, symbol: str, bar: _OpenBar) -> None:
        del self._open[symbol]
        self._on_bar(
            Bar(
                symbol=symbol,
                start=bar.start,
                end=bar.start + self._interval,
                open=bar.open,
                high=bar.high,
                low=bar.low,
                close=bar.close,
                ticks=bar.ticks,
            )
        )
