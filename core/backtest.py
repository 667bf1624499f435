"""Backtest and replay driver: recorded data through the live objects on a simulated clock.

The same ``TradingSystem`` — feed validation, bar builder, strategy, risk, execution,
portfolio — trades a ``ReplayVenue`` (the simulated venue fed recorded quotes) while a
``SimClock`` jumps from one recorded timestamp to the next, as fast as the CPU allows.
Only who moves the clock differs from a live sim run (compare ``core.simulation``).

Driving, per quote in time order (quotes of all symbols merged lazily):
1. when the quote starts a new bar interval (``sample_seconds`` long, aligned to the
   epoch like the core's bars), first *step* to the end of the previous interval: set
   the clock there, deliver due order events, run ``system.on_timer()`` (closes the
   bars, so the strategy decides at the bar's end), send the orders it made, and
   record one equity point;
2. set the clock to the quote's time and publish the quote through the venue;
3. send any orders it caused and deliver those already due (zero latency: at once).

Intervals without data get no step and no equity point, so nights and weekends add no
flat returns to the curve.

Bars are fed to the core as quotes synthesised from each bar (``bar_quotes``), and the
core's BAR_SECONDS is set to the data's bar length, so the bar builder rebuilds the
file's bars and the strategy sees them unchanged. Fills:
- ``FillAt.NEXT_OPEN`` (default): the strategy decides at the bar's end; its market
  order waits for the next quote of the symbol, which is the next bar's opening quote,
  and fills there (at the ask for buys, bid for sells; the spread is configurable and
  0 gives exactly the open).
- ``FillAt.CLOSE``: the order fills at once against the closing quote of the bar the
  decision was made on (same-bar close; optimistic, as the close was already known).
Bars carry no depth, so their quotes show none and the venue fills any size; order
latency is zero for bars (there is no time inside a bar for it to mean anything).

Stops and brackets are honoured (the venue's rules: ``core.brokers.replay``). With bars,
a stop whose price lies inside a bar's range fills at the stop price; one the bar
opened beyond (gapped through) fills at the bar's open; no spread is charged on either.
A stop-limit fills so only within its limit, else rests as a limit order. With recorded
quotes a stop triggers on the quote's last trade price (its mid when it has none) and
then trades like a market order against that quote.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from core.brokers.factory import sim_venue_config
from core.brokers.replay import ReplayVenue
from core.bus import EventBus
from core.clock import SimClock
from core.config import Settings
from core.data_files import BarRecord, DataKind, DataSet
from core.events import FillReceived, RiskRejected
from core.journal import Journal
from core.model import Fill, Order, Quote, QuoteSource, TradingState
from core.system import TradingSystem

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
DEFAULT_BAR_SPREAD_BPS = 1.0
QUOTES_PER_BAR = 4


class FillAt(StrEnum):
    """Where a market order decided at a bar's end fills (bars only)."""

    NEXT_OPEN = "next-open"
    CLOSE = "close"


@dataclass(frozen=True, slots=True)
class BacktestOptions:
    """What a backtest may change on top of the settings; None keeps the setting."""

    starting_cash: float | None = None  # default SIM_STARTING_CASH
    commission_per_share: float | None = None  # default SIM_COMMISSION_PER_SHARE
    fill_at: FillAt = FillAt.NEXT_OPEN
    bar_spread_bps: float = DEFAULT_BAR_SPREAD_BPS  # bid-ask spread of synthesised quotes

    def __post_init__(self) -> None:
        if self.starting_cash is not None and not self.starting_cash > 0:
            raise ValueError(f"cash must be > 0, got {self.starting_cash}")
        if self.commission_per_share is not None and not self.commission_per_share >= 0:
            raise ValueError(f"commission must be >= 0 $/share, got {self.commission_per_share}")
        if not 0 <= self.bar_spread_bps < 10_000:
            raise ValueError(f"bar spread must be within 0..10000 bp, got {self.bar_spread_bps}")


