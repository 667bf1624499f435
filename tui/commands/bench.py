"""`trading-console bench`: figures, printed, never asserted.

Pipeline: seeded synthetic quotes from the simulated venue, streamed (generated
step by step, never built up front), through the whole core on a simulated
clock: validation → marks → bars → strategy → risk → order → sim venue → fills
→ portfolio, with the recorder writing every quote, bar, order and fill into a
real SQLite file and journaling each order before it is sent. Headless, as fast
as the CPU allows.

Figures:
- quotes/s: quotes generated, processed and *written*, divided by the wall time
  from the first quote until the recorder's last flush committed;
- per-quote processing: the synchronous work the system does for one quote
  (``TradingSystem.on_quote``: validation, bus, recorder row, marks, bars,
  strategy, risk, order creation), timed around each call;
- quote → order submit: for quotes whose processing created an order, from the
  start of that quote's processing until the order was journaled and handed to
  the venue (``OrderSubmitted``), matched per symbol (one working order each);
- peak RSS of the process (``getrusage``).
"""

from __future__ import annotations

import asyncio
import math
import resource
import sqlite3
import tempfile
import time
from array import array
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import numpy as np

from core.brokers.factory import sim_venue_config
from core.brokers.sim import SimVenue
from core.bus import EventBus
from core.clock import SimClock
from core.config import load_settings
from core.events import BarClosed, OrderSubmitted
from core.model import Fill, OrderStatusUpdate, Quote, QuoteSource
from core.simulation import run_simulated
from core.system import TradingSystem
from storage.database import Database
from storage.recorder import Recorder
from storage.writer import WriterProcess
from tui.heap import freeze_startup_heap

BAR_STRATEGY = "core.strategy.ma_cross:MovingAverageCross"
ORDER_HEAVY_STRATEGY = "core.strategy.every_quote:EveryQuote"
BAR_SECONDS = 60  # one-minute bars, as in the NautilusTrader comparison
QUOTES_PER_SYMBOL_PER_SECOND = 20.0
# The simulated clock moves like the live timer does: venue quotes and order events
# due by then, then the system's timer work, then the sender task.
STEP = timedelta(milliseconds=250)


@dataclass(frozen=True, slots=True)
class BenchResult:
    strategy: str
    symbols: int
    quotes: int
    quotes_accepted: int
    seconds: float  # first quote until the last row is committed
    loop_seconds: float  # first quote until the last quote was processed and sent
    quotes_per_s: float
    quote_p50_us: float
    quote_p99_us: float
    quote_mean_us: float
    submit_p50_us: float | None
    submit_p99_us: float | None
    submit_samples: int
    orders: int
    filled_orders: int
    fills: int  # executions: an order larger than the displayed size fills in parts
    bars: int
    rows_written: int
    rows_dropped: int
    quote_rows_in_db: int
    peak_rss_mb: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _TimedListener:
    """Sits between the venue and the system: times each quote and notes which made orders."""

    def __init__(self, system: TradingSystem) -> None:
        self._system = system
        self._execution = system.execution
        self.samples = array("q")  # ns per quote: 8 bytes each, no objects
        self._append_sample = self.samples.append
        self._system_on_quote = system.pipeline.on_quote
        self.triggered_at: dict[str, int] = {}  # symbol -> perf_counter_ns of its order's quote
        self.submit_samples = array("q")
        self.bars = 0
        system.bus.subscribe(OrderSubmitted, self._on_submitted)
        system.bus.subscribe(BarClosed, self._on_bar)

    def on_quote(self, quote: Quote) -> None:
        # Timing costs are part of the measured throughput: bound methods, no lookups.
        execution = self._execution
        orders = execution.orders_created
        start = perf_counter_ns()
        self._system_on_quote(quote)
        end = perf_counter_ns()
        self._append_sample(end - start)
        if execution.orders_created != orders:
            self.triggered_at[quote.symbol] = start

    def _on_submitted(self, event: OrderSubmitted) -> None:
        start = self.triggered_at.pop(event.order.symbol, None)
        if start is not None:
            self.submit_samples.append(time.perf_counter_ns() - start)

    def _on_bar(self, event: BarClosed) -> None:
        self.bars += 1

    def on_order_status(self, update: OrderStatusUpdate) -> None:
        self._system.pipeline.on_order_status(update)

    def on_fill(self, fill: Fill) -> None:
        self._system.pipeline.on_fill(fill)

    def on_broker_error(self, code: int, message: str, client_order_id: str | None) -> None:
        self._system.pipeline.on_broker_error(code, message, client_order_id)

    def on_connection_changed(self, connected: bool, message: str) -> None:
        self._system.pipeline.on_connection_changed(connected, message)

    def on_feed_switched(self, symbol: str, source: QuoteSource, reason: str) -> None:
        self._system.pipeline.on_feed_switched(symbol, source, reason)


