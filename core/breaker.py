"""The circuit breaker: its triggers, its decision and its consequence, in one place.

Triggers — `check()` is called:
- by the quote path (core.pipeline) after a quote re-marks a held position, the only
  way equity moves between fills;
- by the quote path after every new fill (price and commission move equity);
- by the safety timer (core.controls) every 250 ms, whatever happened.

Decision — it trips when today's P&L reaches ``-DAILY_LOSS_LIMIT``; after an operator
reset while the loss is still beyond the limit, it re-arms at the P&L of that moment,
so any further loss trips again at once. A drawdown past ``DRAWDOWN_ALERT_PCT`` is an
alert, not a trip (re-armed once the drawdown has halved).

Consequence — trading state TRIPPED (risk refuses every risk-increasing order and the
state is persisted, so a restart keeps it), `BreakerTripped` (alerted), desired
positions forgotten, working orders cancelled, every position flattened.

It clears only by `reset()`: the operator's confirmed reset (core.controls) or the
next trading day's reset.
"""

from __future__ import annotations

from typing import Protocol

from core.bus import EventBus
from core.clock import Clock
from core.events import BreakerReset, BreakerTripped, DrawdownExceeded
from core.model import TradingState
from core.portfolio import PnlSummary
from core.risk import RiskLimits, RiskManager

TRIPPED = TradingState.TRIPPED
CIRCUIT_BREAKER = "circuit breaker"


class BreakerBooks(Protocol):
    """What the breaker reads of the books (core.portfolio.Portfolio is one)."""

    @property
    def daily_pnl(self) -> float: ...

    @property
    def drawdown_pct(self) -> float: ...

    def summary(self) -> PnlSummary: ...


class OrderFlow(Protocol):
    """What the breaker does to orders when it trips (core.execution.ExecutionEngine)."""

    def clear_targets(self) -> None: ...

    def cancel_all(self, reason: str) -> int: ...

    def flatten(self, reason: str) -> list[str]: ...


class CircuitBreaker:
    def __init__(
        self,
        limits: RiskLimits,
        bus: EventBus,
        clock: Clock,
        books: BreakerBooks,
        risk: RiskManager,
        orders: OrderFlow,
    ) -> None:
        self.limits = limits
        self._bus = bus
        self._clock = clock
        self._books = books
        self._risk = risk
        self._orders = orders
        # The P&L at which the breaker trips again after an operator reset made while
        # the loss was still beyond the limit (None: at the limit itself).
        self._rearmed_at: float | None = None
        self._drawdown_alerted = False

    @property
    def tripped(self) -> bool:
        return self._risk.state is TRIPPED

    @property
    def trip_reason(self) -> str:
        return self._risk.trip_reason

    def check(self) -> bool:
        """Judge today's P&L and drawdown; returns True when the breaker tripped just now."""
        books = self._books
        pnl = books.daily_pnl
        limit = self.limits.daily_loss_limit
        rearmed = self._rearmed_at
        breached = pnl <= -limit if rearmed is None else pnl < rearmed
        if breached and self._risk.state is not TRIPPED:
            extra = "" if rearmed is None else " (further loss after an operator reset)"
            self._trip(f"daily loss limit: P&L {pnl:+,.2f} <= -{limit:,.2f}{extra}", pnl)
            return True
        dd = books.drawdown_pct
        if dd >= self.limits.drawdown_alert_pct and not self._drawdown_alerted:
            self._drawdown_alerted = True
            summary = books.summary()
            self._bus.publish(
                DrawdownExceeded(dd, summary.peak_equity, summary.equity, self._clock.now())
            )
        elif dd < self.limits.drawdown_alert_pct / 2:
            self._drawdown_alerted = False  # re-arm once it has clearly recovered
        return False

    def _trip(self, reason: str, pnl: float) -> None:
        self._risk.enter_tripped(reason)
        self._bus.publish(BreakerTripped(reason, pnl, self._clock.now()))
        orders = self._orders
        orders.clear_targets()
        orders.cancel_all(CIRCUIT_BREAKER)
        orders.flatten(CIRCUIT_BREAKER)

    def reset(self, reason: str) -> bool:
        """Back to ACTIVE (operator, or a new trading day); False when not tripped."""
        if self._risk.state is not TRIPPED:
            return False
        pnl = self._books.daily_pnl
        self._rearmed_at = pnl if pnl <= -self.limits.daily_loss_limit else None
        self._risk.leave_tripped(reason)
        self._bus.publish(BreakerReset(reason, self._clock.now()))
        return True

    def start_new_day(self) -> None:
        self._rearmed_at = None
        self._drawdown_alerted = False

    def loss_limit_usage(self) -> float:
        """Fraction of the daily loss limit used (0 when in profit)."""
        return max(0.0, -self._books.daily_pnl) / self.limits.daily_loss_limit
