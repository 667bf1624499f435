"""TradingSystem: builds the pipeline and runs it; the operator's actions live here.

Broker → MarketDataFeed → bus → (portfolio marks, bars, strategy) → execution
(→ risk) → broker. `on_timer` does the clock-driven work (bar closes, STOP
file, breaker, daily reset, periodic reconciliation); in live runs a task
calls it every 250 ms, in simulations the driver calls it after each step.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from itertools import islice

from loguru import logger

from core.bars import BarBuilder
from core.brokers.base import Broker
from core.bus import EventBus
from core.calendar import TradingCalendar
from core.clock import Clock
from core.config import Settings
from core.events import (
    BarClosed,
    BrokerConnectionChanged,
    BrokerErrorReported,
    DailyPnlRecorded,
    FeedSwitched,
    QuoteReceived,
    TargetChanged,
)
from core.execution import ORDER_HISTORY, ExecutionEngine
from core.journal import Journal, NullJournal
from core.marketdata import MarketDataFeed
from core.model import (
    AlertSeverity,
    Bar,
    Fill,
    OrderIntent,
    OrderStatusUpdate,
    Quote,
    QuoteSource,
    TargetPosition,
    TradingState,
)
from core.monitoring import AlertRaiser
from core.portfolio import Portfolio
from core.recovery import RecoveryReport, reconcile_with_broker, restore_from_journal
from core.risk import RiskLimits, RiskManager
from core.snapshot import (
    IndicatorRow,
    OrderRow,
    PositionRow,
    QuoteRow,
    RiskView,
    SystemSnapshot,
)
from core.strategy.base import Strategy, StrategyOutput
from core.strategy.loader import build_strategy

TIMER_SECONDS = 0.25
SPARKLINE_POINTS = 60
STOP_FILE_REASON = "STOP file"
# The periodic check leaves out symbols with a fill this recent (or an order working):
# a broker's position report may trail its execution report by a moment.
RECONCILE_SETTLE = timedelta(seconds=5)


class TradingSystem:
    def __init__(
        self,
        settings: Settings,
        broker: Broker,
        clock: Clock,
        *,
        journal: Journal | None = None,
        bus: EventBus | None = None,
        starting_cash: float | None = None,
        reconcile_seconds: float | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.bus = bus or EventBus()
        self.broker = broker
        self.symbols = settings.symbols
        self.feed = MarketDataFeed(
            self.bus,
            clock,
            self.symbols,
            max_jump_pct=settings.max_quote_jump_pct,
            stale_after_seconds=settings.stale_after_seconds,
        )
        # The broker's quotes go straight to the feed: one call fewer on every quote
        # (on_quote below says the same, for readers and type checkers).
        self.on_quote = self.feed.on_raw_quote  # type: ignore[method-assign,assignment]
        cash = starting_cash if starting_cash is not None else settings.sim_starting_cash
        self.portfolio = Portfolio(cash)
        self.risk = RiskManager(
            RiskLimits.from_settings(settings),
            self.bus,
            clock,
            self.portfolio,
            self.feed,
            lambda: self.broker.connected,
        )
        self._journal: Journal = journal or NullJournal()
        self.execution = ExecutionEngine(
            self.bus,
            clock,
            broker,
            self._journal,
            self.risk,
            self.portfolio,
            # With a journal every order is in the database, so memory keeps the recent
            # ones only; without one (backtests) `execution.orders` is the only record.
            order_history=ORDER_HISTORY if journal is not None else None,
        )
        self.alerts = AlertRaiser(self.bus, clock)
        self.bars = BarBuilder(settings.bar_seconds, self._on_bar_built)
        self.strategy: Strategy = build_strategy(
            settings.strategy, self.symbols, self, settings.strategy_params
        )
        # A bar strategy keeps the base class's on_quote, which returns None: not calling
        # it saves a call on every quote.
        on_quote = self.strategy.on_quote
        inherited = getattr(on_quote, "__func__", None) is Strategy.on_quote
        self._strategy_on_quote: Callable[[Quote], StrategyOutput] | None = (
            None if inherited else on_quote
        )
        self._reconcile_every = timedelta(seconds=reconcile_seconds or settings.reconcile_seconds)
        self._history: dict[str, deque[float]] = {
            s: deque(maxlen=SPARKLINE_POINTS) for s in self.symbols
        }
        self._day_open_mid: dict[str, float] = {}
        self.calendar = TradingCalendar(
            settings.exchange_calendar, timedelta(minutes=settings.daily_reset_offset_minutes)
        )
        self._trading_day = self.calendar.trading_day(clock.now())
        self.recovery: RecoveryReport | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._stopping = False
        self.stopped = asyncio.Event()
        self.fatal_error: BaseException | None = None
        self.bus.subscribe(QuoteReceived, self._on_quote_received)
        broker.set_listener(self)

    # =============================================================== lifecycle
    async def start(self, *, drive_broker: bool = True) -> None:
        """Connect, subscribe, reconcile and start the core's tasks.

        ``drive_broker=False`` when a simulation driver moves the venue itself.
        """
        day_start = self.calendar.day_start(self._trading_day)
        recovered = await self._journal.load_recovery(day_start)
        restore_from_journal(self, recovered, day_start)
        if (
            recovered.trading_state is TradingState.TRIPPED
            and recovered.state_changed_at is not None
            and self.calendar.trading_day(recovered.state_changed_at) != self._trading_day
        ):
            self.risk.reset_breaker("new trading day")
        await self.broker.connect()
        self.broker.subscribe_quotes(self.symbols)
        self.recovery = await reconcile_with_broker(self, self._journal)
        if self.broker.connected:
            # The broker's cash is the truth (deposits, interest, fees we never saw).
            self.portfolio.rebase_cash(self.broker.account_values().cash)
        self._running = True
        self.reconcile()
        if drive_broker:
            self._spawn(self.broker.run(), "broker")
        self._spawn(self.execution.run(), "execution")
        self.alerts.raise_alert(
            AlertSeverity.INFO,
            "system_started",
            f"Trading Console started in {self.settings.trading_mode.upper()} mode "
            f"({', '.join(self.symbols)})",
        )

    def start_timer(self) -> None:
        """Live runs: drive `on_timer` from the event loop every 250 ms."""
        self._spawn(self._timer_loop(), "timer")

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self.fatal_error is None:
            # A crash in the core must stop the process loudly, not leave a zombie.
            self.fatal_error = exc
            logger.opt(exception=exc).critical("core task {name} crashed", name=task.get_name())
            self.stopped.set()

    async def _timer_loop(self) -> None:
        while True:
            await asyncio.sleep(TIMER_SECONDS)
            self.on_timer()

    async def wait_stopped(self) -> None:
        """Wait until a stop is requested or a core task crashed (then re-raise it)."""
        await self.stopped.wait()
        if self.fatal_error is not None:
            raise self.fatal_error

    async def stop(self, reason: str = "operator stop") -> None:
        """Graceful stop: strategy off, working orders cancelled, records flushed by the caller."""
        if not self._running:
            return
        self._running = False
        self._stopping = True
        self.strategy.on_stop()
        self.execution.clear_targets()
        cancelled = self.execution.cancel_all(f"shutdown: {reason}")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.execution.drain(), timeout=5)
        if cancelled:
            await self._await_cancels(timeout=3.0)
        self._record_daily_pnl()
        self.alerts.raise_alert(AlertSeverity.INFO, "system_stopped", f"Trading stopped: {reason}")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.broker.disconnect()
        self.stopped.set()

    async def _await_cancels(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.execution.working_orders() and loop.time() < deadline:
            await asyncio.sleep(0.02)

    # =============================================================== broker listener
    def on_quote(self, quote: Quote) -> None:
        self.feed.on_raw_quote(quote)

    def on_order_status(self, update: OrderStatusUpdate) -> None:
        self.execution.on_order_status(update)

    def on_fill(self, fill: Fill) -> None:
        if self.execution.on_fill(fill):
            self._check_breaker()

    def on_broker_error(self, code: int, message: str, client_order_id: str | None) -> None:
        logger.warning(
            "broker error {code}: {message}",
            code=code,
            message=message,
            client_order_id=client_order_id,
        )
        self.bus.publish(BrokerErrorReported(code, message, self.clock.now(), client_order_id))
        self.execution.on_broker_error(code, message, client_order_id)

    def on_connection_changed(self, connected: bool, message: str) -> None:
        # While disconnected, risk refuses every risk-increasing order by itself (and the
        # console shows DISCONNECTED); on reconnect the books are reconciled at once, and a
        # mismatch halts. A clean reconnect therefore needs no operator action.
        if not connected and self._stopping:
            logger.info("broker disconnected after stop: {message}", message=message)
            return  # our own shutdown, not an incident to page anyone about
        self.bus.publish(BrokerConnectionChanged(connected, message, self.clock.now()))
        if connected and self._running:
            self.reconcile()

    def on_feed_switched(self, symbol: str, source: QuoteSource, reason: str) -> None:
        self.bus.publish(FeedSwitched(symbol, str(source), reason, self.clock.now()))

    # =============================================================== hot path
    def _on_quote_received(self, event: QuoteReceived) -> None:
        quote = event.quote
        symbol = quote.symbol
        mid = (quote.bid + quote.ask) / 2.0  # exactly Quote.mid, minus a property call
        day_open = self._day_open_mid
        if symbol not in day_open:
            day_open[symbol] = mid
        equity_moved = self.portfolio.mark(symbol, mid)
        self.bars.on_quote(quote)
        on_quote = self._strategy_on_quote
        if on_quote is not None:
            output = on_quote(quote)
            if output is not None:
                self._act(output)
        # P&L limits can only be crossed when equity moved: here that is a re-mark of a
        # held position. Fills check on their own (on_fill), and the timer every 250 ms.
        if equity_moved and self.risk.evaluate():  # _check_breaker, one call fewer
            self._after_trip()

    def _on_bar_built(self, bar: Bar) -> None:
        self._history[bar.symbol].append(bar.close)
        self.bus.publish(BarClosed(bar))
        self._act(self.strategy.on_bar(bar))

    def _act(self, output: StrategyOutput) -> None:
        if output is None or not self._running:
            return
        if type(output) is TargetPosition:  # the common case, without building a tuple
            self.bus.publish(TargetChanged(output, self.clock.now()))
            self.execution.on_target(output)
            return
        items: Sequence[TargetPosition | OrderIntent] = (
            (output,) if isinstance(output, TargetPosition | OrderIntent) else output
        )
        for item in items:
            if isinstance(item, TargetPosition):
                self.bus.publish(TargetChanged(item, self.clock.now()))
                self.execution.on_target(item)
            else:
                self.execution.on_intent(item)

    def _check_breaker(self) -> None:
        if self.risk.evaluate():
            self._after_trip()

    # =============================================================== timer work
    def on_timer(self) -> None:
        now = self.clock.now()
        self.bars.close_due(now)
        self._check_stop_file()
        self._check_breaker()
        self._check_daily_reset(now)
        last = self.execution.last_reconcile_at
        due = last is None or now - last >= self._reconcile_every
        if self._running and self.broker.connected and due:
            self.reconcile(settle=RECONCILE_SETTLE)

    def _check_stop_file(self) -> None:
        # os.access answers without raising: Path.exists() builds a FileNotFoundError on
        # every timer tick while there is no STOP file (~5 µs; a backtest ticks a lot).
        if os.access(self.settings.stop_file, os.F_OK) and not (
            self.risk.state is TradingState.HALTED and self.risk.state_reason == STOP_FILE_REASON
        ):
            if self.risk.state is TradingState.TRIPPED:
                return
            logger.warning("STOP file seen: halting", path=str(self.settings.stop_file))
            self.halt(STOP_FILE_REASON)

    def _check_daily_reset(self, now: datetime) -> None:
        day = self.calendar.trading_day(now)
        if day == self._trading_day:
            return
        self._record_daily_pnl()
        logger.info("daily reset", previous=str(self._trading_day), day=str(day))
        self._trading_day = day
        self.portfolio.start_new_day()
        self.risk.start_new_day()
        self._day_open_mid.clear()
        if self.risk.state is TradingState.TRIPPED:
            self.risk.reset_breaker("new trading day")

    def _record_daily_pnl(self) -> None:
        s = self.portfolio.summary()
        self.bus.publish(
            DailyPnlRecorded(
                day=self._trading_day.isoformat(),
                realized=s.realized,
                unrealized=s.unrealized,
                commissions=s.commissions,
                total=s.total,
                peak_equity=s.peak_equity,
                max_drawdown_pct=s.max_drawdown_pct,
                ts=self.clock.now(),
            )
        )

    # =============================================================== operator actions
    def halt(self, reason: str) -> bool:
        """No new risk-increasing orders; working orders are cancelled."""
        changed = self.risk.halt(reason)
        if changed:
            self.execution.clear_targets()
            self.execution.cancel_all(f"halted: {reason}")
        return changed

    def resume(self, reason: str = "operator resumed") -> tuple[bool, str]:
        """Back to ACTIVE from HALTED; refused while the STOP file exists or when tripped."""
        if self.settings.stop_file.exists():
            return False, f"remove {self.settings.stop_file} first"
        if self.risk.state is TradingState.TRIPPED:
            return False, "breaker tripped: use reset breaker"
        if not self.broker.connected:
            return False, "broker disconnected"
        return self.risk.resume(reason), "resumed"

    def flatten(self, reason: str = "operator flatten") -> list[str]:
        """Cancel working orders and close every position with market orders (any state)."""
        symbols = self.execution.flatten(reason)
        self.alerts.raise_alert(
            AlertSeverity.WARNING,
            "flatten",
            f"Flatten: {reason} ({', '.join(symbols) or 'no positions'})",
        )
        return symbols

    def reset_breaker(self, reason: str = "operator reset") -> bool:
        return self.risk.reset_breaker(reason)

    def _after_trip(self) -> None:
        self.execution.clear_targets()
        self.execution.cancel_all("circuit breaker")
        self.execution.flatten("circuit breaker")

    def reconcile(self, settle: timedelta = timedelta(0)) -> None:
        """Compare with the broker; a difference beyond tolerance halts (see settle)."""
        mismatches = self.execution.reconcile(settle)
        tolerance = self.settings.reconcile_tolerance_shares
        worst = max((abs(m.internal_quantity - m.broker_quantity) for m in mismatches), default=0)
        if worst > tolerance:
            self.halt("reconciliation mismatch")

    # =============================================================== strategy context
    def position(self, symbol: str) -> int:
        return self.portfolio.quantity(symbol)

    def latest_quote(self, symbol: str) -> Quote | None:
        return self.feed.latest(symbol)

    def now(self) -> datetime:
        return self.clock.now()

    @property
    def running(self) -> bool:
        return self._running

    # =============================================================== snapshot
    def snapshot(self) -> SystemSnapshot:
        now = self.clock.now()
        account = self.broker.account_values()
        broker_positions = self.broker.positions()
        return SystemSnapshot(
            now=now,
            mode=self.settings.trading_mode,
            account_id=account.account_id,
            broker_name=self.broker.name,
            connected=self.broker.connected,
            risk=RiskView(
                state=self.risk.state,
                state_reason=self.risk.state_reason,
                trip_reason=self.risk.trip_reason,
                daily_loss_limit=self.risk.limits.daily_loss_limit,
                loss_limit_usage=self.risk.loss_limit_usage(),
                max_leverage=self.risk.limits.max_leverage,
                clamped=self.risk.clamped_count,
                rejected=self.risk.rejected_count,
            ),
            pnl=self.portfolio.summary(),
            quotes=tuple(self._quote_row(s) for s in self.symbols),
            indicators=tuple(self._indicator_row(s) for s in self.symbols),
            positions=self._position_rows(broker_positions),
            orders=self._order_rows(),
            alerts=tuple(reversed(self.alerts.recent)),
            stale_symbols=tuple(self.feed.stale_symbols()),
            quotes_accepted=sum(self.feed.accepted.values()),
            quotes_rejected=sum(self.feed.rejected.values()),
            strategy_name=type(self.strategy).__name__,
        )

    def _quote_row(self, symbol: str) -> QuoteRow:
        q = self.feed.latest(symbol)
        if q is None:
            return QuoteRow(symbol, None, None, None, None, None, None, "-", True, 0)
        open_mid = self._day_open_mid.get(symbol)
        change = (q.mid / open_mid - 1.0) * 100.0 if open_mid else None
        return QuoteRow(
            symbol=symbol,
            bid=q.bid,
            ask=q.ask,
            last=q.last,
            change_pct=change,
            spread=q.spread,
            age_seconds=self.feed.age_seconds(symbol),
            source=str(q.source),
            stale=self.feed.is_stale(symbol),
            rejected=self.feed.rejected[symbol],
        )

    def _indicator_row(self, symbol: str) -> IndicatorRow:
        view = self.strategy.indicator_view(symbol)
        return IndicatorRow(
            symbol=symbol,
            values=tuple(view.values.items()),
            signal=view.signal,
            target=self.execution.target(symbol) if view.target is None else view.target,
            history=tuple(self._history[symbol]),
        )

    def _position_rows(self, broker_positions: dict[str, int]) -> tuple[PositionRow, ...]:
        symbols = sorted(
            {s for s, p in self.portfolio.positions.items() if p.quantity or p.realized_pnl}
            | set(broker_positions)
        )
        rows = []
        for s in symbols:
            p = self.portfolio.position(s)
            broker_qty = broker_positions.get(s, 0)
            rows.append(
                PositionRow(
                    symbol=s,
                    quantity=p.quantity,
                    avg_cost=p.avg_cost,
                    market_value=p.market_value,
                    unrealized=p.unrealized_pnl,
                    realized=p.realized_pnl,
                    broker_quantity=broker_qty,
                    reconciled=broker_qty == p.quantity,
                )
            )
        return tuple(rows)

    def _order_rows(self, limit: int = 200) -> tuple[OrderRow, ...]:
        # The newest first, without copying every order held (a snapshot runs 4-10 times
        # a second).
        newest = islice(reversed(self.execution.orders.values()), limit)
        return tuple(
            OrderRow(
                client_order_id=o.client_order_id,
                created_at=o.created_at,
                symbol=o.symbol,
                side=o.side,
                quantity=o.quantity,
                filled=o.filled_quantity,
                order_type=o.order_type,
                limit_price=o.limit_price,
                avg_fill_price=o.avg_fill_price,
                status=o.status,
                message=o.last_message,
            )
            for o in newest
        )
