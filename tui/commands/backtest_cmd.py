"""`trading-console backtest` and `trading-console replay`: run, report, write the results.

Both drive the live core objects over recorded data on a simulated clock
(``core.backtest``); this module only assembles: it reads the database or archive
(storage is not the core's business), prints the report with rich and writes into
the output directory:

- ``orders.jsonl``  every order, canonical JSON lines sorted by client order id
  (equal input and settings give byte-identical files; the SHA-256 is printed)
- ``trades.parquet``  every fill
- ``round_trips.parquet``  closed round trips (what the win rate counts)
- ``equity.parquet``  the equity curve: ts, equity, gross exposure, drawdown
- ``equity.png``  the equity curve and drawdown, for people who would rather look
- ``run.log``  the core's log of the run (orders, rejections), not the live log

The live STOP file does not apply: a run halts on ``<out>/STOP`` instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from loguru import logger
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from core.backtest import (
    QUOTES_PER_BAR,
    Backtest,
    BacktestOptions,
    BacktestResult,
    FillAt,
    backtest_for,
    merge_in_time,
    run_settings,
)
from core.backtest_report import BacktestMetrics, canonical_orders, compute_metrics, round_trips
from core.config import Settings
from core.data_files import DataFileError, DataKind, load_data
from core.model import Quote, QuoteSource, TradingState
from core.strategy.loader import StrategyLoadError
from storage.archive import archive_path
from storage.database import Database, from_db_ts

EXIT_OK, EXIT_USAGE = 0, 2
# Runs with fewer quotes than this finish before a progress bar would say anything.
PROGRESS_MIN_QUOTES = 200_000

ORDERS_FILE = "orders.jsonl"
TRADES_FILE = "trades.parquet"
ROUND_TRIPS_FILE = "round_trips.parquet"
EQUITY_FILE = "equity.parquet"
CHART_FILE = "equity.png"
LOG_FILE = "run.log"

MAX_CHART_POINTS = 5_000

_TS = pa.timestamp("us", tz="UTC")


class ParamError(ValueError):
    """A ``--param`` that is not ``key=value``."""


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """``["fast=5", "allow_short=true", "name=x"]`` → ``{"fast": 5, "allow_short": True, ...}``.

    Values are read as JSON when they parse (numbers, true/false, null, lists),
    otherwise kept as text.
    """
    params: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ParamError(f"--param {item!r}: write key=value, e.g. --param fast=5")
        try:
            params[key] = json.loads(text)
        except json.JSONDecodeError:
            params[key] = text
    return params


# =============================================================================== backtest


async def run_backtest(
    settings: Settings,
    data: Path,
    *,
    strategy: str | None,
    params: dict[str, Any],
    cash: float | None,
    commission: float | None,
    fill_at: str,
    out_dir: Path,
) -> int:
    """Backtest the strategy over bar or quote files; returns the exit code.

    ``params`` replace STRATEGY_PARAMS when ``strategy`` is given (those belong to the
    configured strategy), and are merged over them otherwise.
    """
    console = Console()
    try:
        options = BacktestOptions(
            starting_cash=cash, commission_per_share=commission, fill_at=FillAt(fill_at)
        )
        dataset = load_data(Path(data))
    except (ValueError, DataFileError) as exc:
        return _usage_error(exc)
    strategy_params = dict(params) if strategy else {**settings.strategy_params, **params}
    run = run_settings(
        settings,
        dataset.symbols,
        bar_seconds=dataset.bar_seconds,
        stop_file=Path(out_dir) / "STOP",
        strategy=strategy,
        strategy_params=strategy_params,
    )
    try:
        backtest, quotes = backtest_for(run, dataset, options)  # builds the strategy
    except StrategyLoadError as exc:
        return _usage_error(exc)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bars = dataset.kind is DataKind.BARS
    console.print(
        f"[bold]Backtest[/] {escape(str(data))} — {dataset.rows:,} {dataset.kind} of "
        f"{', '.join(dataset.symbols)}, {dataset.first_ts:%Y-%m-%d %H:%M} → "
        f"{dataset.last_ts:%Y-%m-%d %H:%M} UTC"
    )
    if bars:
        console.print(
            f"bars of {dataset.bar_seconds:,} s (BAR_SECONDS), market orders fill at the "
            f"{'next bar open' if options.fill_at is FillAt.NEXT_OPEN else 'same bar close'}, "
            f"spread {options.bar_spread_bps:g} bp"
        )
    with _run_log(out_dir / LOG_FILE):
        try:
            total = dataset.rows * (QUOTES_PER_BAR if bars else 1)
            with _progress(console, total) as progress:
                result = await backtest.run(
                    quotes,
                    sample_seconds=run.bar_seconds,
                    kind=dataset.kind,
                    fill_at=options.fill_at if bars else None,
                    progress=progress,
                )
        except DataFileError as exc:  # a file that changed or broke since validation
            return _usage_error(exc)
    return _finish(console, run, result, out_dir, "Backtest")


# =============================================================================== replay


async def run_replay(
    settings: Settings,
    day: date,
    *,
    source_db: Path | None,
    archive_dir: Path | None,
    out_dir: Path,
) -> int:
    """Re-run a recorded UTC day's quotes through the current strategy and risk settings.

    Quotes come from the Parquet archive when ``archive_dir`` is given, otherwise from
    the database (``source_db``, default DATABASE_FILE), which is only read. The run
    trades the symbols found in the recording, with order latency, commissions and
    limits from the settings; nothing in it reads the wall clock, so it is
    deterministic.
    """
    console = Console()
    out_dir = Path(out_dir)
    if archive_dir is not None:
        path = archive_path(Path(archive_dir), "quotes", day)
        if not path.exists():
            return _usage_error(f"no quotes archived for {day}: {path} does not exist")
        try:
            dataset = load_data(path)
        except DataFileError as exc:
            return _usage_error(exc)
        source = str(path)
        return await _replay(
            console,
            settings,
            source,
            dataset.symbols,
            dataset.first_ts,
            dataset.rows,
            lambda: _sync_to_async(merge_in_time(dataset.quote_streams())),
            out_dir,
        )
    db_path = Path(source_db) if source_db is not None else settings.database_path
    if not db_path.exists():
        return _usage_error(f"no database at {db_path}: give --db PATH or --archive DIR")
    database = await Database.open(db_path)
    malformed = [0]
    try:
        symbols, first_ts, count = await _scan_day(database, day)
        if first_ts is None:
            return _usage_error(f"no quotes recorded on {day} (UTC) in {db_path}")
        code = await _replay(
            console,
            settings,
            str(db_path),
            symbols,
            first_ts,
            count,
            lambda: _db_quotes(database, day, malformed),
            out_dir,
        )
    finally:
        await database.close()
    if malformed[0]:
        console.print(
            f"[yellow]note:[/] {malformed[0]:,} malformed quote rows skipped (a timestamp, "
            "price or size that is not one)"
        )
    return code


async def _replay(
    console: Console,
    settings: Settings,
    source: str,
    symbols: Sequence[str],
    first_ts: datetime,
    count: int,
    quotes: Callable[[], AsyncIterator[Quote]],
    out_dir: Path,
) -> int:
    run = run_settings(settings, symbols, stop_file=out_dir / "STOP")
    try:
        backtest = Backtest(run, first_ts)  # builds the strategy
    except StrategyLoadError as exc:
        return _usage_error(exc)
    out_dir.mkdir(parents=True, exist_ok=True)
    console.print(
        f"[bold]Replay[/] {escape(source)} — {count:,} quotes of {', '.join(symbols)} from "
        f"{first_ts:%Y-%m-%d %H:%M:%S} UTC, strategy {run.strategy}"
    )
    with _run_log(out_dir / LOG_FILE), _progress(console, count) as progress:
        result = await backtest.run(quotes(), sample_seconds=run.bar_seconds, progress=progress)
    return _finish(console, run, result, out_dir, "Replay")


async def _scan_day(database: Database, day: date) -> tuple[list[str], datetime | None, int]:
    """Symbols, first timestamp and number of the day's recorded quotes (one streamed pass)."""
    symbols: set[str] = set()
    first: datetime | None = None
    count = 0
    async with contextlib.aclosing(database.iter_day_rows("quotes", day)) as chunks:
        async for rows in chunks:
            for row in rows:
                quote = quote_from_row(row)
                if quote is None:
                    continue
                if first is None:
                    first = quote.ts
                symbols.add(quote.symbol)
                count += 1
    return sorted(symbols), first, count


