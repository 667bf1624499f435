"""Incremental indicators against TA-Lib as the oracle.

Every index of a long seeded random walk is compared: where TA-Lib returns NaN
(warm-up) the indicator must return ``None``, elsewhere the values must agree
to 1e-9 (relative or absolute).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np
import pytest
import talib

from core.indicators import ATR, EMA, RSI, SMA, BollingerBands

N = 12_000
SEED = 20240611
PERIODS = [2, 5, 14, 30]
TOL = 1e-9


def _walk(n: int = N, seed: int = SEED) -> np.ndarray:
    """Geometric random walk starting at 100 (stays positive, hovers near 100)."""
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))


def _ohlc(n: int = N, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """High/low/close with high >= close >= low, and gaps so |H - prevC| can win."""
    rng = np.random.default_rng(seed + 1)
    close = _walk(n, seed)
    high = close + np.abs(rng.normal(0.0, 0.5, n))
    low = close - np.abs(rng.normal(0.0, 0.5, n))
    return high, low, close


def _assert_matches(name: str, got: Sequence[float | None], expected: np.ndarray) -> None:
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        if math.isnan(e):
            assert g is None, f"{name}[{i}]: expected warm-up None, got {g!r}"
        else:
            assert g is not None, f"{name}[{i}]: got None, TA-Lib has {e!r}"
            assert math.isclose(g, float(e), rel_tol=TOL, abs_tol=TOL), (
                f"{name}[{i}]: {g!r} != TA-Lib {e!r}"
            )


def _run_single(ind: SMA | EMA | RSI, xs: np.ndarray) -> list[float | None]:
    out: list[float | None] = []
    for x in xs:
        v = ind.update(float(x))
        assert v == ind.value
        assert ind.ready is (v is not None)
        out.append(v)
    return out


@pytest.mark.parametrize("period", [1, *PERIODS])
def test_sma_matches_talib(period: int) -> None:
    xs = _walk()
    ind = SMA(period)
    assert ind.period == period
    _assert_matches(f"SMA({period})", _run_single(ind, xs), talib.SMA(xs, timeperiod=period))


@pytest.mark.parametrize("period", [1, *PERIODS])
def test_ema_matches_talib(period: int) -> None:
    xs = _walk()
    ind = EMA(period)
    assert ind.period == period
    _assert_matches(f"EMA({period})", _run_single(ind, xs), talib.EMA(xs, timeperiod=period))


@pytest.mark.parametrize("period", PERIODS)
def test_rsi_matches_talib(period: int) -> None:
    xs = _walk()
    ind = RSI(period)
    assert ind.period == period
    _assert_matches(f"RSI({period})", _run_single(ind, xs), talib.RSI(xs, timeperiod=period))


def test_rsi_default_period_matches_talib_on_rounded_prices() -> None:
    # Prices on a 0.01 tick grid produce exact zero changes, exercising gain == 0
    # and loss == 0 steps that a continuous walk never hits.
    xs = np.round(_walk(), 2)
    ind = RSI()
    assert ind.period == 14
    _assert_matches("RSI(14)", _run_single(ind, xs), talib.RSI(xs))


@pytest.mark.parametrize("period", [1, *PERIODS])
def test_atr_matches_talib(period: int) -> None:
    high, low, close = _ohlc()
    assert np.all(high >= close) and np.all(close >= low)
    ind = ATR(period)
    assert ind.period == period
    got: list[float | None] = []
    for h, lo, c in zip(high, low, close, strict=True):
        v = ind.update(float(h), float(lo), float(c))
        assert v == ind.value
        assert ind.ready is (v is not None)
        got.append(v)
    expected = talib.ATR(high, low, close, timeperiod=period)
    _assert_matches(f"ATR({period})", got, expected)


@pytest.mark.parametrize("num_std", [2.0, 1.0, 2.5])
@pytest.mark.parametrize("period", PERIODS)
def test_bbands_matches_talib(period: int, num_std: float) -> None:
    xs = _walk()
    ind = BollingerBands(period, num_std)
    assert ind.period == period
    uppers: list[float | None] = []
    middles: list[float | None] = []
    lowers: list[float | None] = []
    for x in xs:
        v = ind.update(float(x))
        assert v == ind.middle == ind.value
        assert ind.ready is (v is not None)
        uppers.append(ind.upper)
        middles.append(ind.middle)
        lowers.append(ind.lower)
    up, mid, lo = talib.BBANDS(
        xs, timeperiod=period, nbdevup=num_std, nbdevdn=num_std, matype=talib.MA_Type.SMA
    )
    _assert_matches(f"BB({period}).upper", uppers, up)
    _assert_matches(f"BB({period}).middle", middles, mid)
    _assert_matches(f"BB({period}).lower", lowers, lo)


def test_bbands_default_args() -> None:
    xs = _walk(500)
    ind = BollingerBands()
    assert ind.period == 20 and ind.num_std == 2.0
    got = [ind.update(float(x)) for x in xs]
    _assert_matches("BB().middle", got, talib.BBANDS(xs)[1])


def test_bbands_constant_series_has_zero_width() -> None:
    xs = np.full(50, 0.1)
    ind = BollingerBands(3)
    uppers: list[float | None] = []
    lowers: list[float | None] = []
    for x in xs:
        ind.update(float(x))
        uppers.append(ind.upper)
        lowers.append(ind.lower)
        if ind.ready:
            # A constant window has no spread: exactly, not just within tolerance.
            assert ind.upper == ind.middle == ind.lower == 0.1
    up, _, lo = talib.BBANDS(xs, timeperiod=3)
    _assert_matches("BB const upper", uppers, up)
    _assert_matches("BB const lower", lowers, lo)


# --- long runs: no drift from the running sums --------------------------------


def test_sma_and_bbands_do_not_drift_over_long_runs() -> None:
    """300k updates far from zero: compare with exactly computed window stats.

    The window is re-summed only every ``period * 64`` updates, so this checks
    the running sums in between as well as the re-anchoring. The reference is
    independent of TA-Lib (whose own running sums are not exact).
    """
    period = 7
    n = 300_000
    rng = np.random.default_rng(SEED + 7)
    xs = (10_000.0 + np.cumsum(rng.normal(0.0, 0.25, n))).tolist()
    sma = SMA(period)
    bb = BollingerBands(period, 2.0)
    for i, x in enumerate(xs):
        sma.update(x)
        bb.update(x)
        if i >= period - 1 and (i % 9_973 == 0 or i >= n - 3 * period):
            window = xs[i - period + 1 : i + 1]
            mean = math.fsum(window) / period
            assert sma.value is not None and bb.upper is not None and bb.lower is not None
            assert math.isclose(sma.value, mean, rel_tol=1e-12, abs_tol=1e-12)
            sigma = statistics.pstdev(window)
            half_width = (bb.upper - bb.lower) / 2.0
            assert math.isclose(half_width, 2.0 * sigma, rel_tol=1e-7, abs_tol=1e-9), (i,)


# --- explicit edge cases -------------------------------------------------------


@pytest.mark.parametrize("period", [2, 3, 14])
def test_rsi_constant_series_matches_talib(period: int) -> None:
    xs = np.full(40, 42.0)
    _assert_matches("RSI const", _run_single(RSI(period), xs), talib.RSI(xs, timeperiod=period))


@pytest.mark.parametrize(
    "xs",
    [
        np.arange(1.0, 41.0),  # strictly rising: only gains
        np.arange(40.0, 0.0, -1.0),  # strictly falling: only losses
        np.concatenate([np.arange(1.0, 21.0), np.full(20, 20.0)]),  # rise then flat
        np.concatenate([np.full(20, 5.0), np.arange(5.0, 25.0)]),  # flat then rise
        np.array([0.0, 1e-300] * 20),  # tiny but non-zero changes
    ],
    ids=["rising", "falling", "rise-then-flat", "flat-then-rise", "tiny-changes"],
)
@pytest.mark.parametrize("period", [2, 5, 14])
def test_rsi_degenerate_series_match_talib(xs: np.ndarray, period: int) -> None:
    expected = talib.RSI(xs, timeperiod=period)
    _assert_matches("RSI", _run_single(RSI(period), xs), expected)


def test_rsi_rising_series_is_100_and_constant_is_0() -> None:
    # Spelled out as well, so a change in TA-Lib's behaviour is noticed here.
    rising = RSI(3)
    out = [rising.update(float(x)) for x in range(10)]
    assert out[:3] == [None, None, None]
    assert out[3:] == [100.0] * 7
    assert talib.RSI(np.arange(10.0), timeperiod=3)[3] == 100.0
    flat = RSI(3)
    assert [flat.update(7.0) for _ in range(5)][3:] == [0.0, 0.0]


@pytest.mark.parametrize(
    ("factory", "minimum", "talib_call"),
    [
        (SMA, 1, lambda xs, p: talib.SMA(xs, timeperiod=p)),
        (EMA, 1, lambda xs, p: talib.EMA(xs, timeperiod=p)),
        (RSI, 2, lambda xs, p: talib.RSI(xs, timeperiod=p)),
        (ATR, 1, lambda xs, p: talib.ATR(xs, xs, xs, timeperiod=p)),
        (BollingerBands, 2, lambda xs, p: talib.BBANDS(xs, timeperiod=p)),
    ],
    ids=["SMA", "EMA", "RSI", "ATR", "BBANDS"],
)
def test_invalid_periods(factory: type, minimum: int, talib_call: object) -> None:
    xs = np.arange(1.0, 20.0)
    assert callable(talib_call)
    for bad in range(-1, minimum):
        with pytest.raises(ValueError):
            factory(bad)
        # Our minimum is TA-Lib's minimum.
        with pytest.raises(Exception, match="Bad Parameter"):
            talib_call(xs, bad)
    talib_call(xs, minimum)
    factory(minimum)
    for bad_type in (2.5, "14", True, None):
        with pytest.raises(ValueError):
            factory(bad_type)


@pytest.mark.parametrize("num_std", [-1.0, math.nan, math.inf])
def test_bbands_rejects_bad_num_std(num_std: float) -> None:
    with pytest.raises(ValueError):
        BollingerBands(20, num_std)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_input_rejected_without_corrupting_state(bad: float) -> None:
    xs = _walk(200)
    inds: list[SMA | EMA | RSI | BollingerBands] = [SMA(5), EMA(5), RSI(5), BollingerBands(5)]
    ref: list[SMA | EMA | RSI | BollingerBands] = [SMA(5), EMA(5), RSI(5), BollingerBands(5)]
    atr, atr_ref = ATR(5), ATR(5)
    for i, x in enumerate(xs):
        x = float(x)
        if i % 37 == 3:
            for ind in inds:
                with pytest.raises(ValueError):
                    ind.update(bad)
            for args in ((bad, x, x), (x, bad, x), (x, x, bad)):
                with pytest.raises(ValueError):
                    atr.update(*args)
        for ind, r in zip(inds, ref, strict=True):
            assert ind.update(x) == r.update(x)
        assert atr.update(x + 1, x - 1, x) == atr_ref.update(x + 1, x - 1, x)


def test_warm_up_lengths() -> None:
    """First value at: SMA/EMA/BB update #period, RSI/ATR update #period + 1."""
    p = 4
    sma, ema, bb, rsi, atr = SMA(p), EMA(p), BollingerBands(p), RSI(p), ATR(p)
    for i in range(1, p + 2):
        x = float(i % 3)
        sma.update(x)
        ema.update(x)
        bb.update(x)
        rsi.update(x)
        atr.update(x + 1, x - 1, x)
        assert sma.ready is ema.ready is bb.ready is (i >= p)
        assert rsi.ready is atr.ready is (i >= p + 1)
        assert (bb.upper is None) is (bb.lower is None) is (i < p)
