"""Incremental technical indicators: O(1) amortized work per update.

Each indicator is fed one observation at a time (a tick's price or a bar's
close) and keeps only the state it needs, so a strategy can update hundreds of
symbols per bar without re-scanning history. Values follow TA-Lib exactly
(default "unstable period" 0, non-Metastock compatibility), including the index
at which the first value appears; ``tests/test_indicators.py`` uses TA-Lib as
the oracle.

Common interface:

* ``update(...) -> float | None`` — feed one observation, get the current value,
  or ``None`` while the indicator is still warming up.
* ``value`` — the latest value (``None`` during warm-up).
* ``ready`` — ``True`` once ``value`` is available.
* ``period`` — the look-back length given to the constructor.

Non-finite inputs (NaN, ±inf) raise ``ValueError`` *before* any state changes:
one NaN folded into a running sum would otherwise poison every later value,
whereas TA-Lib, recomputing from arrays, would recover once it left the window.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["ATR", "EMA", "RSI", "SMA", "BollingerBands"]

# How often (in multiples of the period) a rolling window recomputes its sums
# exactly. One O(period) pass every 64*period updates is 1/64 extra work per
# update (amortized O(1)) and caps accumulated rounding drift at what 64*period
# additions can produce, however long the process runs.
_RECOMPUTE_FACTOR = 64


def _check_period(period: int, minimum: int) -> int:
    # bool is an int subclass; SMA(True) is a bug, not a period of 1.
    if not isinstance(period, int) or isinstance(period, bool) or period < minimum:
        raise ValueError(f"period must be an integer >= {minimum}, got {period!r}")
    return period


def _check_finite(name: str, x: float) -> float:
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x!r}")
    return x


class _RollingWindow:
    """The last ``period`` values with their running sum (and sum of squares).

    Sums are kept of ``x - anchor`` rather than ``x``: prices sit far from zero
    while their spread within a window is small, so ``E[x²] - E[x]²`` on raw
    prices cancels most significant digits. Shifting by a nearby anchor keeps
    the deviations small, and makes a constant series give a variance of
    exactly 0. Every ``period * 64`` updates the sums are rebuilt with
    ``math.fsum`` (correctly rounded) and the anchor moves to the newest value,
    which bounds both rounding drift and how far prices can wander from the
    anchor.
    """

    __slots__ = (
        "_anchor",
        "_buf",
        "_recompute_every",
        "_since",
        "_sq",
        "_squares",
        "_sum",
        "period",
    )

    def __init__(self, period: int, *, squares: bool) -> None:
        self.period = period
        self._squares = squares
        self._buf: deque[float] = deque(maxlen=period)
        self._anchor = 0.0
        self._sum = 0.0
        self._sq = 0.0
        self._since = 0
        self._recompute_every = period * _RECOMPUTE_FACTOR

    @property
    def full(self) -> bool:
        return len(self._buf) == self.period

    def push(self, x: float) -> None:
        buf = self._buf
        if not buf:
            self._anchor = x
        anchor = self._anchor
        if len(buf) == self.period:
            # Same expression as when it was added, so it subtracts the very
            # float that was summed in.
            old = buf[0] - anchor
            self._sum -= old
            if self._squares:
                self._sq -= old * old
        buf.append(x)  # maxlen drops buf[0]
        d = x - anchor
        self._sum += d
        if self._squares:
            self._sq += d * d
        self._since += 1
        if self._since >= self._recompute_every:
            self._recompute()

    def _recompute(self) -> None:
        self._since = 0
        anchor = self._anchor = self._buf[-1]
        devs = [v - anchor for v in self._buf]
        self._sum = math.fsum(devs)
        if self._squares:
            self._sq = math.fsum(d * d for d in devs)

    def mean(self) -> float:
        return self._anchor + self._sum / len(self._buf)

    def pvariance(self) -> float:
        """Population variance (divisor ``n``), as TA-Lib's BBANDS/STDDEV use."""
        n = len(self._buf)
        mean_dev = self._sum / n
        var = self._sq / n - mean_dev * mean_dev
        # Rounding can push a (near-)zero variance slightly negative.
        return var if var > 0.0 else 0.0


class _Indicator:
    """What every indicator shares: the current value, None during warm-up."""

    __slots__ = ("_value", "period")

    def __init__(self, period: int, minimum: int) -> None:
        self.period: int = _check_period(period, minimum)
        self._value: float | None = None

    @property
    def value(self) -> float | None:
        return self._value

    @property
    def ready(self) -> bool:
        return self._value is not None


class SMA(_Indicator):
    """Simple moving average of the last ``period`` values (TA-Lib ``SMA``).

    The first value appears at the ``period``-th update.
    """

    __slots__ = ("_window",)

    def __init__(self, period: int) -> None:
        super().__init__(period, 1)
        self._window = _RollingWindow(period, squares=False)

    def update(self, x: float) -> float | None:
        self._window.push(_check_finite("x", x))
        if self._window.full:
            self._value = self._window.mean()
        return self._value


class EMA(_Indicator):
    """Exponential moving average with TA-Lib semantics (TA-Lib ``EMA``).

    ``alpha = 2 / (period + 1)``, seeded with the simple average of the first
    ``period`` values, so the first value appears at the ``period``-th update
    (seeding with the first value instead would disagree with TA-Lib for the
    whole series, decaying only slowly).
    """

    __slots__ = ("_alpha", "_count", "_seed_sum")

    def __init__(self, period: int) -> None:
        super().__init__(period, 1)
        self._alpha = 2.0 / (period + 1)
        self._count = 0
        self._seed_sum = 0.0

    def update(self, x: float) -> float | None:
        x = _check_finite("x", x)
        if self._value is not None:
            # TA-Lib's form: ((x - prev) * k) + prev.
            self._value += (x - self._value) * self._alpha
            return self._value
        self._count += 1
        self._seed_sum += x
        if self._count == self.period:
            self._value = self._seed_sum / self.period
        return self._value