def quote_from_row(row: Sequence[Any]) -> Quote | None:
    """A quotes-table row as a replayed Quote, or None for a malformed row (a value of the
    wrong type, a timestamp that is not one): a damaged recording is skipped, not fatal."""
    # Row layout: TABLE_COLUMNS["quotes"] = symbol ts bid ask bid_size ask_size last source.
    symbol, ts, bid, ask, bid_size, ask_size, last, _source = row
    if not isinstance(symbol, str) or not isinstance(ts, str):
        return None
    prices = (bid, ask) if last is None else (bid, ask, last)
    if not all(isinstance(p, int | float) and not isinstance(p, bool) for p in prices):
        return None
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (bid_size, ask_size)):
        return None
    try:
        when = from_db_ts(ts)
    except (ValueError, OverflowError):
        return None
    return Quote(
        symbol,
        when,
        float(bid),
        float(ask),
        bid_size,
        ask_size,
        None if last is None else float(last),
        QuoteSource.REPLAY,
    )


async def _db_quotes(database: Database, day: date, malformed: list[int]) -> AsyncIterator[Quote]:
    async with contextlib.aclosing(database.iter_day_rows("quotes", day)) as chunks:
        async for rows in chunks:
            for row in rows:
                quote = quote_from_row(row)
                if quote is None:
                    malformed[0] += 1
                    continue
                yield quote