def _percentiles_us(samples: array[int], *qs: float) -> list[float]:
    values = np.frombuffer(samples, dtype=np.int64)
    # One call for all: each call partitions its own copy of the samples.
    return [float(v) / 1000.0 for v in np.percentile(values, [q * 100.0 for q in qs])]


def peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _count_quote_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM quotes").fetchone()[0])


async def bench_pipeline(
    quotes: int = 1_000_000,
    symbols: int = 5,
    *,
    order_heavy: bool = False,
    data_dir: Path | None = None,
) -> BenchResult:
    """Replay ``quotes`` seeded synthetic quotes over ``symbols`` symbols through the core.

    ``order_heavy`` swaps the moving-average cross on one-minute bars for a strategy
    that asks for a trade on every quote. The SQLite file goes to a temporary
    directory unless ``data_dir`` is given.
    """
    if quotes <= 0 or symbols <= 0:
        raise ValueError("quotes and symbols must be positive")
    if data_dir is not None:
        return await _bench_in(data_dir, quotes, symbols, order_heavy)
    with tempfile.TemporaryDirectory(prefix="tc-bench-") as tmp:
        return await _bench_in(Path(tmp), quotes, symbols, order_heavy)


async def _bench_in(data_dir: Path, quotes: int, symbols: int, order_heavy: bool) -> BenchResult:
    settings = load_settings(
        env_file=None,
        symbols=",".join(f"S{i:03d}" for i in range(1, symbols + 1)),
        bar_seconds=BAR_SECONDS,
        strategy=ORDER_HEAVY_STRATEGY if order_heavy else BAR_STRATEGY,
        strategy_params={"quantity": 10} if order_heavy else {"fast": 5, "slow": 20},
        sim_quotes_per_second=QUOTES_PER_SYMBOL_PER_SECOND,
        # The breaker and the order-rate limit would stop the order flow being measured
        # (the order-heavy strategy pays commissions on every round trip).
        daily_loss_limit=1e12,
        # ... and with the default cash the commissions would leave too little buying power.
        sim_starting_cash=1e9,
        max_orders_per_minute=1_000_000_000,
        data_dir=data_dir,
        database_file=data_dir / "bench.db",
        stop_file=data_dir / "STOP",
    )
    clock = SimClock()
    venue = SimVenue(sim_venue_config(settings), clock)
    database = await Database.open(settings.database_path)
    bus = EventBus()
    writer = WriterProcess(settings.database_path)
    recorder = Recorder(database, bus, record_quotes=True, writer=writer)
    system = TradingSystem(settings, venue, clock, journal=recorder, bus=bus)
    timed = _TimedListener(system)
    venue.set_listener(timed)
    recorder_task = asyncio.create_task(recorder.run())
    try:
        await system.start(drive_broker=False)
        freeze_startup_heap()  # as the console does once trading has started
        wall = time.perf_counter()
        # Exactly ``quotes`` slots are due by the end: slot j is at (j + 1) / rate
        # (rounded up to the clock's microsecond, never to the next slot).
        rate = QUOTES_PER_SYMBOL_PER_SECOND * len(settings.symbols)
        end = clock.now() + timedelta(microseconds=math.ceil(quotes * 1_000_000 / rate))
        # The replay driver: every order a step decided on is journaled and sent before the
        # clock moves on, so order counts are deterministic and the order path runs at
        # full weight.
        await run_simulated(system, venue, clock, end - clock.now(), STEP)
        loop_seconds = time.perf_counter() - wall
        await recorder.stop()
        seconds = time.perf_counter() - wall
        orders = system.execution.orders_created
        filled_orders = system.execution.orders_filled
        fills = len(venue.fills)
        # Stopping cancels working orders and waits for the venue to confirm: keep the
        # simulated venue moving meanwhile (not part of the figures).
        stopping = asyncio.create_task(system.stop("bench"))
        while not stopping.done():
            clock.advance(STEP)
            venue.process_orders()  # order events only: no more quotes
            await asyncio.sleep(0.001)
        await stopping
    finally:
        if not recorder_task.done():
            await recorder.stop()
        await recorder_task
        await database.close()
    n = len(timed.samples)
    p50, p99 = _percentiles_us(timed.samples, 0.50, 0.99)
    submit = _percentiles_us(timed.submit_samples, 0.50, 0.99) if timed.submit_samples else None
    return BenchResult(
        strategy="order-heavy (every quote)" if order_heavy else "ma_cross on 1-minute bars",
        symbols=symbols,
        quotes=n,
        quotes_accepted=sum(system.feed.accepted.values()),
        seconds=seconds,
        loop_seconds=loop_seconds,
        quotes_per_s=n / seconds,
        quote_p50_us=p50,
        quote_p99_us=p99,
        quote_mean_us=float(np.frombuffer(timed.samples, dtype=np.int64).mean()) / 1000.0,
        submit_p50_us=submit[0] if submit else None,
        submit_p99_us=submit[1] if submit else None,
        submit_samples=len(timed.submit_samples),
        orders=orders,
        filled_orders=filled_orders,
        fills=fills,
        bars=timed.bars,
        rows_written=recorder.rows_written,
        rows_dropped=recorder.rows_dropped,
        quote_rows_in_db=_count_quote_rows(settings.database_path),
        peak_rss_mb=peak_rss_mb(),
    )


