"""Backtests: known bar patterns trade where they should, metrics by hand, files written."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import matplotlib.image
import pyarrow.parquet as pq
import pytest

from core.backtest import (
    BacktestOptions,
    FillAt,
    bar_end,
    bar_quotes,
    run_data,
    run_settings,
)
from core.backtest_report import compute_metrics, exposure, round_trips
from core.brokers.replay import ReplayVenue
from core.brokers.sim import SimVenueConfig
from core.clock import SimClock
from core.data_files import BarRecord, load_data
from core.model import (
    Fill,
    Order,
    OrderStatus,
    OrderStatusUpdate,
    OrderType,
    Quote,
    QuoteSource,
    Side,
)
from tests.helpers import settings
from tui.commands.backtest_cmd import parse_params, run_backtest

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
# Closes rise 100 → 109 over bars 0-9, then fall 108 → 99 over bars 10-19.
CLOSES = [100.0 + i for i in range(10)] + [108.0 - i for i in range(10)]


def open_of(i: int) -> float:
    return CLOSES[i] - 0.5  # distinct from every close, so a fill price names its bar


def write_bars(path: Path, closes: list[float] = CLOSES) -> Path:
    lines = ["timestamp,open,high,low,close,volume"]
    for i, close in enumerate(closes):
        ts = T0 + timedelta(minutes=i)
        o = close - 0.5
        lines.append(
            f"{ts.isoformat()},{o},{max(o, close) + 0.1},{min(o, close) - 0.1},{close},500"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def cross_settings(tmp_path: Path, **overrides: Any) -> Any:
    base: dict[str, Any] = {
        "strategy_params": {"fast": 2, "slow": 4, "trade_dollars": 1_000.0},
        "sim_commission_min": 0.0,
        "daily_loss_limit": 1e9,
    }
    base.update(overrides)
    return settings(tmp_path, **base)


async def backtest_bars(tmp_path: Path, fill_at: FillAt) -> Any:
    data = load_data(write_bars(tmp_path / "TEST.csv"))
    s = run_settings(cross_settings(tmp_path), data.symbols, bar_seconds=data.bar_seconds)
    options = BacktestOptions(commission_per_share=0.0, fill_at=fill_at, bar_spread_bps=0.0)
    return await run_data(s, data, options)


# ---------------------------------------------------------------------------- trading


async def test_rise_then_fall_buys_then_sells_at_the_next_bars_open(tmp_path: Path) -> None:
    # SMA(2) crosses above SMA(4) on bar 3 (102.5 > 101.5) and below on bar 11
    # (107.5 < 108): decisions at those bars' ends, fills at bars 4 and 12's opens.
    result = await backtest_bars(tmp_path, FillAt.NEXT_OPEN)
    fills = result.fills
    assert [(f.side, f.quantity, f.price) for f in fills] == [
        (Side.BUY, 9, open_of(4)),  # floor(1000 / close 103) = 9 shares
        (Side.SELL, 9, open_of(12)),
    ]
    assert [f.ts for f in fills] == [T0 + timedelta(minutes=4), T0 + timedelta(minutes=12)]
    assert result.final_equity == pytest.approx(100_000 + 9 * (open_of(12) - open_of(4)))
    assert [o.status for o in result.orders] == [OrderStatus.FILLED, OrderStatus.FILLED]
    assert result.bar_seconds == 60
    assert result.quotes_rejected == 0
    # one equity point at the start plus one per bar
    assert len(result.curve) == len(CLOSES) + 1
    assert result.curve.time(1) == T0 + timedelta(minutes=1)


async def test_fill_at_close_trades_the_decision_bars_close(tmp_path: Path) -> None:
    result = await backtest_bars(tmp_path, FillAt.CLOSE)
    assert [(f.side, f.quantity, f.price) for f in result.fills] == [
        (Side.BUY, 9, CLOSES[3]),
        (Side.SELL, 9, CLOSES[11]),
    ]
    assert result.final_equity == pytest.approx(100_000 + 9 * (CLOSES[11] - CLOSES[3]))


async def test_spread_and_commission_are_charged(tmp_path: Path) -> None:
    data = load_data(write_bars(tmp_path / "TEST.csv"))
    s = run_settings(cross_settings(tmp_path), data.symbols, bar_seconds=data.bar_seconds)
    options = BacktestOptions(commission_per_share=0.5, bar_spread_bps=20.0)
    result = await run_data(s, data, options)
    buy, sell = result.fills
    assert buy.price == pytest.approx(open_of(4) * 1.001)  # at the ask: +10 bp
    assert sell.price == pytest.approx(open_of(12) * 0.999)  # at the bid
    assert buy.commission == pytest.approx(4.5) and sell.commission == pytest.approx(4.5)


def write_ohlc(path: Path, bars: list[tuple[float, float, float, float]]) -> Path:
    lines = ["timestamp,open,high,low,close,volume"]
    for i, (o, h, low, c) in enumerate(bars):
        lines.append(f"{(T0 + timedelta(minutes=i)).isoformat()},{o},{h},{low},{c},500")
    path.write_text("\n".join(lines) + "\n")
    return path


async def backtest_with_stop(tmp_path: Path, bar_8: tuple[float, float, float, float]) -> Any:
    """Rising closes 100..107: the cross buys 9 at bar 4's open (103.5) with a 2% stop
    (101.43) at the broker; bar 8 is the test's; three flat bars follow."""
    bars = [(c - 0.5, c + 0.1, c - 0.6, c) for c in (100.0 + i for i in range(8))]
    bars += [bar_8] + [(107.0, 107.5, 106.5, 107.2)] * 3
    data = load_data(write_ohlc(tmp_path / "STOP.csv", bars))
    params = {"fast": 2, "slow": 4, "trade_dollars": 1_000.0, "stop_pct": 2.0}
    base = cross_settings(tmp_path, strategy_params=params)
    s = run_settings(base, data.symbols, bar_seconds=data.bar_seconds)
    options = BacktestOptions(commission_per_share=0.0, bar_spread_bps=1.0)
    return await run_data(s, data, options)


