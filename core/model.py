"""Plain domain data: quotes, bars, intents, orders, fills, positions and their enums.

Nothing here does I/O or knows about brokers; behaviour is limited to derived
fields and the order state machine's transition table, which *is* data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(StrEnum):
    """IB's order type names. A stop triggers when the last trade price reaches
    ``stop_price`` (at or above it for a buy, at or below for a sell); a stop then
    works as a market order, a stop-limit as a limit order at ``limit_price``."""

    MARKET = "MKT"
    LIMIT = "LMT"
    STOP = "STP"
    STOP_LIMIT = "STP LMT"

    @property
    def is_stop(self) -> bool:
        return self is OrderType.STOP or self is OrderType.STOP_LIMIT

    @property
    def has_limit(self) -> bool:
        return self is OrderType.LIMIT or self is OrderType.STOP_LIMIT


class TimeInForce(StrEnum):
    DAY = "DAY"
    GTC = "GTC"  # good till cancelled: rests across sessions (protective stops)


class OrderRole(StrEnum):
    """What an order is for. The execution engine keeps one working ENTRY order per
    symbol (the target's); STOP_LOSS and TAKE_PROFIT orders rest beside it to close
    the position (a bracket's children, or the protective stop)."""

    ENTRY = "entry"
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"

    @property
    def suffix(self) -> str:
        """The client order id suffix of the role, so that an order found at the broker
        after a crash says what it is by its id alone (orderRef at IB)."""
        return _ROLE_SUFFIX[self]


_ROLE_SUFFIX = {OrderRole.ENTRY: "", OrderRole.STOP_LOSS: "-SL", OrderRole.TAKE_PROFIT: "-TP"}


def role_of_order_id(client_order_id: str) -> OrderRole:
    """The role a client order id names by its suffix (ENTRY when it has none)."""
    for role, suffix in _ROLE_SUFFIX.items():
        if suffix and client_order_id.endswith(suffix):
            return role
    return OrderRole.ENTRY


class OrderStatus(StrEnum):
    """Our order lifecycle. IB's statuses are mapped onto these by the adapter."""

    PENDING_SUBMIT = "PendingSubmit"  # journaled, not yet acknowledged by the broker
    SUBMITTED = "Submitted"
    PARTIALLY_FILLED = "PartiallyFilled"
    PENDING_CANCEL = "PendingCancel"
    FILLED = "Filled"
    CANCELLED = "Cancelled"
    REJECTED = "Rejected"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def is_working(self) -> bool:
        return not self.is_terminal


_TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED})

# Which status may follow which. A fill can race a cancel request, so the
# cancel-pending state may still move to (partially) filled.
ALLOWED_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING_SUBMIT: frozenset(
        {
            OrderStatus.SUBMITTED,
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.PENDING_CANCEL,
            OrderStatus.CANCELLED,
            OrderStatus.REJECTED,
        }
    ),
    OrderStatus.SUBMITTED: frozenset(
        {
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.PENDING_CANCEL,
            OrderStatus.CANCELLED,
            OrderStatus.REJECTED,
        }
    ),
    OrderStatus.PARTIALLY_FILLED: frozenset(
        {
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.PENDING_CANCEL,
            OrderStatus.CANCELLED,
        }
    ),
    OrderStatus.PENDING_CANCEL: frozenset(
        {
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELLED,
            OrderStatus.REJECTED,
        }
    ),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
}


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    HALTED = "HALTED"
    TRIPPED = "TRIPPED"


class HaltReason(StrEnum):
    """Why trading is halted. The value opens the state's reason text (what is shown and
    persisted), so a restored state finds its cause again (`HaltReason.of`)."""

    OPERATOR = "operator halt"
    STOP_FILE = "STOP file"
    RECONCILIATION_MISMATCH = "reconciliation mismatch"
    CORE_REQUEST = "halted"  # anything else that asked for a halt (tests, scripts)

    def text(self, detail: str = "") -> str:
        """The reason text: ``operator halt (h)`` for OPERATOR with detail ``h``."""
        return f"{self.value} ({detail})" if detail else self.value

    @classmethod
    def of(cls, text: str) -> HaltReason:
        """The cause a reason text was made from (a persisted text read back on start)."""
        for reason in cls:
            if text == reason.value or text.startswith(f"{reason.value} ("):
                return reason
        return cls.CORE_REQUEST


class TradingMode(StrEnum):
    SIM = "sim"
    PAPER = "paper"
    LIVE = "live"


class QuoteSource(StrEnum):
    SIM = "sim"
    STREAM = "stream"
    POLL = "poll"
    REPLAY = "replay"


