"""What a front end may use of the core: one protocol and the values that cross it.

The console (tui/console) depends on `ConsoleBackend` and nothing else of the core's
objects: it reads `snapshot()` at its own pace and asks for operator actions, each of
which answers with an `ActionResult` (done, or refused with the reason). `TradingSystem`
implements it; the console's Pilot tests can hand it a fake. A phone command channel or
a web view is another client of the same protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from core.model import (
    Alert,
    HaltReason,
    OrderRole,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    TradingMode,
    TradingState,
)
from core.portfolio import PnlSummary

# ----------------------------------------------------------------- what the console shows
# Immutable views of the system that a UI reads at its own pace (ARCHITECTURE rule 2),
# built by core.snapshot.SnapshotBuilder.


@dataclass(frozen=True, slots=True)
class QuoteRow:
    symbol: str
    bid: float | None
    ask: float | None
    last: float | None
    change_pct: float | None  # mid vs the first mid of the trading day
    spread: float | None
    age_seconds: float | None
    source: str
    stale: bool
    rejected: int  # malformed quotes dropped today


@dataclass(frozen=True, slots=True)
class IndicatorRow:
    symbol: str
    values: tuple[tuple[str, float | None], ...]
    signal: str
    target: int | None
    history: tuple[float, ...]  # recent bar closes, oldest first, for a sparkline


class StopState(StrEnum):
    NONE = "none"
    PENDING = "pending"
    RESTING = "resting"


@dataclass(frozen=True, slots=True)
class PositionRow:
    symbol: str
    quantity: int
    avg_cost: float
    market_value: float
    unrealized: float
    realized: float
    broker_quantity: int | None
    reconciled: bool
    # The position's protective stop: its price, and whether it rests at the broker
    # (RESTING), is on its way (PENDING: sent, not acknowledged; or queued while
    # disconnected) or is missing (NONE: no stop, or the policy is off).
    stop_price: float | None = None
    stop_state: StopState = StopState.NONE
    stop_quantity: int = 0
    # Whether a stop is wanted for it (PROTECTIVE_STOP_PCT, or the strategy asked):
    # a missing stop is an alarm then, and only a fact when nobody asked for one.
    stop_expected: bool = False


@dataclass(frozen=True, slots=True)
class OrderRow:
    client_order_id: str
    created_at: datetime
    symbol: str
    side: Side
    quantity: int
    filled: int
    order_type: OrderType
    limit_price: float | None
    avg_fill_price: float
    status: OrderStatus
    message: str
    stop_price: float | None = None
    tif: TimeInForce = TimeInForce.DAY
    role: OrderRole = OrderRole.ENTRY
    queued: bool = False  # held while the broker is disconnected: "Queued (disconnected)"


@dataclass(frozen=True, slots=True)
class RiskView:
    state: TradingState
    state_reason: str
    halt_reason: HaltReason | None  # the cause while HALTED, None otherwise
    trip_reason: str
    daily_loss_limit: float
    loss_limit_usage: float  # 0..1+
    max_leverage: float
    clamped: int
    rejected: int


@dataclass(frozen=True, slots=True)
class SystemSnapshot:
    now: datetime
    mode: TradingMode
    account_id: str
    broker_name: str
    connected: bool
    risk: RiskView
    pnl: PnlSummary
    quotes: tuple[QuoteRow, ...]
    indicators: tuple[IndicatorRow, ...]
    positions: tuple[PositionRow, ...]
    orders: tuple[OrderRow, ...]  # newest first, the latest 200
    working_orders: int  # every working order, however old (the list above may not hold it)
    alerts: tuple[Alert, ...]  # newest first
    stale_symbols: tuple[str, ...]
    quotes_accepted: int
    quotes_rejected: int
    strategy_name: str


# ----------------------------------------------------------------- what actions answer


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What an operator action did: ``ok`` False means refused, and ``message`` says why.

    ``symbols`` names what the action touched (flatten: the positions being closed).
    """

    ok: bool
    message: str
    symbols: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BreakerReview:
    """What the operator reads before resetting a tripped breaker."""

    tripped: bool
    trip_reason: str
    pnl: PnlSummary
    daily_loss_limit: float
    loss_limit_usage: float  # 0..1+; at 1 or more a reset trips again on the next move

    @property
    def still_beyond_limit(self) -> bool:
        return self.loss_limit_usage >= 1.0


@dataclass(frozen=True, slots=True)
class ConsoleInfo:
    """Fixed facts of the running core that the console shows or needs."""

    mode: TradingMode
    symbols: tuple[str, ...]
    stop_file: Path
    refresh_hz: float
    exchange_calendar: str  # e.g. "XNYS": the console shows times in its zone


class ConsoleBackend(Protocol):
    """The core as the console sees it."""

    @property
    def info(self) -> ConsoleInfo: ...

    @property
    def running(self) -> bool: ...

    @property
    def fatal_error(self) -> BaseException | None:
        """A crash of a core task; the console stops when it sees one."""
        ...

    def snapshot(self) -> SystemSnapshot: ...

    def load_alert_history(self, alerts: Sequence[Alert]) -> None:
        """Alerts from earlier sessions (oldest first), shown before this session's."""
        ...

    async def start(self) -> None:
        """Connect, recover, reconcile and start trading."""
        ...

    def start_timer(self) -> None:
        """Run the clock-driven safety work (STOP file, breaker, reset) every 250 ms."""
        ...

    async def stop(self, reason: str) -> None:
        """Graceful stop: working orders cancelled, the day recorded."""
        ...

    def halt(self, detail: str) -> ActionResult: ...

    def resume(self, detail: str) -> ActionResult: ...

    def flatten(self, detail: str) -> ActionResult: ...

    def reset_breaker(self, detail: str) -> ActionResult: ...

    def breaker_review(self) -> BreakerReview: ...