async def test_backtest_stop_inside_a_bars_range_fills_at_the_stop_price(tmp_path: Path) -> None:
    result = await backtest_with_stop(tmp_path, (108.0, 108.2, 100.0, 107.0))  # low 100
    buy, stop = result.fills[:2]
    assert (buy.side, buy.quantity) == (Side.BUY, 9)
    assert buy.price == pytest.approx(103.5 * 1.00005)  # the open's ask (1 bp spread)
    assert stop.client_order_id.endswith("-SL") and (stop.side, stop.quantity) == (Side.SELL, 9)
    assert stop.price == pytest.approx(103.5 * 0.98)  # the stop price, no spread
    # A down bar: the high at a third of the way, the low at two thirds.
    assert stop.ts == T0 + timedelta(minutes=8, seconds=40)


async def test_backtest_stop_a_bar_gapped_through_fills_at_the_bars_open(tmp_path: Path) -> None:
    result = await backtest_with_stop(tmp_path, (99.0, 99.5, 98.0, 99.2))  # opens below it
    stop = result.fills[1]
    assert stop.client_order_id.endswith("-SL") and (stop.side, stop.quantity) == (Side.SELL, 9)
    assert stop.price == pytest.approx(99.0)  # the bar's open, not the stop (101.43)
    assert stop.ts == T0 + timedelta(minutes=8)


def test_bar_quotes_trace_the_bar_inside_its_interval() -> None:
    up = BarRecord("X", T0, 10.0, 12.0, 9.0, 11.0, 0.0)
    quotes = bar_quotes(up, 60, 0.0)
    assert [q.mid for q in quotes] == [10.0, 9.0, 12.0, 11.0]  # low first on an up bar
    assert [q.ts for q in quotes] == [
        T0,
        T0 + timedelta(seconds=20),
        T0 + timedelta(seconds=40),
        T0 + timedelta(seconds=60) - timedelta(microseconds=1),
    ]
    down = BarRecord("X", T0, 11.0, 12.0, 9.0, 10.0, 0.0)
    assert [q.mid for q in bar_quotes(down, 60, 0.0)] == [11.0, 12.0, 9.0, 10.0]
    # A bar that does not start on the interval grid stays inside its interval.
    late = BarRecord("X", T0 + timedelta(hours=5), 1.0, 1.0, 1.0, 1.0, 0.0)
    day = bar_quotes(late, 86_400, 0.0)
    assert day[-1].ts == bar_end(late.start, 86_400) - timedelta(microseconds=1)
    assert day[-1].ts == datetime(2024, 1, 3, tzinfo=UTC) - timedelta(microseconds=1)


class _Listener:
    def __init__(self) -> None:
        self.quotes: list[Quote] = []
        self.fills: list[Fill] = []
        self.statuses: list[OrderStatusUpdate] = []

    def on_quote(self, quote: Quote) -> None:
        self.quotes.append(quote)

    def on_order_status(self, update: OrderStatusUpdate) -> None:
        self.statuses.append(update)

    def on_fill(self, fill: Fill) -> None:
        self.fills.append(fill)

    def on_broker_error(self, code: int, message: str, client_order_id: str | None) -> None:
        raise AssertionError(f"unexpected broker error {code}: {message}")

    def on_connection_changed(self, connected: bool, message: str) -> None:
        pass

    def on_feed_switched(self, symbol: str, source: QuoteSource, reason: str) -> None:
        pass