async def _sync_to_async(quotes: Iterator[Quote]) -> AsyncIterator[Quote]:
    for quote in quotes:
        yield quote


# =============================================================================== output


def _usage_error(problem: object) -> int:
    # Plain print, not rich: a path in the message must not be wrapped or styled.
    print(f"trading-console: {problem}", file=sys.stderr)
    return EXIT_USAGE


@contextlib.contextmanager
def _run_log(path: Path) -> Iterator[None]:
    """Send the core's log of this run to its own file while it runs."""
    path.unlink(missing_ok=True)
    handler = logger.add(path, level="INFO", enqueue=False)
    try:
        yield
    finally:
        logger.remove(handler)


@contextlib.contextmanager
def _progress(console: Console, total: int) -> Iterator[Callable[[int], None] | None]:
    if total < PROGRESS_MIN_QUOTES:
        yield None
        return
    columns = (
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("quotes", total=total)
        yield lambda done: progress.update(task, completed=done)


def _finish(
    console: Console, settings: Settings, result: BacktestResult, out_dir: Path, title: str
) -> int:
    curve = result.curve
    times = [curve.time(i) for i in range(len(curve))]
    metrics = compute_metrics(times, curve.equity, result.fills)
    orders_bytes = canonical_orders(result.orders)
    (out_dir / ORDERS_FILE).write_bytes(orders_bytes)
    write_trades(out_dir / TRADES_FILE, result)
    write_round_trips(out_dir / ROUND_TRIPS_FILE, result)
    write_equity(out_dir / EQUITY_FILE, result)
    write_chart(out_dir / CHART_FILE, result, title=settings.strategy)
    console.print(report_table(result, metrics, title))
    for note in _notes(result):
        console.print(f"[yellow]note:[/] {note}")
    digest = hashlib.sha256(orders_bytes).hexdigest()
    console.print(f"orders: {escape(str(out_dir / ORDERS_FILE))} (sha256 {digest[:16]})")
    console.print(
        f"written to {escape(str(out_dir))}: {TRADES_FILE}, {ROUND_TRIPS_FILE}, {EQUITY_FILE}, "
        f"{CHART_FILE}, {LOG_FILE}"
    )
    return EXIT_OK


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.2f}%"


