"""The operator's actions and the clock-driven safety work, in one place.

Every action that changes trading — a key in the console, a phone command, the STOP
file, a reconciliation mismatch, the daily reset — comes here and answers with an
`ActionResult`: done, or refused with the reason. Reducing risk (halt, flatten) is
never refused; going back to trading (resume, breaker reset) is refused while the
state forbids it. The circuit breaker's own logic is core.breaker's; its reset
comes through here.

`on_timer` is the safety timer: every 250 ms in live runs (TradingSystem's timer
task), after every step in simulations (core.simulation). It closes due bars, looks
for the STOP file, checks the breaker, runs the daily reset and the periodic
reconciliation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from loguru import logger

from core.backend import ActionResult, BreakerReview
from core.bars import BarBuilder
from core.breaker import CircuitBreaker
from core.brokers.base import Broker
from core.bus import EventBus
from core.calendar import TradingCalendar
from core.clock import Clock
from core.config import Settings
from core.events import DailyPnlRecorded
from core.execution import ExecutionEngine
from core.model import AlertSeverity, HaltReason, TradingState
from core.monitoring import AlertRaiser
from core.pipeline import TradingPipeline
from core.portfolio import Portfolio
from core.risk import RiskManager

# The periodic check leaves out symbols with a fill this recent (or an order working):
# a broker's position report may trail its execution report by a moment.
RECONCILE_SETTLE = timedelta(seconds=5)
NEW_TRADING_DAY = "new trading day"


@dataclass(frozen=True, slots=True)
class SafetySettings:
    """The settings the safety work reads (from core.config.Settings)."""

    stop_file: Path
    reconcile_every: timedelta
    reconcile_tolerance_shares: int

    @classmethod
    def from_settings(cls, s: Settings, reconcile_seconds: float | None = None) -> SafetySettings:
        return cls(
            stop_file=s.stop_file,
            reconcile_every=timedelta(seconds=reconcile_seconds or s.reconcile_seconds),
            reconcile_tolerance_shares=s.reconcile_tolerance_shares,
        )


class Controls:
    """Operator actions (halt, resume, flatten, breaker reset, reconcile) and the timer."""

    def __init__(
        self,
        settings: SafetySettings,
        *,
        bus: EventBus,
        clock: Clock,
        broker: Broker,
        risk: RiskManager,
        breaker: CircuitBreaker,
        execution: ExecutionEngine,
        portfolio: Portfolio,
        pipeline: TradingPipeline,
        bars: BarBuilder,
        alerts: AlertRaiser,
        calendar: TradingCalendar,
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._clock = clock
        self._broker = broker
        self._risk = risk
        self._breaker = breaker
        self._execution = execution
        self._portfolio = portfolio
        self._pipeline = pipeline
        self._bars = bars
        self._alerts = alerts
        self._calendar = calendar
        self.trading_day: date = calendar.trading_day(clock.now())

    # =============================================================== operator actions
    def halt(self, reason: HaltReason, detail: str = "") -> ActionResult:
        """No new risk-increasing orders; desired positions forgotten, working orders
        cancelled. Never refused; a tripped breaker stays tripped (the stronger state)."""
        text = reason.text(detail)
        working = self._execution.working_count
        if not self._risk.halt(text):
            return ActionResult(False, f"already {self._risk.state}: {self._risk.state_reason}")
        self._execution.clear_targets()
        self._execution.cancel_all(f"halted: {text}")
        return ActionResult(True, f"halted; {working} working order(s) cancelled")

    def resume(self, detail: str = "") -> ActionResult:
        """Back to ACTIVE from HALTED; refused while the STOP file exists, when tripped,
        or while the broker is disconnected."""
        if self._settings.stop_file.exists():
            return ActionResult(False, f"remove {self._settings.stop_file} first")
        if self._risk.state is TradingState.TRIPPED:
            return ActionResult(False, "breaker tripped: use reset breaker")
        if not self._broker.connected:
            return ActionResult(False, "broker disconnected")
        reason = f"operator resumed ({detail})" if detail else "operator resumed"
        if not self._risk.resume(reason):
            return ActionResult(False, f"not halted (state {self._risk.state})")
        return ActionResult(True, "resumed")

    def flatten(self, reason: str) -> ActionResult:
        """Cancel working orders and close every position with market orders (any state)."""
        symbols = self._execution.flatten(reason)
        self._alerts.raise_alert(
            AlertSeverity.WARNING,
            "flatten",
            f"Flatten: {reason} ({', '.join(symbols) or 'no positions'})",
        )
        closing = ", ".join(symbols) if symbols else "no positions left to close"
        return ActionResult(True, f"flatten sent: {closing}", tuple(symbols))

    def reset_breaker(self, reason: str) -> ActionResult:
        if not self._breaker.reset(reason):
            return ActionResult(False, f"the breaker is not tripped (state {self._risk.state})")
        return ActionResult(True, "breaker reset: trading ACTIVE")

    def breaker_review(self) -> BreakerReview:
        return BreakerReview(
            tripped=self._risk.state is TradingState.TRIPPED,
            trip_reason=self._risk.trip_reason,
            pnl=self._portfolio.summary(),
            daily_loss_limit=self._breaker.limits.daily_loss_limit,
            loss_limit_usage=self._breaker.loss_limit_usage(),
        )

    def reconcile(self, settle: timedelta = timedelta(0)) -> None:
        """Compare with the broker; a difference beyond tolerance halts (see settle)."""
        mismatches = self._execution.reconcile(settle)
        tolerance = self._settings.reconcile_tolerance_shares
        worst = max((abs(m.internal_quantity - m.broker_quantity) for m in mismatches), default=0)
        if worst > tolerance:
            self.halt(HaltReason.RECONCILIATION_MISMATCH)

    def on_reconnected(self) -> None:
        """The broker is back and has resynchronised: reconcile (a mismatch halts, which
        cancels what was queued), then send the exits queued while it was away, re-sized
        to the positions now, and put every position's stop right."""
        self.reconcile()
        self._execution.release_held()

    # =============================================================== safety timer
    def on_timer(self) -> None:
        now = self._clock.now()
        self._bars.close_due(now)
        self._check_stop_file()
        self._breaker.check()
        self._check_daily_reset(now)
        protection = self._execution.protection
        protection.on_timer()
        last = self._execution.last_reconcile_at
        due = last is None or now - last >= self._settings.reconcile_every
        if self._pipeline.trading and self._broker.connected and due:
            self.reconcile(settle=RECONCILE_SETTLE)
            # A position without its stop at the broker gets one, a stop left for a
            # flat symbol goes (a rejected stop is retried after its back-off).
            if protection.enabled:
                protection.sync_all()

    def _check_stop_file(self) -> None:
        # os.access answers without raising: Path.exists() builds a FileNotFoundError on
        # every timer tick while there is no STOP file (~5 µs; a backtest ticks a lot).
        if not os.access(self._settings.stop_file, os.F_OK):
            return
        if self._risk.halt_reason is HaltReason.STOP_FILE or self._breaker.tripped:
            return
        logger.warning("STOP file seen: halting", path=str(self._settings.stop_file))
        self.halt(HaltReason.STOP_FILE)

    def _check_daily_reset(self, now: datetime) -> None:
        day = self._calendar.trading_day(now)
        if day == self.trading_day:
            return
        self.record_daily_pnl()
        logger.info("daily reset", previous=str(self.trading_day), day=str(day))
        self.trading_day = day
        self._portfolio.start_new_day()
        self._breaker.start_new_day()
        self._pipeline.start_new_day()
        self._breaker.reset(NEW_TRADING_DAY)

    def record_daily_pnl(self) -> None:
        s = self._portfolio.summary()
        self._bus.publish(
            DailyPnlRecorded(
                day=self.trading_day.isoformat(),
                realized=s.realized,
                unrealized=s.unrealized,
                commissions=s.commissions,
                total=s.total,
                peak_equity=s.peak_equity,
                max_drawdown_pct=s.max_drawdown_pct,
                ts=self._clock.now(),
            )
        )