async def test_replay_venue_fills_against_replayed_bid_ask_and_displayed_size() -> None:
    clock = SimClock(T0)
    config = SimVenueConfig(("AAPL",), latency_ms=0.0, commission_min=0.0)
    venue = ReplayVenue(config, clock)
    listener = _Listener()
    venue.set_listener(listener)
    await venue.connect()
    venue.subscribe_quotes(["AAPL"])
    venue.publish(Quote("AAPL", T0, 100.00, 100.10, 300, 200))
    order = Order("T-1", "AAPL", Side.BUY, 500, OrderType.MARKET, T0)
    venue.place_order(order)
    assert venue.deliver_due() == 1
    assert [(f.quantity, f.price) for f in listener.fills] == [(200, 100.10)]  # displayed ask
    clock.set(T0 + timedelta(seconds=1))
    venue.publish(Quote("AAPL", clock.now(), 100.20, 100.30, 100, 0))  # size 0: depth unknown
    assert [(f.quantity, f.price) for f in listener.fills] == [(200, 100.10), (300, 100.30)]
    assert venue.positions() == {"AAPL": 500}
    # A malformed quote reaches the listener but never the book.
    venue.publish(Quote("AAPL", clock.now(), math.nan, 100.30))
    assert venue.mid("AAPL") == pytest.approx(100.25)
    assert len(listener.quotes) == 3


async def test_replay_venue_in_next_quote_mode_waits_for_the_next_quote() -> None:
    clock = SimClock(T0)
    venue = ReplayVenue(SimVenueConfig(("AAPL",), latency_ms=0.0), clock, match_on_arrival=False)
    listener = _Listener()
    venue.set_listener(listener)
    await venue.connect()
    venue.subscribe_quotes(["AAPL"])
    venue.publish(Quote("AAPL", T0, 50.0, 50.0))
    venue.place_order(Order("T-1", "AAPL", Side.SELL, 10, OrderType.MARKET, T0))
    venue.deliver_due()
    assert listener.fills == []
    assert listener.statuses[-1].status is OrderStatus.SUBMITTED
    venue.publish(Quote("AAPL", T0 + timedelta(minutes=1), 49.0, 49.0))
    assert [(f.side, f.price) for f in listener.fills] == [(Side.SELL, 49.0)]


async def test_replay_venue_rejects_orders_before_any_replayed_price() -> None:
    clock = SimClock(T0)
    venue = ReplayVenue(SimVenueConfig(("AAPL",), latency_ms=0.0), clock)
    listener = _Listener()
    venue.set_listener(listener)
    await venue.connect()
    venue.place_order(Order("T-1", "AAPL", Side.BUY, 1, OrderType.MARKET, T0))
    venue.deliver_due()
    assert listener.statuses[-1].status is OrderStatus.REJECTED
    assert "no market data" in listener.statuses[-1].message


# ---------------------------------------------------------------------------- metrics


def fill(side: Side, qty: int, price: float, ts: datetime, commission: float = 1.0) -> Fill:
    return Fill(f"E{ts.timestamp()}", "C", "X", side, qty, price, commission, ts)


def test_metrics_on_a_hand_checkable_curve() -> None:
    days = [T0 + timedelta(days=i) for i in range(5)]
    equity = [100.0, 110.0, 99.0, 121.0, 121.0]
    fills = [
        fill(Side.BUY, 10, 10.0, days[1]),
        fill(Side.SELL, 10, 12.0, days[3]),  # +20 - 2 commission: a win
    ]
    m = compute_metrics(days, equity, fills)
    assert m.total_return == pytest.approx(0.21)
    assert m.max_drawdown == pytest.approx(11.0 / 110.0)  # 110 → 99
    years = 4 / 365.25
    assert m.cagr == pytest.approx(1.21 ** (1 / years) - 1)
    returns = [0.1, -0.1, 0.22222222222222232, 0.0]
    mean = sum(returns) / 4
    sd = math.sqrt(sum((r - mean) ** 2 for r in returns) / 3)
    assert m.returns_per_year == pytest.approx(4 / years)  # = 365.25: daily points
    assert m.sharpe == pytest.approx(mean / sd * math.sqrt(365.25))
    assert m.exposure == pytest.approx(0.5)  # held days 1 → 3 of 0 → 4
    assert (m.round_trips, m.wins, m.win_rate) == (1, 1, 1.0)
    assert m.commissions == pytest.approx(2.0)
    assert m.fills == 2


def test_short_runs_have_no_cagr_and_flat_curves_no_sharpe() -> None:
    times = [T0 + timedelta(minutes=i) for i in range(3)]
    m = compute_metrics(times, [100.0, 100.0, 100.0], [])
    assert m.cagr is None
    assert m.sharpe is None
    assert m.max_drawdown == 0.0 and m.exposure == 0.0 and m.win_rate is None