def report_table(result: BacktestResult, m: BacktestMetrics, title: str = "Backtest") -> Table:
    table = Table(title=f"{title} report", show_header=False, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    statuses: dict[str, int] = {}
    for order in result.orders:
        statuses[str(order.status)] = statuses.get(str(order.status), 0) + 1
    sharpe = "n/a" if m.sharpe is None else f"{m.sharpe:.2f}"
    if m.returns_per_year is not None and m.sharpe is not None:
        sharpe += f" ({m.returns_per_year:,.0f} returns/yr)"
    rows = [
        ("Period", f"{m.start:%Y-%m-%d %H:%M} → {m.end:%Y-%m-%d %H:%M} UTC"),
        ("Quotes replayed", f"{result.quotes:,}"),
        ("Starting equity", f"{m.starting_equity:,.2f}"),
        ("Final equity", f"{m.final_equity:,.2f}"),
        ("Total return", _pct(m.total_return)),
        ("CAGR", _pct(m.cagr)),
        ("Max drawdown", f"{-m.max_drawdown * 100:.2f}%"),
        ("Sharpe (annualised)", sharpe),
        ("Exposure", f"{m.exposure * 100:.1f}% of the time"),
        ("Round trips", f"{m.round_trips:,}"),
        ("Win rate", "n/a" if m.win_rate is None else f"{m.win_rate * 100:.1f}% ({m.wins:,} won)"),
        ("Fills", f"{m.fills:,}"),
        ("Orders", ", ".join(f"{n:,} {s}" for s, n in sorted(statuses.items())) or "0"),
        ("Commissions", f"{m.commissions:,.2f}"),
        ("Risk rejections", f"{result.risk_rejections:,}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _notes(result: BacktestResult) -> list[str]:
    notes = []
    if result.quotes_rejected:
        notes.append(
            f"{result.quotes_rejected:,} quotes were dropped by the feed's validation "
            "(e.g. moves beyond MAX_QUOTE_JUMP_PCT); see run.log"
        )
    if result.trading_state is not TradingState.ACTIVE:
        notes.append(f"trading ended {result.trading_state} (breaker or halt); see run.log")
    open_positions = sum(1 for f in _net_positions(result).values() if f)
    if open_positions:
        notes.append(f"{open_positions} position(s) still open, marked at their last price")
    return notes


def _net_positions(result: BacktestResult) -> dict[str, int]:
    positions: dict[str, int] = {}
    for fill in result.fills:
        positions[fill.symbol] = positions.get(fill.symbol, 0) + fill.signed_quantity
    return positions


def write_trades(path: Path, result: BacktestResult) -> None:
    fills = result.fills
    table = pa.table(
        {
            "ts": pa.array([f.ts for f in fills], type=_TS),
            "symbol": pa.array([f.symbol for f in fills], type=pa.string()),
            "side": pa.array([str(f.side) for f in fills], type=pa.string()),
            "quantity": pa.array([f.quantity for f in fills], type=pa.int64()),
            "price": pa.array([f.price for f in fills], type=pa.float64()),
            "commission": pa.array([f.commission for f in fills], type=pa.float64()),
            "client_order_id": pa.array([f.client_order_id for f in fills], type=pa.string()),
            "exec_id": pa.array([f.exec_id for f in fills], type=pa.string()),
        }
    )
    pq.write_table(table, path)


def write_round_trips(path: Path, result: BacktestResult) -> None:
    trips = round_trips(result.fills)
    table = pa.table(
        {
            "symbol": pa.array([t.symbol for t in trips], type=pa.string()),
            "direction": pa.array(
                ["long" if t.direction > 0 else "short" for t in trips], type=pa.string()
            ),
            "opened_at": pa.array([t.opened_at for t in trips], type=_TS),
            "closed_at": pa.array([t.closed_at for t in trips], type=_TS),
            "max_quantity": pa.array([t.max_quantity for t in trips], type=pa.int64()),
            "pnl": pa.array([t.pnl for t in trips], type=pa.float64()),
            "commissions": pa.array([t.commissions for t in trips], type=pa.float64()),
        }
    )
    pq.write_table(table, path)


def write_equity(path: Path, result: BacktestResult) -> None:
    curve = result.curve
    peak = float("-inf")
    drawdown = []
    for value in curve.equity:
        peak = max(peak, value)
        drawdown.append((peak - value) / peak if peak > 0 else 0.0)
    table = pa.table(
        {
            "ts": pa.array(curve.times_us, type=pa.int64()).cast(_TS),
            "equity": pa.array(curve.equity, type=pa.float64()),
            "gross_exposure": pa.array(curve.gross_exposure, type=pa.float64()),
            "drawdown": pa.array(drawdown, type=pa.float64()),
        }
    )
    pq.write_table(table, path)


def write_chart(path: Path, result: BacktestResult, *, title: str) -> None:
    """Equity and drawdown as a PNG, drawn with matplotlib's Agg canvas (no display needed)."""
    # The object API with an explicit Agg canvas leaves pyplot's global backend alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curve = result.curve
    peak = float("-inf")
    drawdown_all = []
    for value in curve.equity:
        peak = max(peak, value)
        drawdown_all.append(-(peak - value) / peak * 100.0 if peak > 0 else 0.0)
    # A chart cannot show more points than it has pixels; a stride (always keeping the
    # last point) keeps long runs quick to draw and small in memory.
    stride = max(1, len(curve) // MAX_CHART_POINTS)
    picked = [*range(0, len(curve) - 1, stride), len(curve) - 1]
    times = [curve.time(i) for i in picked]
    equity = [curve.equity[i] for i in picked]
    drawdown = [drawdown_all[i] for i in picked]
    figure = Figure(figsize=(10, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot(times, equity, color="tab:blue", linewidth=1.0)
    top.set_title(f"Equity — {title}")
    top.set_ylabel("equity ($)")
    top.grid(True, alpha=0.3)
    bottom.fill_between(times, drawdown, 0.0, color="tab:red", alpha=0.4, step="post")
    bottom.set_ylabel("drawdown (%)")
    bottom.grid(True, alpha=0.3)
    figure.savefig(path, format="png")
