from datetime import UTC, datetime

import pytest

from core.model import Fill, Side
from core.portfolio import Portfolio

T = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


def fill(side: Side, qty: int, price: float, commission: float = 1.0, n: int = 0) -> Fill:
    return Fill(f"E{n}-{side}-{qty}-{price}", "C1", "AAPL", side, qty, price, commission, T)


def test_average_cost_accumulates_on_adds() -> None:
    p = Portfolio(100_000)
    p.apply_fill(fill(Side.BUY, 100, 10.0, n=1))
    p.apply_fill(fill(Side.BUY, 300, 12.0, n=2))
    pos = p.position("AAPL")
    assert pos.quantity == 400
    assert pos.avg_cost == pytest.approx((100 * 10 + 300 * 12) / 400)
    assert pos.realized_pnl == 0


def test_reduction_realizes_and_keeps_cost() -> None:
    p = Portfolio(100_000)
    p.apply_fill(fill(Side.BUY, 100, 10.0, n=1))
    realized = p.apply_fill(fill(Side.SELL, 40, 11.5, n=2))
    assert realized == pytest.approx(40 * 1.5)
    assert p.position("AAPL").avg_cost == pytest.approx(10.0)
    assert p.position("AAPL").quantity == 60


def test_flip_realizes_closed_part_and_reopens_at_fill_price() -> None:
    p = Portfolio(100_000)
    p.apply_fill(fill(Side.BUY, 100, 10.0, n=1))
    realized = p.apply_fill(fill(Side.SELL, 150, 9.0, n=2))
    assert realized == pytest.approx(-100.0)
    pos = p.position("AAPL")
    assert pos.quantity == -50
    assert pos.avg_cost == pytest.approx(9.0)
    p.mark("AAPL", 8.0)
    assert pos.unrealized_pnl == pytest.approx(50.0)


def test_equity_identity_and_daily_pnl() -> None:
    p = Portfolio(50_000)
    p.apply_fill(fill(Side.BUY, 200, 50.0, commission=1.0, n=1))
    p.mark("AAPL", 51.0)
    p.apply_fill(fill(Side.SELL, 50, 52.0, commission=1.0, n=2))
    p.mark("AAPL", 49.0)
    s = p.summary()
    assert p.equity == pytest.approx(p.cash + 150 * 49.0)
    assert s.total == pytest.approx(p.equity - 50_000)
    assert s.realized + s.unrealized - s.commissions == pytest.approx(p.equity - 50_000)
    assert s.commissions == pytest.approx(2.0)


def test_peak_and_drawdown_track_equity() -> None:
    p = Portfolio(10_000)
    p.apply_fill(fill(Side.BUY, 100, 10.0, commission=0.0, n=1))
    p.mark("AAPL", 20.0)  # equity 11_000
    p.mark("AAPL", 9.0)  # equity 9_900
    s = p.summary()
    assert s.peak_equity == pytest.approx(11_000)
    assert s.drawdown_pct == pytest.approx((11_000 - 9_900) / 11_000 * 100)


def test_new_day_resets_daily_figures_but_not_positions() -> None:
    p = Portfolio(10_000)
    p.apply_fill(fill(Side.BUY, 100, 10.0, n=1))
    p.mark("AAPL", 12.0)
    p.start_new_day()
    s = p.summary()
    assert s.total == 0 and s.realized == 0 and s.commissions == 0
    p.mark("AAPL", 13.0)
    assert p.summary().total == pytest.approx(100.0)
    assert p.position("AAPL").quantity == 100
