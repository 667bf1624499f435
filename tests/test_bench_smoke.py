"""`trading-console bench` on a small run: the figures add up. No timing assertions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tui.commands.bench import BenchResult, bench_pipeline, print_pipeline

QUOTES = 20_000


def _check_consistent(r: BenchResult, db: Path) -> None:
    assert r.quotes == QUOTES
    assert r.quotes_accepted == QUOTES  # the sim venue publishes no malformed quotes here
    assert r.quote_rows_in_db == r.quotes_accepted  # every quote reached the file
    assert r.rows_dropped == 0
    assert 0 < r.loop_seconds <= r.seconds
    assert r.quotes_per_s == pytest.approx(r.quotes / r.seconds)
    assert 0 < r.quote_p50_us <= r.quote_p99_us
    assert r.quote_mean_us > 0
    assert 0 <= r.filled_orders <= r.orders
    assert r.submit_samples <= r.orders
    if r.submit_samples:
        assert r.submit_p50_us is not None and r.submit_p99_us is not None
        assert 0 < r.submit_p50_us <= r.submit_p99_us
    else:
        assert r.submit_p50_us is None and r.submit_p99_us is None
    assert r.peak_rss_mb > 0
    with sqlite3.connect(db) as conn:
        orders = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
        fills = conn.execute("SELECT count(*) FROM fills").fetchone()[0]
        bars = conn.execute("SELECT count(*) FROM bars").fetchone()[0]
    assert orders == r.orders  # each journaled before it was sent
    assert fills == r.fills
    assert bars == r.bars


async def test_bar_strategy_bench_figures_are_consistent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = await bench_pipeline(QUOTES, 3, data_dir=tmp_path)
    _check_consistent(r, tmp_path / "bench.db")
    # 20,000 quotes at 20/s over 3 symbols: 333 s of one-minute bars per symbol.
    assert r.bars == 3 * 5
    print_pipeline(r)
    out = capsys.readouterr().out
    assert "quotes/s" in out and "peak RSS" in out


async def test_order_heavy_bench_trades_on_quotes(tmp_path: Path) -> None:
    r = await bench_pipeline(QUOTES, 5, order_heavy=True, data_dir=tmp_path)
    _check_consistent(r, tmp_path / "bench.db")
    # Each step (250 ms, 5 quotes a symbol) sends at most one order per symbol.
    assert QUOTES // 25 <= r.orders <= QUOTES // 5
    assert r.submit_samples > 0.9 * r.orders  # nearly all of them decided on a quote
    # 10 shares never exceed the displayed size: one fill per filled order.
    assert r.fills == r.filled_orders


async def test_bench_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        await bench_pipeline(0, 5)
