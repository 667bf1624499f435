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


def test_the_timer_closes_each_quiet_bar_at_its_own_end() -> None:
    # AAPL's bar is closed by its own next quote, MSFT's only by the clock: the timer's
    # shortcut (no open bar ends before ...) must not skip either.
    bars: list[Bar] = []
    builder = BarBuilder(10, bars.append)
    builder.on_quote(quote(1, 10.0))
    builder.on_quote(Quote("MSFT", T0 + timedelta(seconds=2), 50.0, 50.02))
    builder.on_quote(quote(12, 11.0))  # closes AAPL's first bar, opens one ending at 20 s
    assert [(b.symbol, b.start) for b in bars] == [("AAPL", T0)]
    builder.close_due(T0 + timedelta(seconds=10))
    assert [(b.symbol, b.start) for b in bars] == [("AAPL", T0), ("MSFT", T0)]
    builder.close_due(T0 + timedelta(seconds=19.99))
    assert len(bars) == 2
    builder.close_due(T0 + timedelta(seconds=20))
    assert [(b.symbol, b.start) for b in bars][-1] == ("AAPL", T0 + timedelta(seconds=10))
    builder.close_due(T0 + timedelta(seconds=100))  # nothing open: nothing to close
    assert len(bars) == 3
