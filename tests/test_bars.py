from datetime import UTC, datetime, timedelta

from core.bars import BarBuilder
from core.model import Bar, Quote

T0 = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


def quote(seconds: float, mid: float) -> Quote:
    return Quote("AAPL", T0 + timedelta(seconds=seconds), mid - 0.01, mid + 0.01)


def test_bars_aggregate_mids_per_interval() -> None:
    bars: list[Bar] = []
    builder = BarBuilder(10, bars.append)
    for s, mid in [(0, 10.0), (3, 12.0), (6, 9.0), (9.9, 11.0), (10, 20.0)]:
        builder.on_quote(quote(s, mid))
    assert len(bars) == 1
    bar = bars[0]
    assert (bar.open, bar.high, bar.low, bar.close, bar.ticks) == (10.0, 12.0, 9.0, 11.0, 4)
    assert bar.start == T0 and bar.end == T0 + timedelta(seconds=10)


def test_timer_closes_a_quiet_bar_on_the_clock() -> None:
    bars: list[Bar] = []
    builder = BarBuilder(10, bars.append)
    builder.on_quote(quote(1, 10.0))
    builder.close_due(T0 + timedelta(seconds=9.99))
    assert bars == []
    builder.close_due(T0 + timedelta(seconds=10))
    assert len(bars) == 1 and bars[0].close == 10.0


def test_intervals_without_quotes_make_no_bar() -> None:
    bars: list[Bar] = []
    builder = BarBuilder(10, bars.append)
    builder.on_quote(quote(1, 10.0))
    builder.on_quote(quote(45, 11.0))
    assert [b.start for b in bars] == [T0]