# Enum members as module constants, for the per-quote and per-order paths: reading
# `OrderStatus.FILLED` is a descriptor call on the enum class (~60 ns on Python 3.11),
# reading a module constant is a dict lookup.
BUY, SELL = Side.BUY, Side.SELL
MARKET, LIMIT = OrderType.MARKET, OrderType.LIMIT
STOP, STOP_LIMIT = OrderType.STOP, OrderType.STOP_LIMIT
DAY, GTC = TimeInForce.DAY, TimeInForce.GTC
ENTRY = OrderRole.ENTRY
PENDING_SUBMIT = OrderStatus.PENDING_SUBMIT
SUBMITTED = OrderStatus.SUBMITTED
PARTIALLY_FILLED = OrderStatus.PARTIALLY_FILLED
PENDING_CANCEL = OrderStatus.PENDING_CANCEL
FILLED = OrderStatus.FILLED
CANCELLED = OrderStatus.CANCELLED
REJECTED = OrderStatus.REJECTED


# Mutable or frozen, and the types say which:
# - Really frozen: Bar, BrokerOrderState, AccountValues, Alert (frozen dataclasses) and
#   OrderSnapshot (a NamedTuple: what every order event carries, never the live Order).
# - Plain slots dataclasses, mutable to the type checker too: Quote, TargetPosition,
#   OrderIntent, Fill, OrderStatusUpdate and the per-quote/per-order events that carry
#   them. They are passed along, never changed after they are built (nothing in the code
#   assigns to their fields), but they are not frozen because they are built and read on
#   every quote: a frozen dataclass's __init__ sets each field through
#   object.__setattr__ (~0.9 µs a quote instead of ~0.2 µs), and a NamedTuple's fields
#   read slower (measured: bench per-quote p50 2.1 -> 2.5 µs, throughput -10%).
# - The engine's own books, mutated in place: Order, Position.


def mid_of(bid: float, ask: float) -> float:
    """The mid price of a bid and an ask: the one rule, used by `Quote.mid` and the sim book.

    The per-quote paths (the feed's fast path, bars) write ``(bid + ask) / 2.0`` out, a
    call fewer per quote; tests/test_hot_path.py checks each copy against this.
    """
    return (bid + ask) / 2.0


@dataclass(slots=True)
class Quote:
    symbol: str
    ts: datetime
    bid: float
    ask: float
    bid_size: int = 0
    ask_size: int = 0
    last: float | None = None
    source: QuoteSource = QuoteSource.SIM

    @property
    def mid(self) -> float:
        return mid_of(self.bid, self.ask)

    @property
    def spread(self) -> float:
        return self.ask - self.bid


@dataclass(frozen=True, slots=True)
class Bar:
    symbol: str
    start: datetime
    end: datetime
    open: float
    high: float
    low: float
    close: float
    ticks: int  # number of quotes that built the bar


@dataclass(slots=True)
class TargetPosition:
    """What a strategy wants to hold in a symbol (signed shares).

    ``stop_pct``: the position is to be protected by a stop at the broker this many
    percent away from its average cost (overrides PROTECTIVE_STOP_PCT for the symbol);
    ``trailing``: that stop follows the best price since entry, never moving back.
    ``take_profit_pct``: also rest a take-profit limit that far on the other side."""

    symbol: str
    quantity: int
    reason: str = ""
    stop_pct: float | None = None
    take_profit_pct: float | None = None
    trailing: bool = False


@dataclass(slots=True)
class OrderIntent:
    """A concrete order proposal before risk has looked at it.

    ``stop_loss`` / ``take_profit`` (prices) make it a bracket: the entry is the parent,
    a GTC stop (and a GTC take-profit limit) the children in one OCA group, released
    when the parent fills and sized to what it filled. ``trailing``: the stop-loss
    follows the best price since the fill by its initial distance."""

    symbol: str
    side: Side
    quantity: int
    order_type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    reason: str = ""
    stop_price: float | None = None
    tif: TimeInForce = TimeInForce.DAY
    stop_loss: float | None = None
    take_profit: float | None = None
    trailing: bool = False


class InvalidOrderTransition(Exception):
    """A status change the order state machine does not allow."""

    @classmethod
    def between(
        cls, client_order_id: str, old: OrderStatus, new: OrderStatus
    ) -> InvalidOrderTransition:
        return cls(f"order {client_order_id}: {old} -> {new} is not allowed")


_new_tuple = tuple.__new__


class OrderSnapshot(NamedTuple):
    """One order as it stood at a moment: what events carry and what subscribers keep.

    The same fields as `Order`, which is the engine's live, mutable record of it.
    """

    client_order_id: str
    symbol: str
    side: Side
    quantity: int
    order_type: OrderType
    created_at: datetime
    limit_price: float | None
    reason: str
    status: OrderStatus
    updated_at: datetime | None
    filled_quantity: int
    avg_fill_price: float
    commission: float
    broker_order_id: str | None
    last_message: str
    reduce_only: bool
    stop_price: float | None
    tif: TimeInForce
    role: OrderRole
    parent_id: str | None
    oca_group: str | None


