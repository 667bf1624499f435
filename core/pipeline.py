"""The quote and fill path: what the broker reports, in, and orders, out.

`TradingPipeline` is the broker's listener and the strategy's context. A quote's
whole path, synchronous and without I/O (ARCHITECTURE rule 1):

    broker ─▶ on_quote ─▶ feed.on_raw_quote (validate, cache, publish QuoteReceived)
           ─▶ portfolio.mark ─▶ bars.on_quote ─▶ strategy.on_quote / on_bar
           ─▶ execution.on_target / on_intent (risk.review inside)
           ─▶ the execution engine's send queue ─▶ journal, then broker.place_order

then the breaker's check when the quote moved equity. A fill: broker ─▶ on_fill ─▶
execution.on_fill (portfolio, order state) ─▶ breaker check. Everything else the
broker says is published on the bus for the recorder, alerts and the console.

Shortcuts taken on this path for speed are written beside the plain code they stand
for; tests/test_hot_path.py drives both with the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from loguru import logger

from core.bars import BarBuilder
from core.breaker import CircuitBreaker
from core.bus import EventBus
from core.clock import Clock
from core.events import (
    BarClosed,
    BrokerConnectionChanged,
    BrokerErrorReported,
    FeedSwitched,
    TargetChanged,
)
from core.execution import ExecutionEngine
from core.marketdata import MarketDataFeed
from core.model import (
    Bar,
    Fill,
    OrderIntent,
    OrderStatusUpdate,
    Quote,
    QuoteSource,
    TargetPosition,
)
from core.monitoring import broker_code_log_level
from core.portfolio import Portfolio
from core.strategy.base import Strategy, StrategyContext, StrategyOutput


class TradingPipeline:
    """Broker listener and strategy context: quotes and fills in, targets and orders out."""

    def __init__(
        self,
        *,
        bus: EventBus,
        clock: Clock,
        feed: MarketDataFeed,
        portfolio: Portfolio,
        execution: ExecutionEngine,
        breaker: CircuitBreaker,
        bar_seconds: int,
        build_strategy: Callable[[StrategyContext], Strategy],
    ) -> None:
        self._bus = bus
        self._clock = clock
        self._feed = feed
        self._portfolio = portfolio
        self._execution = execution
        self._breaker = breaker
        self._protection = execution.protection
        self._trailing = execution.protection.trailing  # the set itself, kept up to date
        self.bars = BarBuilder(bar_seconds, self._on_bar_built)
        self.strategy = build_strategy(self)
        # Whether strategies' outputs are acted on: set by the system's start and stop.
        self.trading = False
        # Whether the broker's disconnect is our own shutdown, not an incident.
        self.stopping = False
        # Called when the broker is back (the system reconciles then).
        self.on_reconnected: Callable[[], None] = lambda: None
        # The first mid of the trading day per symbol (the console's change column);
        # the daily reset clears it.
        self._day_open_mid: dict[str, float] = {}
        # A strategy that keeps the base class's on_quote (it returns None) is not
        # called on every quote: one call fewer per quote for bar strategies.
        strategy_on_quote = self.strategy.on_quote
        self._strategy_on_quote: Callable[[Quote], StrategyOutput] | None = (
            strategy_on_quote if self.strategy.handles_quotes else None
        )

    # =============================================================== broker listener
    def on_quote(self, quote: Quote) -> None:
        if not self._feed.on_raw_quote(quote):
            return  # malformed: dropped and counted by the feed, never seen by a strategy
        symbol = quote.symbol
        mid = (quote.bid + quote.ask) / 2.0  # Quote.mid (model.mid_of) written out: a call fewer
        day_open = self._day_open_mid
        if symbol not in day_open:
            day_open[symbol] = mid
        equity_moved = self._portfolio.mark(symbol, mid)
        trailing = self._trailing
        if trailing and symbol in trailing:  # only symbols whose stop trails
            self._protection.on_price(symbol, mid)
        self.bars.on_quote(quote)
        on_quote = self._strategy_on_quote
        if on_quote is not None:
            output = on_quote(quote)
            if output is not None:
                self._act(output)
        # P&L limits can only be crossed when equity moved: here that is a re-mark of a
        # held position. Fills check on their own (on_fill), and the timer every 250 ms.
        if equity_moved:
            self._breaker.check()

    def on_order_status(self, update: OrderStatusUpdate) -> None:
        self._execution.on_order_status(update)

    def on_fill(self, fill: Fill) -> None:
        if self._execution.on_fill(fill):
            self._breaker.check()

    def on_broker_error(self, code: int, message: str, client_order_id: str | None) -> None:
        logger.log(
            broker_code_log_level(code),
            "broker error {code}: {message}",
            code=code,
            message=message,
            client_order_id=client_order_id,
        )
        self._bus.publish(BrokerErrorReported(code, message, self._clock.now(), client_order_id))
        self._execution.on_broker_error(code, message, client_order_id)

    def on_connection_changed(self, connected: bool, message: str) -> None:
        # While disconnected, risk refuses every risk-increasing order by itself (and the
        # console shows DISCONNECTED); on reconnect the books are reconciled at once, and a
        # mismatch halts. A clean reconnect therefore needs no operator action.
        if not connected and self.stopping:
            logger.info("broker disconnected after stop: {message}", message=message)
            return  # our own shutdown, not an incident to page anyone about
        self._bus.publish(BrokerConnectionChanged(connected, message, self._clock.now()))
        if connected and self.trading:
            self.on_reconnected()

    def on_feed_switched(self, symbol: str, source: QuoteSource, reason: str) -> None:
        self._bus.publish(FeedSwitched(symbol, str(source), reason, self._clock.now()))

    # =============================================================== strategy outputs
    def _on_bar_built(self, bar: Bar) -> None:
        self._bus.publish(BarClosed(bar))
        self._act(self.strategy.on_bar(bar))

    def _act(self, output: StrategyOutput) -> None:
        if output is None or not self.trading:
            return
        execution = self._execution
        if type(output) is TargetPosition:  # the common case, without building a tuple
            self._bus.publish(TargetChanged(output, self._clock.now()))
            execution.on_target(output)
            return
        items: Sequence[TargetPosition | OrderIntent] = (
            (output,) if isinstance(output, TargetPosition | OrderIntent) else output
        )
        for item in items:
            if isinstance(item, TargetPosition):
                self._bus.publish(TargetChanged(item, self._clock.now()))
                execution.on_target(item)
            else:
                execution.on_intent(item)

    # =============================================================== daily reset
    def start_new_day(self) -> None:
        self._day_open_mid.clear()

    @property
    def day_open_mids(self) -> Mapping[str, float]:
        return self._day_open_mid

    # =============================================================== strategy context
    def position(self, symbol: str) -> int:
        return self._portfolio.quantity(symbol)

    def latest_quote(self, symbol: str) -> Quote | None:
        return self._feed.latest(symbol)

    def now(self) -> datetime:
        return self._clock.now()

    @property
    def running(self) -> bool:
        return self.trading