def print_pipeline(r: BenchResult) -> None:
    print(f"pipeline bench: {r.strategy}, {r.symbols} symbols, {r.quotes:,} quotes")
    print(
        f"  throughput: {r.quotes_per_s:,.0f} quotes/s "
        f"({r.seconds:.2f} s incl. the recorder's last flush; loop {r.loop_seconds:.2f} s)"
    )
    print(
        f"  per quote: p50 {r.quote_p50_us:.1f} µs  p99 {r.quote_p99_us:.1f} µs  "
        f"mean {r.quote_mean_us:.1f} µs"
    )
    if r.submit_p50_us is not None and r.submit_p99_us is not None:
        print(
            f"  quote → order submit: p50 {r.submit_p50_us:,.1f} µs  "
            f"p99 {r.submit_p99_us:,.1f} µs  ({r.submit_samples:,} orders from quotes)"
        )
    else:
        print("  quote → order submit: no order came from a quote")
    print(f"  orders {r.orders:,} ({r.filled_orders:,} filled)  fills {r.fills:,}  bars {r.bars:,}")
    print(
        f"  recorder: {r.rows_written:,} rows written, {r.rows_dropped:,} dropped, "
        f"{r.quote_rows_in_db:,} quote rows in the file ({r.quotes_accepted:,} accepted)"
    )
    print(f"  peak RSS {r.peak_rss_mb:,.0f} MB")


def print_ui(total_qps: float, figures: dict[str, float]) -> None:
    print(f"console at 120x40, 20 symbols, {total_qps:,.0f} quotes/s in total:")
    for key, value in figures.items():
        print(f"  {key}: {value:,.2f}")
