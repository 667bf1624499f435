"""Immutable views of the system that a UI reads at its own pace (ARCHITECTURE rule 2)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from core.model import Alert, HaltReason, OrderStatus, OrderType, Side, TradingMode, TradingState
from core.portfolio import PnlSummary


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
    orders: tuple[OrderRow, ...]  # newest first
    alerts: tuple[Alert, ...]  # newest first
    stale_symbols: tuple[str, ...]
    quotes_accepted: int
    quotes_rejected: int
    strategy_name: str