class RSI(_Indicator):
    """Relative strength index with Wilder smoothing (TA-Lib ``RSI``).

    Needs ``period`` price changes, i.e. ``period + 1`` inputs: the first value
    appears at update number ``period + 1`` (index ``period``). The seed
    average gain/loss is the simple mean of the first ``period`` changes; after
    that ``avg = (avg * (period - 1) + change) / period``.

    When average gain and loss are both 0 (a flat series) the value is 0, as in
    TA-Lib (checked by experiment: this TA-Lib build tests for exact zero, so
    even changes of 1e-300 produce a real ratio). Only losses gives 0, only
    gains gives 100.
    """

    __slots__ = ("_avg_gain", "_avg_loss", "_count", "_prev")

    def __init__(self, period: int = 14) -> None:
        # TA-Lib rejects period 1 (a one-change "average" is not an oscillator).
        super().__init__(period, 2)
        self._prev: float | None = None
        self._count = 0  # number of price changes seen, capped at period
        self._avg_gain = 0.0  # running *sum* until seeded, then the average
        self._avg_loss = 0.0

    def update(self, x: float) -> float | None:
        x = _check_finite("x", x)
        prev, self._prev = self._prev, x
        if prev is None:
            return None
        change = x - prev
        gain = change if change > 0.0 else 0.0
        loss = -change if change < 0.0 else 0.0
        p = self.period
        if self._count < p:
            self._count += 1
            self._avg_gain += gain
            self._avg_loss += loss
            if self._count < p:
                return None
            self._avg_gain /= p
            self._avg_loss /= p
        else:
            self._avg_gain = (self._avg_gain * (p - 1) + gain) / p
            self._avg_loss = (self._avg_loss * (p - 1) + loss) / p
        total = self._avg_gain + self._avg_loss
        self._value = 100.0 * (self._avg_gain / total) if total != 0.0 else 0.0
        return self._value


class ATR:
    """Average true range with Wilder smoothing (TA-Lib ``ATR``).

    True range needs the previous close, so the first bar yields no TR; TRs
    exist from the second bar (index 1). The first ATR (index ``period``, i.e.
    update number ``period + 1``) is the simple mean of the TRs at indices
    1..period, then ``atr = (atr * (period - 1) + tr) / period``. With
    ``period == 1`` this is the true range itself, again as in TA-Lib.
    """

    __slots__ = ("_atr", "_count", "_prev_close", "_ready", "period")

    def __init__(self, period: int = 14) -> None:
        self.period: int = _check_period(period, 1)
        self._prev_close: float | None = None
        self._count = 0  # true ranges seen, capped at period
        self._atr = 0.0  # running *sum* of TR until seeded, then the average
        self._ready = False

    def update(self, high: float, low: float, close: float) -> float | None:
        high = _check_finite("high", high)
        low = _check_finite("low", low)
        close = _check_finite("close", close)
        prev_close, self._prev_close = self._prev_close, close
        if prev_close is None:
            return None
        tr = max(high - low, abs(prev_close - high), abs(prev_close - low))
        p = self.period
        if self._count < p:
            self._count += 1
            self._atr += tr
            if self._count < p:
                return None
            self._atr /= p
            self._ready = True
        else:
            self._atr = (self._atr * (p - 1) + tr) / p
        return self._atr

    @property
    def value(self) -> float | None:
        return self._atr if self._ready else None

    @property
    def ready(self) -> bool:
        return self._ready


class BollingerBands:
    """Bollinger Bands over an SMA (TA-Lib ``BBANDS`` with ``matype=0``).

    ``middle`` is the SMA of the last ``period`` values; ``upper``/``lower``
    are ``middle ± num_std * sigma`` where sigma is the *population* standard
    deviation of the window (divisor ``period``), as TA-Lib computes it.
    ``update`` returns the middle band.
    """

    __slots__ = ("_lower", "_middle", "_upper", "_window", "num_std", "period")

    def __init__(self, period: int = 20, num_std: float = 2.0) -> None:
        # TA-Lib rejects period 1: a one-value window has no spread.
        self.period: int = _check_period(period, 2)
        num_std = float(num_std)
        if not math.isfinite(num_std) or num_std < 0.0:
            raise ValueError(f"num_std must be finite and >= 0, got {num_std!r}")
        self.num_std: float = num_std
        self._window = _RollingWindow(period, squares=True)
        self._middle: float | None = None
        self._upper: float | None = None
        self._lower: float | None = None

    def update(self, x: float) -> float | None:
        window = self._window
        window.push(_check_finite("x", x))
        if window.full:
            middle = window.mean()
            width = self.num_std * math.sqrt(window.pvariance())
            self._middle = middle
            self._upper = middle + width
            self._lower = middle - width
        return self._middle

    @property
    def value(self) -> float | None:
        return self._middle

    @property
    def middle(self) -> float | None:
        return self._middle

    @property
    def upper(self) -> float | None:
        return self._upper

    @property
    def lower(self) -> float | None:
        return self._lower

    @property
    def ready(self) -> bool:
        return self._middle is not None