# =============================================================================== bars → quotes


def bar_end(start: datetime, bar_seconds: int) -> datetime:
    """End of the core bar interval ``start`` falls in (intervals aligned to the epoch)."""
    interval = timedelta(seconds=bar_seconds)
    return start - (start - _EPOCH) % interval + interval


def bar_quotes(bar: BarRecord, bar_seconds: int, spread_bps: float) -> tuple[Quote, ...]:
    """The four quotes a bar is replayed as; their mids trace open → low/high → close.

    Stamped inside the core bar interval the bar starts in, [start, end): the open at
    ``start``, the close at ``end − 1 µs`` (so it is fresh when the bar closes at
    ``end``), the high and low at a third and two thirds of the way — low first when
    the bar closed up, high first when it closed down (the usual OHLC path guess).
    Each quote is centred on the price with ``spread_bps`` between bid and ask and
    carries no size (the venue then fills any quantity).
    """
    end = bar_end(bar.start, bar_seconds)
    span_us = (end - bar.start) // _ONE_US
    middle = (bar.low, bar.high) if bar.close >= bar.open else (bar.high, bar.low)
    times = (
        bar.start,
        bar.start + timedelta(microseconds=span_us // 3),
        bar.start + timedelta(microseconds=2 * span_us // 3),
        end - _ONE_US,
    )
    half = spread_bps / 20_000.0
    return tuple(
        Quote(
            bar.symbol,
            ts,
            price * (1.0 - half),
            price * (1.0 + half),
            0,
            0,
            None,
            QuoteSource.REPLAY,
        )
        for ts, price in zip(times, (bar.open, *middle, bar.close), strict=True)
    )


def bar_quote_stream(
    bars: Iterable[BarRecord], bar_seconds: int, spread_bps: float
) -> Iterator[Quote]:
    for bar in bars:
        yield from bar_quotes(bar, bar_seconds, spread_bps)


def _quote_time(quote: Quote) -> datetime:
    return quote.ts


def merge_in_time(streams: Sequence[Iterable[Quote]]) -> Iterator[Quote]:
    """Merge time-ordered streams lazily; ties keep the streams' order (deterministic)."""
    if len(streams) == 1:
        return iter(streams[0])
    return heapq.merge(*streams, key=_quote_time)


# =============================================================================== results


@dataclass(slots=True)
class EquityCurve:
    """Equity after each step, in compact arrays (one point per bar interval with data)."""

    times_us: array[int] = field(default_factory=lambda: array("q"))
    equity: array[float] = field(default_factory=lambda: array("d"))
    gross_exposure: array[float] = field(default_factory=lambda: array("d"))

    def append(self, ts: datetime, equity: float, gross_exposure: float) -> None:
        self.times_us.append((ts - _EPOCH) // _ONE_US)
        self.equity.append(equity)
        self.gross_exposure.append(gross_exposure)

    def __len__(self) -> int:
        return len(self.times_us)

    def time(self, index: int) -> datetime:
        return _EPOCH + timedelta(microseconds=self.times_us[index])


@dataclass(slots=True)
class BacktestResult:
    symbols: tuple[str, ...]
    start: datetime
    end: datetime
    starting_equity: float
    final_equity: float
    curve: EquityCurve
    fills: list[Fill]
    orders: list[Order]
    quotes: int  # quotes published to the core
    quotes_rejected: int  # dropped by the core's feed validation
    risk_rejections: int
    trading_state: TradingState
    bar_seconds: int
    kind: DataKind
    fill_at: FillAt | None  # bars only


# =============================================================================== driver


ProgressCallback = Callable[[int], None]


class Backtest:
    """A TradingSystem on a ReplayVenue and a SimClock, driven over recorded quotes."""

    def __init__(
        self,
        settings: Settings,
        start: datetime,
        *,
        options: BacktestOptions | None = None,
        match_on_arrival: bool = True,
        latency_ms: float | None = None,
        journal: Journal | None = None,
        bus: EventBus | None = None,
        bar_seconds: int | None = None,
    ) -> None:
        """``bar_seconds``: the data are bars of that length, replayed by ``bar_quotes``
        (stops then fill by the bar rules of the module docstring)."""
        options = options or BacktestOptions()
        self.settings = settings
        self.clock = SimClock(start)
        cash = options.starting_cash or settings.sim_starting_cash
        config = replace(
            sim_venue_config(settings),
            starting_cash=cash,
            latency_ms=settings.sim_latency_ms if latency_ms is None else latency_ms,
            commission_per_share=(
                settings.sim_commission_per_share
                if options.commission_per_share is None
                else options.commission_per_share
            ),
        )
        self.venue = ReplayVenue(
            config, self.clock, match_on_arrival=match_on_arrival, bar_seconds=bar_seconds
        )
        self.bus = bus or EventBus()
        self.system = TradingSystem(
            settings,
            self.venue,
            self.clock,
            journal=journal,
            bus=self.bus,
            starting_cash=cash,
            reconcile_seconds=settings.reconcile_seconds,
        )
        self.starting_equity = cash
        self.fills: list[Fill] = []
        self.risk_rejections = 0
        self.bus.subscribe(FillReceived, self._on_fill)
        self.bus.subscribe(RiskRejected, self._on_risk_rejected)

    def _on_fill(self, event: FillReceived) -> None:
        self.fills.append(event.fill)

    def _on_risk_rejected(self, _event: RiskRejected) -> None:
        self.risk_rejections += 1

    async def run(
        self,
        quotes: Iterable[Quote] | AsyncIterable[Quote],
        *,
        sample_seconds: int,
        kind: DataKind = DataKind.QUOTES,
        fill_at: FillAt | None = None,
        progress: ProgressCallback | None = None,
        progress_every: int = 10_000,
    ) -> BacktestResult:
        """Trade through ``quotes`` (time-ordered) and return what happened."""
        if sample_seconds <= 0:
            raise ValueError(f"sample_seconds must be > 0, got {sample_seconds}")
        system, clock, venue = self.system, self.clock, self.venue
        curve = EquityCurve()
        interval = timedelta(seconds=sample_seconds)
        start = clock.now()
        await system.start(drive_broker=False)
        curve.append(start, system.portfolio.equity, system.portfolio.gross_exposure)
        interval_end: datetime | None = None
        last_step = start
        count = 0
        try:
            async for quote in _as_async(quotes):
                ts = quote.ts
                if interval_end is None or ts >= interval_end:
                    if interval_end is not None:
                        await self._step(interval_end, curve)
                        last_step = interval_end
                    interval_end = ts - (ts - _EPOCH) % interval + interval
                if ts > clock.now():
                    clock.set(ts)
                elif ts < clock.now():
                    raise ValueError(
                        f"quotes out of time order: {quote.symbol} at {ts.isoformat()} "
                        f"after {clock.now().isoformat()}"
                    )
                venue.publish(quote)
                await self._settle()
                count += 1
                if progress is not None and count % progress_every == 0:
                    progress(count)
            if interval_end is not None:
                await self._step(interval_end, curve)
                last_step = interval_end
            await self._wind_down()
        finally:
            if system.running:
                await system.stop("end of data")
        if progress is not None:
            progress(count)
        return BacktestResult(
            symbols=system.symbols,
            start=start,
            end=last_step,
            starting_equity=self.starting_equity,
            final_equity=system.portfolio.equity,
            curve=curve,
            fills=list(self.fills),
            orders=list(system.execution.orders.values()),
            quotes=count,
            quotes_rejected=sum(system.feed.rejected.values()),
            risk_rejections=self.risk_rejections,
            trading_state=system.risk.state,
            bar_seconds=sample_seconds,
            kind=kind,
            fill_at=fill_at,
        )

    async def _settle(self) -> None:
        """Send queued orders and deliver those already due, until nothing moves."""
        execution = self.system.execution
        while True:
            await execution.drain()
            if self.system.fatal_error is not None:
                raise self.system.fatal_error
            if not self.venue.deliver_due():
                return

    async def _step(self, when: datetime, curve: EquityCurve) -> None:
        if when > self.clock.now():
            self.clock.set(when)
        self.venue.deliver_due()
        self.system.on_timer()
        await self._settle()
        portfolio = self.system.portfolio
        curve.append(when, portfolio.equity, portfolio.gross_exposure)

    async def _wind_down(self) -> None:
        """Cancel what still works (no later quote will fill it) and let the venue confirm.

        Done here, on the simulated clock, rather than in ``system.stop`` — which would
        wait on the wall clock for confirmations nobody delivers. Positions stay open and
        marked at their last price.
        """
        execution = self.system.execution
        execution.clear_targets()
        execution.cancel_all("end of data")
        await self._settle()
        if self.venue.pending_actions:
            self.clock.advance(timedelta(milliseconds=self.venue.config.latency_ms))
            await self._settle()


async def _as_async(items: Iterable[Quote] | AsyncIterable[Quote]) -> AsyncIterator[Quote]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


# =============================================================================== files


def run_settings(
    settings: Settings,
    symbols: Sequence[str],
    *,
    bar_seconds: int | None = None,
    stop_file: Path | None = None,
    strategy: str | None = None,
    strategy_params: dict[str, Any] | None = None,
) -> Settings:
    """The settings a run trades with: the operator's, with the data's symbols and bar length.

    ``Settings`` is frozen; the copy changes only the named fields.
    """
    update: dict[str, Any] = {"symbols": tuple(symbols)}
    if bar_seconds is not None:
        update["bar_seconds"] = bar_seconds
    if stop_file is not None:
        update["stop_file"] = stop_file
    if strategy is not None:
        update["strategy"] = strategy
    if strategy_params is not None:
        update["strategy_params"] = dict(strategy_params)
    return settings.model_copy(update=update)


def backtest_for(
    settings: Settings, data: DataSet, options: BacktestOptions, **kwargs: Any
) -> tuple[Backtest, Iterator[Quote]]:
    """Build the backtest for a validated data set, and the merged quote stream to run.

    ``settings`` must already carry the data's symbols (and, for bars, its bar length:
    see ``run_settings``). Keyword arguments go to ``Backtest`` (journal, bus).
    """
    if data.kind is DataKind.BARS:
        bar_seconds = data.bar_seconds or settings.bar_seconds
        if settings.bar_seconds != bar_seconds:
            raise ValueError(
                f"settings.bar_seconds is {settings.bar_seconds}, the data's bars are "
                f"{bar_seconds} s: build the settings with run_settings(bar_seconds=...)"
            )
        streams: list[Iterable[Quote]] = [
            bar_quote_stream(s, bar_seconds, options.bar_spread_bps) for s in data.bar_streams()
        ]
        backtest = Backtest(
            settings,
            data.first_ts,
            options=options,
            match_on_arrival=options.fill_at is FillAt.CLOSE,
            latency_ms=0.0,
            bar_seconds=bar_seconds,
            **kwargs,
        )
    else:
        streams = list(data.quote_streams())
        backtest = Backtest(settings, data.first_ts, options=options, **kwargs)
    return backtest, merge_in_time(streams)


async def run_data(
    settings: Settings,
    data: DataSet,
    options: BacktestOptions,
    *,
    progress: ProgressCallback | None = None,
) -> BacktestResult:
    """Backtest a validated data set (see ``backtest_for``) and return the result."""
    backtest, quotes = backtest_for(settings, data, options)
    bars = data.kind is DataKind.BARS
    return await backtest.run(
        quotes,
        sample_seconds=settings.bar_seconds,
        kind=data.kind,
        fill_at=options.fill_at if bars else None,
        progress=progress,
    )
