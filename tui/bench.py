"""`trading-console bench`: figures, printed, never asserted.

Core: the quote path (validation → marks → bars → strategy → risk → order) measured per quote
on the simulated venue and a simulated clock, so the figure is CPU cost alone.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from core.brokers.factory import sim_venue_config
from core.brokers.sim import SimVenue
from core.clock import SimClock
from core.config import load_settings
from core.model import Fill, OrderStatusUpdate, Quote, QuoteSource
from core.simulation import run_simulated
from core.system import TradingSystem


class _TimedListener:
    """Sits between the venue and the system and times the synchronous quote path."""

    def __init__(self, system: TradingSystem) -> None:
        self._system = system
        self.samples: list[float] = []

    def on_quote(self, quote: Quote) -> None:
        start = time.perf_counter()
        self._system.on_quote(quote)
        self.samples.append(time.perf_counter() - start)

    def on_order_status(self, update: OrderStatusUpdate) -> None:
        self._system.on_order_status(update)

    def on_fill(self, fill: Fill) -> None:
        self._system.on_fill(fill)

    def on_broker_error(self, code: int, message: str, client_order_id: str | None) -> None:
        self._system.on_broker_error(code, message, client_order_id)

    def on_connection_changed(self, connected: bool, message: str) -> None:
        self._system.on_connection_changed(connected, message)

    def on_feed_switched(self, symbol: str, source: QuoteSource, reason: str) -> None:
        self._system.on_feed_switched(symbol, source, reason)


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench_core(
    symbols: int = 20, seconds: float = 300.0, per_symbol_qps: float = 20.0
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            env_file=None,
            symbols=",".join(f"S{i:02d}" for i in range(1, symbols + 1)),
            bar_seconds=1,
            strategy_params={"fast": 2, "slow": 5},
            sim_quotes_per_second=per_symbol_qps,
            daily_loss_limit=1e12,
            max_orders_per_minute=10_000,
            data_dir=Path(tmp),
            stop_file=Path(tmp) / "STOP",
        )
        clock = SimClock()
        venue = SimVenue(sim_venue_config(settings), clock)
        system = TradingSystem(settings, venue, clock)
        timed = _TimedListener(system)
        venue.set_listener(timed)
        await system.start(drive_broker=False)
        wall = time.perf_counter()
        quotes = await run_simulated(system, venue, clock, timedelta(seconds=seconds))
        wall = time.perf_counter() - wall
        await system.stop("bench")
    samples = timed.samples
    return {
        "quotes": quotes,
        "orders": len(system.execution.orders),
        "quote_path_p50_us": _pct(samples, 0.50) * 1e6,
        "quote_path_p99_us": _pct(samples, 0.99) * 1e6,
        "quote_path_mean_us": statistics.fmean(samples) * 1e6,
        "replay_quotes_per_s": quotes / wall,
    }


def print_core(figures: dict[str, Any]) -> None:
    print("core quote path (sim venue, simulated clock, 20 symbols):")
    print(f"  quotes {figures['quotes']:,}  orders {figures['orders']:,}")
    print(
        f"  per quote: p50 {figures['quote_path_p50_us']:.1f} µs  "
        f"p99 {figures['quote_path_p99_us']:.1f} µs  mean {figures['quote_path_mean_us']:.1f} µs"
    )
    print(f"  simulated replay incl. venue: {figures['replay_quotes_per_s']:,.0f} quotes/s")


def print_ui(total_qps: float, figures: dict[str, float]) -> None:
    print(f"console at 120x40, 20 symbols, {total_qps:,.0f} quotes/s in total:")
    for key, value in figures.items():
        print(f"  {key}: {value:,.2f}")
