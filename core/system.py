"""TradingSystem: builds the core from its parts and runs it (start, stop); nothing else.

Where each behaviour lives, one hop from here:
- a quote's path to an order, and a fill's to the books: `core.pipeline.TradingPipeline`
  (the broker's listener and the strategy's context);
- the circuit breaker, its triggers, decision and consequence: `core.breaker`;
- the operator's actions (halt, resume, flatten, breaker reset, reconcile) and the
  250 ms safety timer (STOP file, breaker, daily reset, periodic reconciliation):
  `core.controls.Controls`;
- restart recovery (journal, then the broker's word): `core.recovery`;
- what the console shows: `core.snapshot.SnapshotBuilder`.
TradingSystem implements `core.backend.ConsoleBackend`, the one interface the console uses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence
from datetime import timedelta

from loguru import logger

from core.backend import ActionResult, BreakerReview, ConsoleInfo, SystemSnapshot
from core.breaker import CircuitBreaker
from core.brokers.base import Broker
from core.bus import EventBus
from core.calendar import TradingCalendar
from core.clock import Clock
from core.config import Settings
from core.controls import NEW_TRADING_DAY, Controls, SafetySettings
from core.execution import ORDER_HISTORY, ExecutionEngine
from core.journal import Journal, NullJournal
from core.marketdata import MarketDataFeed
from core.model import Alert, AlertSeverity, HaltReason, TradingState
from core.monitoring import AlertRaiser
from core.pipeline import TradingPipeline
from core.portfolio import Portfolio
from core.protection import ProtectiveStops
from core.recovery import RecoveryParts, RecoveryReport, reconcile_with_broker, restore_from_journal
from core.risk import RiskLimits, RiskManager
from core.snapshot import SnapshotBuilder
from core.strategy.loader import build_strategy

TIMER_SECONDS = 0.25


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
        self.bus = bus = bus or EventBus()
        self.broker = broker
        self.symbols = symbols = settings.symbols
        self.feed = MarketDataFeed(
            bus,
            clock,
            symbols,
            max_jump_pct=settings.max_quote_jump_pct,
            stale_after_seconds=settings.stale_after_seconds,
        )
        cash = starting_cash if starting_cash is not None else settings.sim_starting_cash
        self.portfolio = Portfolio(cash)
        limits = RiskLimits.from_settings(settings)
        self.risk = RiskManager(
            limits, bus, clock, self.portfolio, self.feed, lambda: broker.connected
        )
        self._journal: Journal = journal or NullJournal()
        self.execution = ExecutionEngine(
            bus,
            clock,
            broker,
            self._journal,
            self.risk,
            self.portfolio,
            # With a journal every order is in the database, so memory keeps the recent
            # ones only; without one (backtests) `execution.orders` is the only record.
            order_history=ORDER_HISTORY if journal is not None else None,
            protection=ProtectiveStops(
                clock,
                self.portfolio,
                default_pct=settings.protective_stop_pct,
                default_trailing=settings.protective_stop_trailing,
            ),
        )
        self.breaker = CircuitBreaker(limits, bus, clock, self.portfolio, self.risk, self.execution)
        self.alerts = AlertRaiser(bus, clock)
        self.pipeline = TradingPipeline(
            bus=bus,
            clock=clock,
            feed=self.feed,
            portfolio=self.portfolio,
            execution=self.execution,
            breaker=self.breaker,
            bar_seconds=settings.bar_seconds,
            build_strategy=lambda context: build_strategy(
                settings.strategy, symbols, context, settings.strategy_params
            ),
        )
        self.strategy = self.pipeline.strategy
        self.bars = self.pipeline.bars
        self.calendar = TradingCalendar(
            settings.exchange_calendar, timedelta(minutes=settings.daily_reset_offset_minutes)
        )
        self.controls = Controls(
            SafetySettings.from_settings(settings, reconcile_seconds),
            bus=bus,
            clock=clock,
            broker=broker,
            risk=self.risk,
            breaker=self.breaker,
            execution=self.execution,
            portfolio=self.portfolio,
            pipeline=self.pipeline,
            bars=self.bars,
            alerts=self.alerts,
            calendar=self.calendar,
        )
        self.pipeline.on_reconnected = self.controls.on_reconnected
        self._snapshots = SnapshotBuilder(
            mode=settings.trading_mode,
            symbols=symbols,
            bus=bus,
            clock=clock,
            broker=broker,
            feed=self.feed,
            portfolio=self.portfolio,
            risk=self.risk,
            breaker=self.breaker,
            execution=self.execution,
            strategy=self.strategy,
            alerts=self.alerts.recent,
            day_open_mids=self.pipeline.day_open_mids,
        )
        self.info = ConsoleInfo(
            mode=settings.trading_mode,
            symbols=symbols,
            stop_file=settings.stop_file,
            refresh_hz=settings.ui_refresh_hz,
            exchange_calendar=settings.exchange_calendar,
        )
        self.recovery: RecoveryReport | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.stopped = asyncio.Event()
        self.fatal_error: BaseException | None = None
        broker.set_listener(self.pipeline)

    # =============================================================== lifecycle
    async def start(self, *, drive_broker: bool = True) -> None:
        """Recover, connect, subscribe, reconcile and start the core's tasks.

        ``drive_broker=False`` when a simulation driver moves the venue itself.
        """
        controls = self.controls
        day_start = self.calendar.day_start(controls.trading_day)
        recovered = await self._journal.load_recovery(day_start)
        parts = RecoveryParts(
            self.portfolio, self.execution, self.risk, self.broker, self.alerts, self.clock
        )
        restore_from_journal(parts, recovered, day_start)
        if (
            recovered.trading_state is TradingState.TRIPPED
            and recovered.state_changed_at is not None
            and self.calendar.trading_day(recovered.state_changed_at) != controls.trading_day
        ):
            self.breaker.reset(NEW_TRADING_DAY)
        await self.broker.connect()
        self.broker.subscribe_quotes(self.symbols)
        self.recovery = await reconcile_with_broker(parts, self._journal)
        # Every position has its stop at the broker, no stop rests for a flat symbol.
        self.execution.protection.arm()
        if self.broker.connected:
            # The broker's cash is the truth (deposits, interest, fees we never saw).
            self.portfolio.rebase_cash(self.broker.account_values().cash)
        self.pipeline.trading = True
        controls.reconcile()
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
        """Live runs: drive the safety timer (`Controls.on_timer`) every 250 ms."""
        self._spawn(self._timer_loop(), "timer")

    def on_timer(self) -> None:
        """Simulation drivers call this after each step (live runs: the timer task)."""
        self.controls.on_timer()

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
            self.controls.on_timer()

    async def wait_stopped(self) -> None:
        """Wait until a stop is requested or a core task crashed (then re-raise it)."""
        await self.stopped.wait()
        if self.fatal_error is not None:
            raise self.fatal_error

    async def stop(self, reason: str = "operator stop", *, timeout: float = 8.0) -> None:
        """Graceful stop: strategy off, working orders cancelled, records flushed by the caller.

        The waits for queued orders to go out and for cancels to be confirmed share
        ``timeout`` seconds (5:3), so a caller with a stop bound gets its day recorded and
        the "stopped" alert within it; the rest of the stop does not wait on the broker.
        """
        pipeline = self.pipeline
        if not pipeline.trading:
            return
        pipeline.trading = False
        pipeline.stopping = True
        self.strategy.on_stop()
        self.execution.clear_targets()
        cancelled = self.execution.cancel_all(f"shutdown: {reason}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.execution.drain(), timeout=timeout * 5 / 8)
        if cancelled:
            await self.execution.wait_no_working(timeout=max(deadline - loop.time(), 0.0))
        self.controls.record_daily_pnl()
        self.alerts.raise_alert(AlertSeverity.INFO, "system_stopped", f"Trading stopped: {reason}")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.broker.disconnect()
        self.stopped.set()

    @property
    def running(self) -> bool:
        return self.pipeline.trading

    # =============================================================== ConsoleBackend
    def snapshot(self) -> SystemSnapshot:
        return self._snapshots.build()

    def load_alert_history(self, alerts: Sequence[Alert]) -> None:
        self.alerts.load_history(list(alerts))

    def halt(self, detail: str = "") -> ActionResult:
        return self.controls.halt(HaltReason.OPERATOR, detail)

    def resume(self, detail: str = "") -> ActionResult:
        return self.controls.resume(detail)

    def flatten(self, detail: str = "") -> ActionResult:
        return self.controls.flatten(
            f"operator flatten ({detail})" if detail else "operator flatten"
        )

    def reset_breaker(self, detail: str = "") -> ActionResult:
        return self.controls.reset_breaker(
            f"operator reset ({detail})" if detail else "operator reset"
        )

    def breaker_review(self) -> BreakerReview:
        return self.controls.breaker_review()


def _operator(action: str, detail: str) -> str:
    """The reason text of an operator action: ``operator flatten (f)`` for key f."""
    return f"{action} ({detail})" if detail else action
