"""Pre-trade checks, the trading state and the circuit breaker.

Every order proposal passes `RiskManager.review` before it can be sent. Limits
are judged on the position *after* the order. The part of an order that only
reduces exposure is always allowed (flatten must work in every state); the
risk-increasing part is clamped to the tightest limit, or rejected when
nothing of it fits. Each clamp or reject is published with its reason.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger

from core.bus import EventBus
from core.clock import Clock
from core.config import Settings
from core.events import (
    BreakerReset,
    BreakerTripped,
    DrawdownExceeded,
    IntentClamped,
    RiskRejected,
    TradingStateChanged,
)
from core.marketdata import MarketDataFeed
from core.model import OrderIntent, OrderType, Side, TradingState
from core.portfolio import Portfolio


@dataclass(frozen=True, slots=True)
class RiskLimits:
    max_position_size: float
    max_leverage: float
    daily_loss_limit: float
    max_order_notional: float
    max_orders_per_minute: int
    price_collar_pct: float
    drawdown_alert_pct: float

    @classmethod
    def from_settings(cls, s: Settings) -> RiskLimits:
        return cls(
            max_position_size=s.max_position_size,
            max_leverage=s.max_leverage,
            daily_loss_limit=s.daily_loss_limit,
            max_order_notional=s.max_order_notional,
            max_orders_per_minute=s.max_orders_per_minute,
            price_collar_pct=s.price_collar_pct,
            drawdown_alert_pct=s.drawdown_alert_pct,
        )


class RiskManager:
    def __init__(
        self,
        limits: RiskLimits,
        bus: EventBus,
        clock: Clock,
        portfolio: Portfolio,
        feed: MarketDataFeed,
        broker_connected: Callable[[], bool],
    ) -> None:
        self.limits = limits
        self._bus = bus
        self._clock = clock
        self._portfolio = portfolio
        self._feed = feed
        self._broker_connected = broker_connected
        self.state = TradingState.ACTIVE
        self.state_reason = ""
        self.trip_reason = ""
        self._sent: deque[float] = deque()
        self._drawdown_alerted = False
        # The P&L at which the breaker trips. After an operator reset while the loss is
        # still beyond the limit, it re-arms at the P&L of that moment: any further loss
        # trips again at once, instead of re-tripping on the very next quote.
        self._rearmed_at: float | None = None
        self.clamped_count = 0
        self.rejected_count = 0

    # ------------------------------------------------------------ trading state
    def _set_state(self, state: TradingState, reason: str) -> bool:
        if state is self.state and reason == self.state_reason:
            return False
        previous = self.state
        self.state, self.state_reason = state, reason
        logger.info(
            "trading state {state}", state=str(state), previous=str(previous), reason=reason
        )
        self._bus.publish(TradingStateChanged(previous, state, reason, self._clock.now()))
        return True

    def halt(self, reason: str) -> bool:
        """No new risk; a tripped breaker stays tripped (it is the stronger state)."""
        if self.state is TradingState.TRIPPED:
            return False
        return self._set_state(TradingState.HALTED, reason)

    def resume(self, reason: str = "operator resumed") -> bool:
        if self.state is not TradingState.HALTED:
            return False
        return self._set_state(TradingState.ACTIVE, reason)

    def trip(self, reason: str) -> bool:
        if self.state is TradingState.TRIPPED:
            return False
        self.trip_reason = reason
        self._set_state(TradingState.TRIPPED, reason)
        self._bus.publish(BreakerTripped(reason, self._portfolio.daily_pnl, self._clock.now()))
        return True

    def reset_breaker(self, reason: str) -> bool:
        if self.state is not TradingState.TRIPPED:
            return False
        self.trip_reason = ""
        pnl = self._portfolio.daily_pnl
        self._rearmed_at = pnl if pnl <= -self.limits.daily_loss_limit else None
        self._set_state(TradingState.ACTIVE, reason)
        self._bus.publish(BreakerReset(reason, self._clock.now()))
        return True

    def start_new_day(self) -> None:
        self._rearmed_at = None
        self._drawdown_alerted = False

    def restore(self, state: TradingState, reason: str) -> None:
        """Put back a persisted state on start (a restart does not clear a trip)."""
        self.state, self.state_reason = state, reason
        if state is TradingState.TRIPPED:
            self.trip_reason = reason

    # ----------------------------------------------------------------- limits
    def evaluate(self) -> bool:
        """Check P&L-based limits; returns True when the breaker tripped just now."""
        pnl = self._portfolio.daily_pnl
        limit = self.limits.daily_loss_limit
        rearmed = self._rearmed_at
        breached = pnl <= -limit if rearmed is None else pnl < rearmed
        if breached and self.state is not TradingState.TRIPPED:
            extra = "" if rearmed is None else " (further loss after an operator reset)"
            return self.trip(f"daily loss limit: P&L {pnl:+,.2f} <= -{limit:,.2f}{extra}")
        dd = self._portfolio.drawdown_pct
        if dd >= self.limits.drawdown_alert_pct and not self._drawdown_alerted:
            self._drawdown_alerted = True
            summary = self._portfolio.summary()
            self._bus.publish(
                DrawdownExceeded(dd, summary.peak_equity, summary.equity, self._clock.now())
            )
        elif dd < self.limits.drawdown_alert_pct / 2:
            self._drawdown_alerted = False  # re-arm once it has clearly recovered
        return False

    def loss_limit_usage(self) -> float:
        """Fraction of the daily loss limit used (0 when in profit)."""
        return max(0.0, -self._portfolio.daily_pnl) / self.limits.daily_loss_limit

    # -------------------------------------------------------------- pre-trade
    def review(self, intent: OrderIntent, position: int) -> int:
        """Return the approved quantity (0 = rejected); publishes clamp/reject events."""
        if intent.quantity <= 0:
            return self._reject(intent, f"quantity must be positive, got {intent.quantity}")
        sign = intent.side.sign
        reduce_part = min(intent.quantity, abs(position)) if position * sign < 0 else 0
        if reduce_part == intent.quantity:
            return intent.quantity  # only reduces exposure: allowed in every state

        caps: list[tuple[int, str]] = []
        blocked = self._blocked_reason(intent.symbol)
        if blocked:
            caps.append((0, blocked))
        else:
            caps.extend(self._limit_caps(intent, position))

        approved = intent.quantity
        binding = ""
        for cap, reason in caps:
            if cap < approved:
                approved, binding = max(cap, 0), reason
        approved = max(approved, reduce_part)
        if approved <= 0:
            return self._reject(intent, binding)
        if approved < intent.quantity:
            self.clamped_count += 1
            logger.info(
                "order clamped {q}->{a}: {reason}",
                symbol=intent.symbol,
                q=intent.quantity,
                a=approved,
                reason=binding,
            )
            self._bus.publish(IntentClamped(intent, approved, binding, self._clock.now()))
        if approved > reduce_part:
            self._sent.append(self._clock.monotonic())
        return approved

    def _blocked_reason(self, symbol: str) -> str | None:
        if self.state is not TradingState.ACTIVE:
            return f"trading {self.state}: {self.state_reason}"
        if not self._broker_connected():
            return "broker disconnected"
        if self._feed.is_stale(symbol):
            return "no fresh quote (stale data)"
        now = self._clock.monotonic()
        while self._sent and now - self._sent[0] >= 60.0:
            self._sent.popleft()
        if len(self._sent) >= self.limits.max_orders_per_minute:
            return f"MAX_ORDERS_PER_MINUTE {self.limits.max_orders_per_minute} reached"
        return None

    def _limit_caps(self, intent: OrderIntent, position: int) -> list[tuple[int, str]]:
        quote = self._feed.latest(intent.symbol)
        assert quote is not None  # _blocked_reason guarantees a fresh quote
        price = quote.ask if intent.side is Side.BUY else quote.bid
        sign = intent.side.sign
        lim = self.limits
        caps: list[tuple[int, str]] = []
        if intent.order_type is OrderType.LIMIT:
            if intent.limit_price is None or intent.limit_price <= 0:
                return [(0, "limit order without a positive limit price")]
            off = abs(intent.limit_price - quote.mid) / quote.mid * 100.0
            if off > lim.price_collar_pct:
                return [
                    (
                        0,
                        f"PRICE_COLLAR_PCT: limit {intent.limit_price:.4f} is {off:.2f}% "
                        f"from mid {quote.mid:.4f} (max {lim.price_collar_pct}%)",
                    )
                ]
            price = max(price, intent.limit_price) if sign > 0 else min(price, intent.limit_price)

        max_shares = math.floor(lim.max_position_size / price)
        caps.append(
            (
                max_shares - sign * position,
                f"MAX_POSITION_SIZE ${lim.max_position_size:,.0f} ({max_shares} sh at {price:.2f})",
            )
        )
        caps.append(
            (
                math.floor(lim.max_order_notional / price),
                f"MAX_ORDER_NOTIONAL ${lim.max_order_notional:,.0f}",
            )
        )
        equity = self._portfolio.equity
        held = self._portfolio.positions.get(intent.symbol)
        own_gross = abs(held.market_value) if held else 0.0
        room = lim.max_leverage * equity - (self._portfolio.gross_exposure - own_gross)
        max_abs_after = math.floor(room / price) if equity > 0 else 0
        caps.append(
            (
                max_abs_after - sign * position,
                f"MAX_LEVERAGE {lim.max_leverage}x of equity ${equity:,.0f}",
            )
        )
        return caps

    def _reject(self, intent: OrderIntent, reason: str) -> int:
        self.rejected_count += 1
        logger.warning(
            "order rejected by risk: {reason}",
            symbol=intent.symbol,
            side=str(intent.side),
            qty=intent.quantity,
            reason=reason,
        )
        self._bus.publish(RiskRejected(intent, reason, self._clock.now()))
        return 0
