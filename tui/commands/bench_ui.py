"""UI benchmark: the real console, headless at 120x40, on a live-clock sim venue.

Answers "does the UI starve the core?" with three figures measured while the
panes render: the cost of each refresh tick's pane updates, event-loop lag
(a probe that sleeps 10 ms and records how late it wakes) and quote->order
latency (strategy target to order handed to the broker). Printing is left to
the command line; this returns the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
from pathlib import Path
from time import perf_counter
from typing import Any

from core.brokers.factory import sim_venue_config
from core.brokers.sim import SimVenue
from core.clock import LiveClock
from core.config import load_settings
from core.events import OrderSubmitted, TargetChanged
from core.system import TradingSystem
from tui.console.app import TradingConsoleApp
from tui.console.widgets.base import DiffTable

PROBE_SECONDS = 0.010
WARMUP_SECONDS = 1.0  # app start-up and first layout are not steady-state frames


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; NaN when nothing was measured."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def bench_settings(data_dir: Path, per_symbol_rate: float, symbols: int, **extra: Any) -> Any:
    names = ",".join(f"S{i:02d}" for i in range(1, symbols + 1))
    values: dict[str, Any] = {
        "symbols": names,
        "sim_quotes_per_second": per_symbol_rate,
        # Fast bars and short SMAs so the strategy trades within seconds.
        "bar_seconds": 1,
        "strategy_params": {"fast": 2, "slow": 5, "trade_dollars": 2_000.0},
        "max_orders_per_minute": 10_000,
        "daily_loss_limit": 1e9,
        "data_dir": data_dir,
        "stop_file": data_dir / "STOP",
        "record_quotes": False,
        "sim_latency_ms": 5,
    }
    values.update(extra)
    return load_settings(env_file=None, **values)


async def bench_ui(
    quotes_per_second_total: float, symbols: int = 20, seconds: float = 10.0
) -> dict[str, float]:
    """Run the console headless for ``seconds``; return frame, loop-lag and latency figures (ms)."""
    with tempfile.TemporaryDirectory(prefix="tc-bench-ui-") as tmp:
        s = bench_settings(Path(tmp), quotes_per_second_total / symbols, symbols)
        clock = LiveClock()
        venue = SimVenue(sim_venue_config(s), clock)
        system = TradingSystem(s, venue, clock)

        target_at: dict[str, float] = {}
        latencies_ms: list[float] = []

        def on_target(event: TargetChanged) -> None:
            target_at[event.target.symbol] = perf_counter()

        def on_submitted(event: OrderSubmitted) -> None:
            started = target_at.pop(event.order.symbol, None)
            if started is not None:
                latencies_ms.append((perf_counter() - started) * 1000.0)

        system.bus.subscribe(TargetChanged, on_target)
        system.bus.subscribe(OrderSubmitted, on_submitted)

        lags_ms: list[float] = []

        async def probe() -> None:
            while True:
                before = perf_counter()
                await asyncio.sleep(PROBE_SECONDS)
                lags_ms.append(max(0.0, perf_counter() - before - PROBE_SECONDS) * 1000.0)

        app = TradingConsoleApp(system)
        async with app.run_test(headless=True, size=(120, 40)):
            await asyncio.sleep(WARMUP_SECONDS)
            app.frame_costs_ms.clear()
            quotes_before = system.snapshot().quotes_accepted
            probe_task = asyncio.create_task(probe())
            started = perf_counter()
            await asyncio.sleep(seconds)
            elapsed = perf_counter() - started
            probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe_task
            quotes = system.snapshot().quotes_accepted - quotes_before
            frames = list(app.frame_costs_ms)
            writes = sum(table.cell_writes for table in app.query(DiffTable))
            await system.stop("benchmark done")

    return {
        "quotes_per_second": quotes / elapsed,
        "frames": float(len(frames)),
        "frame_ms_p50": statistics.median(frames) if frames else float("nan"),
        "frame_ms_p99": percentile(frames, 99),
        "loop_lag_ms_p50": percentile(lags_ms, 50),
        "loop_lag_ms_p99": percentile(lags_ms, 99),
        "quote_to_order_ms_p50": percentile(latencies_ms, 50),
        "quote_to_order_ms_p99": percentile(latencies_ms, 99),
        "orders": float(len(latencies_ms)),
        "cell_writes": float(writes),
    }


def main() -> None:
    """`python -m tui.commands.bench_ui`: both runs the issue asks for, printed."""
    from loguru import logger

    logger.remove()  # a log line per order on stderr would be measured too
    for total in (80.0, 2_000.0):
        figures = asyncio.run(bench_ui(total))
        print(f"UI bench, 20 symbols, {total:g} quotes/s total, 120x40 headless:")
        for key, value in figures.items():
            print(f"  {key:<24} {value:10.2f}")


if __name__ == "__main__":
    main()