@dataclass(slots=True)
class Order:
    """The execution engine's live record of one order; `snapshot()` for a value."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: int
    order_type: OrderType
    created_at: datetime
    limit_price: float | None = None
    reason: str = ""
    status: OrderStatus = OrderStatus.PENDING_SUBMIT
    updated_at: datetime | None = None
    filled_quantity: int = 0
    avg_fill_price: float = 0.0
    commission: float = 0.0
    broker_order_id: str | None = None
    last_message: str = ""
    reduce_only: bool = False
    stop_price: float | None = None
    tif: TimeInForce = TimeInForce.DAY
    role: OrderRole = OrderRole.ENTRY
    parent_id: str | None = None  # a bracket child's parent (its client order id)
    oca_group: str | None = None  # one fill here reduces (or cancels) the others

    @property
    def remaining(self) -> int:
        return self.quantity - self.filled_quantity

    @property
    def is_working(self) -> bool:
        return self.status.is_working

    @property
    def signed_remaining(self) -> int:
        return self.side.sign * self.remaining

    def snapshot(self) -> OrderSnapshot:
        # tuple.__new__ with the fields in OrderSnapshot's order: what the NamedTuple's own
        # __new__ does, without its Python frame (~250 ns instead of ~400; every order
        # event takes one). tests/test_execution.py checks the fields match by name.
        return _new_tuple(
            OrderSnapshot,
            (
                self.client_order_id,
                self.symbol,
                self.side,
                self.quantity,
                self.order_type,
                self.created_at,
                self.limit_price,
                self.reason,
                self.status,
                self.updated_at,
                self.filled_quantity,
                self.avg_fill_price,
                self.commission,
                self.broker_order_id,
                self.last_message,
                self.reduce_only,
                self.stop_price,
                self.tif,
                self.role,
                self.parent_id,
                self.oca_group,
            ),
        )

    def transition(self, new: OrderStatus, ts: datetime, message: str = "") -> bool:
        """Move to ``new``; returns False when already there, raises when not allowed."""
        if new is self.status and new is not OrderStatus.PARTIALLY_FILLED:
            if message:
                self.last_message = message
            return False
        if new not in ALLOWED_TRANSITIONS[self.status]:
            raise InvalidOrderTransition.between(self.client_order_id, self.status, new)
        self.status = new
        self.updated_at = ts
        if message:
            self.last_message = message
        return True

    def apply_fill_quantity(self, quantity: int, price: float, commission: float) -> None:
        """Accumulate a partial or full fill into filled quantity and average price."""
        total = self.filled_quantity + quantity
        self.avg_fill_price = (
            self.avg_fill_price * self.filled_quantity + price * quantity
        ) / total
        self.filled_quantity = total
        self.commission += commission


@dataclass(slots=True)
class Fill:
    exec_id: str
    client_order_id: str
    symbol: str
    side: Side
    quantity: int
    price: float
    commission: float
    ts: datetime

    @property
    def signed_quantity(self) -> int:
        return self.side.sign * self.quantity


@dataclass(slots=True)
class OrderStatusUpdate:
    """What a broker reports about one of our orders (fills arrive separately as Fill)."""

    client_order_id: str
    status: OrderStatus
    ts: datetime
    broker_order_id: str | None = None
    message: str = ""
    error_code: int | None = None
    # The total quantity the broker now works, when it changed it by itself: a bracket
    # child released for its parent's fills, an OCA member reduced by another's fill.
    quantity: int | None = None


@dataclass(frozen=True, slots=True)
class BrokerOrderState:
    """What the broker knows of one of our orders (matched by client order id)."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: int
    filled_quantity: int
    status: OrderStatus
    broker_order_id: str | None = None
    order_type: OrderType = OrderType.MARKET
    stop_price: float | None = None
    limit_price: float | None = None
    tif: TimeInForce = TimeInForce.DAY


@dataclass(frozen=True, slots=True)
class AccountValues:
    account_id: str
    cash: float
    net_liquidation: float
    buying_power: float


@dataclass(slots=True)
class Position:
    """Average-cost position; realized P&L is booked on reductions and flips."""

    symbol: str
    quantity: int = 0
    avg_cost: float = 0.0
    realized_pnl: float = 0.0
    commissions: float = 0.0
    mark_price: float = math.nan

    @property
    def market_value(self) -> float:
        return 0.0 if self.quantity == 0 else self.quantity * self.mark_price

    @property
    def unrealized_pnl(self) -> float:
        if self.quantity == 0 or math.isnan(self.mark_price):
            return 0.0
        return (self.mark_price - self.avg_cost) * self.quantity


class AlertSeverity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return ("info", "warning", "critical").index(self.value)


@dataclass(frozen=True, slots=True)
class Alert:
    severity: AlertSeverity
    key: str  # dedup key, e.g. "order_rejected:AAPL"
    message: str
    ts: datetime
    fields: dict[str, str] = field(default_factory=dict)