def test_round_trips_split_a_flip_and_net_commissions() -> None:
    t = [T0 + timedelta(hours=i) for i in range(4)]
    trips = round_trips(
        [
            fill(Side.BUY, 10, 100.0, t[0], commission=1.0),
            fill(Side.SELL, 5, 90.0, t[1], commission=1.0),  # partial close: -50
            fill(Side.SELL, 15, 95.0, t[2], commission=3.0),  # closes 5 (-25), flips short 10
            fill(Side.BUY, 10, 96.0, t[3], commission=2.0),  # covers the short: -10
        ]
    )
    long, short = trips
    assert (long.direction, long.opened_at, long.closed_at) == (1, t[0], t[2])
    assert long.commissions == pytest.approx(1.0 + 1.0 + 1.0)  # 5/15 of the flip's 3.0
    assert long.pnl == pytest.approx(-75.0 - 3.0)
    assert (short.direction, short.max_quantity) == (-1, 10)
    assert short.pnl == pytest.approx(-10.0 - (2.0 + 2.0))
    assert not long.won and not short.won


def test_exposure_counts_any_open_position_until_the_end() -> None:
    t = [T0 + timedelta(hours=i) for i in range(10)]
    fills = [fill(Side.BUY, 1, 1.0, t[2]), fill(Side.SELL, 1, 1.0, t[4])]
    fills.append(Fill("E9", "C", "Y", Side.SELL, 1, 1.0, 0.0, t[6]))  # short Y to the end
    assert exposure(fills, t[0], t[8]) == pytest.approx((2 + 2) / 8)


# ---------------------------------------------------------------------------- the command


async def test_run_backtest_writes_parquet_files_and_a_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "bars"
    data_dir.mkdir()
    write_bars(data_dir / "AAA.csv")
    write_bars(data_dir / "BBB.csv", [c * 2 for c in CLOSES])
    out = tmp_path / "out"
    code = await run_backtest(
        cross_settings(tmp_path, strategy_params={}),
        data_dir,
        strategy="core.strategy.ma_cross:MovingAverageCross",
        params=parse_params(["fast=2", "slow=4", "trade_dollars=1000"]),
        cash=50_000.0,
        commission=0.01,
        fill_at="next-open",
        out_dir=out,
    )
    assert code == 0
    trades = pq.read_table(out / "trades.parquet").to_pylist()
    assert [(t["symbol"], t["side"], t["price"]) for t in trades if t["symbol"] == "AAA"] == [
        ("AAA", "BUY", pytest.approx(open_of(4) * 1.00005)),  # default spread: 1 bp
        ("AAA", "SELL", pytest.approx(open_of(12) * 0.99995)),
    ]
    assert {t["symbol"] for t in trades} == {"AAA", "BBB"}
    equity = pq.read_table(out / "equity.parquet")
    assert equity.column_names == ["ts", "equity", "gross_exposure", "drawdown"]
    assert equity.num_rows == len(CLOSES) + 1
    assert equity.column("equity")[0].as_py() == 50_000.0
    assert pq.read_table(out / "round_trips.parquet").num_rows == 2
    png = (out / "equity.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = matplotlib.image.imread(out / "equity.png")
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert len((out / "orders.jsonl").read_text().splitlines()) == 4
    printed = capsys.readouterr().out
    assert "Win rate" in printed and "Sharpe" in printed and "Max drawdown" in printed


async def test_run_backtest_reports_a_bad_file_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_bars(tmp_path / "AAA.csv")
    lines = path.read_text().splitlines()
    cells = lines[5].split(",")
    cells[4] = "nan"  # data row 5's close
    lines[5] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    code = await run_backtest(
        cross_settings(tmp_path),
        path,
        strategy=None,
        params={},
        cash=None,
        commission=None,
        fill_at="next-open",
        out_dir=tmp_path / "out",
    )
    assert code == 2
    err = capsys.readouterr().err
    assert f"{path}, row 5, column 'close'" in err
    assert not (tmp_path / "out").exists()


async def test_run_backtest_refuses_an_unknown_strategy_and_bad_params(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_bars(tmp_path / "AAA.csv")
    common: dict[str, Any] = {
        "params": {},
        "cash": None,
        "commission": None,
        "fill_at": "close",
        "out_dir": tmp_path / "out",
    }
    assert await run_backtest(cross_settings(tmp_path), path, strategy="nope:Nope", **common) == 2
    assert "cannot import module 'nope'" in capsys.readouterr().err
    common["params"] = {"fats": 3}
    assert await run_backtest(cross_settings(tmp_path), path, strategy=None, **common) == 2
    assert "fats" in capsys.readouterr().err
    with pytest.raises(ValueError, match="key=value"):
        parse_params(["fast"])
