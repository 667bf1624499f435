"""Typed, past-tense events published on the bus.

Tests capture these to assert on behaviour; the recorder persists them; the
alert manager turns some of them into alerts. The events published per quote or per
order are plain slots dataclasses, the rest frozen ones (core/model.py says why); an
order travels as an `OrderSnapshot`, never as the engine's live `Order`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from core.model import (
    Alert,
    Bar,
    Fill,
    OrderIntent,
    OrderSnapshot,
    Quote,
    TargetPosition,
    TradingState,
)


@dataclass(slots=True)
class QuoteReceived:
    """A quote passed validation and is now the latest for its symbol."""

    quote: Quote


@dataclass(frozen=True, slots=True)
class QuoteRejected:
    symbol: str
    reason: str
    ts: datetime


@dataclass(frozen=True, slots=True)
class BarClosed:
    bar: Bar


@dataclass(slots=True)
class TargetChanged:
    target: TargetPosition
    ts: datetime


@dataclass(frozen=True, slots=True)
class IntentClamped:
    """Risk reduced an order's quantity to fit a limit."""

    intent: OrderIntent
    approved_quantity: int
    reason: str
    ts: datetime


@dataclass(frozen=True, slots=True)
class RiskRejected:
    intent: OrderIntent
    reason: str
    ts: datetime


@dataclass(slots=True)
class OrderSubmitted:
    """Journaled and handed to the broker."""

    order: OrderSnapshot
    ts: datetime


@dataclass(slots=True)
class OrderUpdated:
    """An order's status, fill quantity or message changed: the order as it now stands."""

    order: OrderSnapshot
    ts: datetime


@dataclass(frozen=True, slots=True)
class OrderRejected:
    order: OrderSnapshot
    reason: str
    ts: datetime
    error_code: int | None = None


@dataclass(frozen=True, slots=True)
class OrderUpdateRefused:
    """A broker report the order state machine would not accept (unknown order state)."""

    client_order_id: str
    reason: str
    ts: datetime


@dataclass(slots=True)
class FillReceived:
    fill: Fill


@dataclass(frozen=True, slots=True)
class TradingStateChanged:
    previous: TradingState
    state: TradingState
    reason: str
    ts: datetime


@dataclass(frozen=True, slots=True)
class BreakerTripped:
    reason: str
    daily_pnl: float
    ts: datetime


@dataclass(frozen=True, slots=True)
class BreakerReset:
    reason: str
    ts: datetime


@dataclass(frozen=True, slots=True)
class DrawdownExceeded:
    drawdown_pct: float
    peak_equity: float
    equity: float
    ts: datetime


@dataclass(frozen=True, slots=True)
class PositionMismatch:
    symbol: str
    internal_quantity: int
    broker_quantity: int
    ts: datetime


@dataclass(frozen=True, slots=True)
class ReconciliationCompleted:
    mismatches: tuple[PositionMismatch, ...]
    ts: datetime


@dataclass(frozen=True, slots=True)
class BrokerConnectionChanged:
    connected: bool
    message: str
    ts: datetime


@dataclass(frozen=True, slots=True)
class FeedSwitched:
    """A symbol's quotes now come from another source (stream, poll)."""

    symbol: str
    source: str
    reason: str
    ts: datetime


@dataclass(frozen=True, slots=True)
class BrokerErrorReported:
    code: int
    message: str
    ts: datetime
    client_order_id: str | None = None


@dataclass(frozen=True, slots=True)
class DailyPnlRecorded:
    """Summary of the trading day, published at the daily reset and on stop."""

    day: str  # ISO date of the trading day
    realized: float
    unrealized: float
    commissions: float
    total: float
    peak_equity: float
    max_drawdown_pct: float
    ts: datetime


@dataclass(frozen=True, slots=True)
class AlertRaised:
    alert: Alert


@dataclass(frozen=True, slots=True)
class AlertDelivered:
    """One outbound channel's outcome for an alert (sent, failed, suppressed, ...).

    ``delivery`` is the alert's cumulative per-channel summary so far, e.g.
    ``"whatsapp: sent; telegram: failed (HTTP 401 Unauthorized)"``: the recorder
    stores the latest one in the alert's ``delivery`` column.
    """

    alert: Alert
    channel: str
    status: str
    detail: str
    delivery: str
    ts: datetime
