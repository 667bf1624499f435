"""Pre-trade checks and the trading state.

Every order proposal passes `RiskManager.review` before it can be sent. Limits
are judged on the position *after* the order. The part of an order that only
reduces exposure is always allowed (flatten must work in every state); the
risk-increasing part is clamped to the tightest limit, or rejected when
nothing of it fits. Each clamp or reject is published with its reason.

The trading state (ACTIVE / HALTED / TRIPPED) lives here because every review
reads it; who changes it is elsewhere: the operator's actions and the safety
timer in `core.controls`, the circuit breaker in `core.breaker`. Risk sees the
portfolio and the market only through the read-only views below.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from loguru import logger

from core.bus import EventBus
from core.clock import Clock
from core.config import Settings
from core.events import IntentClamped, RiskRejected, TradingStateChanged
from core.model import BUY, HaltReason, OrderIntent, Position, Quote, TradingState


class PortfolioView(Protocol):
    """What risk reads of the books (core.portfolio.Portfolio is one)."""

    @property
    def positions(self) -> Mapping[str, Position]: ...

    @property
    def equity(self) -> float: ...

    @property
    def gross_exposure(self) -> float: ...


class MarketView(Protocol):
    """What risk reads of the market (core.marketdata.MarketDataFeed is one)."""

    def latest(self, symbol: str) -> Quote | None: ...

    def is_stale(self, symbol: str) -> bool: ...


# Which limit bound an order (compared by identity in _apply_limits).
_NO_LIMIT = "none"
_POSITION_SIZE = "position size"
_ORDER_NOTIONAL = "order notional"
_LEVERAGE = "leverage"


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
        portfolio: PortfolioView,
        feed: MarketView,
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

    @property
    def halt_reason(self) -> HaltReason | None:
        """Why trading is halted; None unless HALTED."""
        if self.state is not TradingState.HALTED:
            return None
        return HaltReason.of(self.state_reason)

    def halt(self, reason: str) -> bool:
        """No new risk; a tripped breaker stays tripped (it is the stronger state)."""
        if self.state is TradingState.TRIPPED:
            return False
        return self._set_state(TradingState.HALTED, reason)

    def resume(self, reason: str = "operator resumed") -> bool:
        if self.state is not TradingState.HALTED:
            return False
        return self._set_state(TradingState.ACTIVE, reason)

    def enter_tripped(self, reason: str) -> bool:
        """The breaker's state change (core.breaker decides and acts on it)."""
        if self.state is TradingState.TRIPPED:
            return False
        self.trip_reason = reason
        return self._set_state(TradingState.TRIPPED, reason)

    def leave_tripped(self, reason: str) -> bool:
        """Back to ACTIVE after a breaker reset (core.breaker.CircuitBreaker.reset)."""
        if self.state is not TradingState.TRIPPED:
            return False
        self.trip_reason = ""
        return self._set_state(TradingState.ACTIVE, reason)

    def restore(self, state: TradingState, reason: str) -> None:
        """Put back a persisted state on start (a restart does not clear a trip)."""
        self.state, self.state_reason = state, reason
        if state is TradingState.TRIPPED:
            self.trip_reason = reason

    # -------------------------------------------------------------- pre-trade
    def review(self, intent: OrderIntent, position: int) -> int:
        """Return the approved quantity (0 = rejected); publishes clamp/reject events."""
        quantity = intent.quantity
        if quantity <= 0:
            return self._reject(intent, f"quantity must be positive, got {quantity}")
        sign = 1 if intent.side is BUY else -1
        reduce_part = min(quantity, abs(position)) if position * sign < 0 else 0
        if reduce_part == quantity:
            return quantity  # only reduces exposure: allowed in every state

        blocked = self._blocked_reason(intent.symbol)
        if blocked:
            approved, binding = 0, blocked
        else:
            approved, binding = self._apply_limits(intent, position, sign)
        if approved < reduce_part:
            approved = reduce_part
        if approved <= 0:
            return self._reject(intent, binding)
        if approved < quantity:
            self.clamped_count += 1
            logger.info(
                "order clamped {q}->{a}: {reason}",
                symbol=intent.symbol,
                q=quantity,
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
        sent = self._sent
        while sent and now - sent[0] >= 60.0:
            sent.popleft()
        if len(sent) >= self.limits.max_orders_per_minute:
            return f"MAX_ORDERS_PER_MINUTE {self.limits.max_orders_per_minute} reached"
        return None

    def _apply_limits(self, intent: OrderIntent, position: int, sign: int) -> tuple[int, str]:
        """Clamp ``intent.quantity`` to every limit; returns it with the binding limit's reason.

        The limits are applied in a fixed order (position size, order notional,
        leverage), and a limit binds when it is below what the earlier ones left, so
        with several at zero the last of them names the reason. Only that reason is
        formatted: the text of every limit costs more than the checks themselves, and
        this runs for every order.
        """
        quote = self._feed.latest(intent.symbol)
        assert quote is not None  # _blocked_reason guarantees a fresh quote
        price = quote.ask if sign > 0 else quote.bid
        lim = self.limits
        order_type = intent.order_type
        if order_type.is_stop:
            # The worst case of a stop is its trigger price or the market, whichever is
            # dearer (a stop-limit: its limit, checked below like a limit's).
            stop_price = intent.stop_price
            if stop_price is None or stop_price <= 0:
                return 0, "stop order without a positive stop price"
            price = max(price, stop_price) if sign > 0 else min(price, stop_price)
        if order_type.has_limit:
            limit_price = intent.limit_price
            if limit_price is None or limit_price <= 0:
                return 0, "limit order without a positive limit price"
            # A stop-limit's limit works from the moment the stop triggers: it is held
            # to the collar around its stop price, not around today's mid.
            anchor = quote.mid if intent.stop_price is None else intent.stop_price
            off = abs(limit_price - anchor) / anchor * 100.0
            if off > lim.price_collar_pct:
                what = "mid" if intent.stop_price is None else "stop"
                return (
                    0,
                    f"PRICE_COLLAR_PCT: limit {limit_price:.4f} is {off:.2f}% "
                    f"from {what} {anchor:.4f} (max {lim.price_collar_pct}%)",
                )
            price = max(price, limit_price) if sign > 0 else min(price, limit_price)

        portfolio = self._portfolio
        max_shares = math.floor(lim.max_position_size / price)
        equity = portfolio.equity
        if equity > 0:
            held = portfolio.positions.get(intent.symbol)
            own_gross = abs(held.market_value) if held else 0.0
            room = lim.max_leverage * equity - (portfolio.gross_exposure - own_gross)
            max_abs_after = math.floor(room / price)
        else:
            max_abs_after = 0
        approved = intent.quantity
        binding = _NO_LIMIT
        cap = max_shares - sign * position
        if cap < approved:
            approved, binding = max(cap, 0), _POSITION_SIZE
        cap = math.floor(lim.max_order_notional / price)
        if cap < approved:
            approved, binding = max(cap, 0), _ORDER_NOTIONAL
        cap = max_abs_after - sign * position
        if cap < approved:
            approved, binding = max(cap, 0), _LEVERAGE
        if binding is _NO_LIMIT:
            return approved, ""
        if binding is _POSITION_SIZE:
            reason = (
                f"MAX_POSITION_SIZE ${lim.max_position_size:,.0f} ({max_shares} sh at {price:.2f})"
            )
        elif binding is _ORDER_NOTIONAL:
            reason = f"MAX_ORDER_NOTIONAL ${lim.max_order_notional:,.0f}"
        else:
            reason = f"MAX_LEVERAGE {lim.max_leverage}x of equity ${equity:,.0f}"
        return approved, reason

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
