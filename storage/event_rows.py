"""Bus events → database rows: the recorder's subscription and its handlers table.

The handlers run on the hot path, so each only turns an event into a row tuple and
appends it to ``PendingRows``: no awaits, no I/O. Rows are built at publish time,
so a batch is plain tuples, ready for ``executemany`` or the writer process's pipe.
The events carry immutable values (order events an ``OrderSnapshot``), so a row
built now says what the event said.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from core.bus import EventBus
from core.events import (
    AlertDelivered,
    AlertRaised,
    BarClosed,
    BreakerReset,
    BreakerTripped,
    DailyPnlRecorded,
    DrawdownExceeded,
    FillReceived,
    IntentClamped,
    OrderRejected,
    OrderSubmitted,
    OrderUpdated,
    PositionMismatch,
    QuoteReceived,
    QuoteRejected,
    RiskRejected,
    TradingStateChanged,
)
from core.model import OrderSnapshot, OrderStatus
from storage.alert_rows import AlertRows
from storage.pending import PendingRows
from storage.rows import (
    SOURCE_TEXT,
    bar_row,
    daily_pnl_row,
    fill_row,
    order_event_row,
    order_row,
    risk_event_row,
    state_change_row,
    to_db_ts,
)


class EventRows:
    """Subscribes to ``bus`` on creation; ``unsubscribe()`` ends it."""

    def __init__(
        self, bus: EventBus, pending: PendingRows, alerts: AlertRows, *, record_quotes: bool
    ) -> None:
        self._pending = pending
        self._alerts = alerts
        self._add = pending.add
        self._converters = self._build_converters()
        # Quotes are most of the traffic: they come on a typed subscription (or not at
        # all), never through the catch-all's lookup. Only quote rows go to the quotes
        # table, so running before the other handlers (not after, as the catch-all does)
        # reorders nothing there.
        unsubscribe_all = bus.subscribe_all(self.on_event, except_types=(QuoteReceived,))
        unsubscribe_quotes: Callable[[], None] | None = None
        if record_quotes:
            unsubscribe_quotes = bus.subscribe(QuoteReceived, self.on_quote)

        def unsubscribe() -> None:
            unsubscribe_all()
            if unsubscribe_quotes is not None:
                unsubscribe_quotes()

        self._unsubscribe: Callable[[], None] | None = unsubscribe

    def unsubscribe(self) -> None:
        """Stop listening (again is a no-op)."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()

    # ----------------------------------------------------------------- hot path

    def on_quote(self, e: QuoteReceived) -> None:
        # Every quote passes here: storage.rows.quote_row and PendingRows.add written
        # out (a call fewer each: ~0.3 µs a quote in the order-heavy bench).
        # tests/test_hot_path.py checks the stored rows against quote_row and a plain
        # formatting of the quotes.
        q = e.quote
        source = q.source
        text = SOURCE_TEXT.get(source)
        pending = self._pending
        pending.tables["quotes"].append(
            (
                q.symbol,
                to_db_ts(q.ts),
                q.bid,
                q.ask,
                q.bid_size,
                q.ask_size,
                q.last,
                str(source) if text is None else text,
            )
        )
        count = pending.count = pending.count + 1
        if count >= pending.flush_rows:
            pending.wake.set()
        if count > pending.max_pending:
            pending.shed()

    def on_event(self, event: object) -> None:
        # One dict lookup for the events we ignore.
        convert = self._converters.get(type(event))
        if convert is not None:
            convert(event)

    def _build_converters(self) -> dict[type, Callable[[Any], None]]:
        add = self._add
        alerts = self._alerts
        converters: dict[type, Callable[[Any], None]] = {
            BarClosed: lambda e: add("bars", bar_row(e.bar)),
            OrderSubmitted: lambda e: self._add_order(e.order, e.ts, "submitted"),
            OrderUpdated: self._on_order_updated,
            OrderRejected: self._on_order_rejected,
            FillReceived: lambda e: add("fills", fill_row(e.fill)),
            IntentClamped: self._on_intent_clamped,
            RiskRejected: self._on_risk_rejected,
            QuoteRejected: lambda e: self._risk(e.ts, "quote_rejected", e.symbol, e.reason),
            DrawdownExceeded: self._on_drawdown,
            BreakerTripped: self._on_breaker_tripped,
            BreakerReset: lambda e: self._risk(e.ts, "breaker_reset", None, e.reason),
            PositionMismatch: self._on_position_mismatch,
            TradingStateChanged: lambda e: add("trading_state_changes", state_change_row(e)),
            DailyPnlRecorded: lambda e: add("daily_pnl", daily_pnl_row(e)),
            AlertRaised: lambda e: alerts.on_raised(e.alert),
            AlertDelivered: lambda e: alerts.on_delivered(e.alert, e.delivery),
        }
        return converters

    def _add_order(self, order: OrderSnapshot, ts: datetime, message: str) -> None:
        self._add("orders", order_row(order))
        self._add("order_events", order_event_row(order, ts, message))

    def _on_order_updated(self, e: OrderUpdated) -> None:
        if e.order.status is OrderStatus.REJECTED:
            # Every reject is an OrderUpdated (the transition) then an OrderRejected (reason and
            # code), and IB repeats the status (Inactive after error 201): one reject, one
            # order_events row, written for the OrderRejected; here only the order's row.
            self._add("orders", order_row(e.order))
            return
        self._add_order(e.order, e.ts, e.order.last_message)

    def _on_order_rejected(self, e: OrderRejected) -> None:
        code = "" if e.error_code is None else f" (code {e.error_code})"
        self._add_order(e.order, e.ts, f"rejected: {e.reason}{code}")

    def _risk(self, ts: datetime, kind: str, symbol: str | None, detail: str) -> None:
        self._add("risk_events", risk_event_row(ts, kind, symbol, detail))

    def _on_intent_clamped(self, e: IntentClamped) -> None:
        i = e.intent
        detail = f"{i.side} {i.quantity} {i.symbol} clamped to {e.approved_quantity}: {e.reason}"
        self._risk(e.ts, "clamped", i.symbol, detail)

    def _on_risk_rejected(self, e: RiskRejected) -> None:
        i = e.intent
        self._risk(e.ts, "rejected", i.symbol, f"{i.side} {i.quantity} {i.symbol}: {e.reason}")

    def _on_drawdown(self, e: DrawdownExceeded) -> None:
        detail = (
            f"drawdown {e.drawdown_pct:g} from peak equity {e.peak_equity:.2f} to {e.equity:.2f}"
        )
        self._risk(e.ts, "drawdown", None, detail)

    def _on_breaker_tripped(self, e: BreakerTripped) -> None:
        self._risk(e.ts, "breaker_tripped", None, f"{e.reason} (daily P&L {e.daily_pnl:+.2f})")

    def _on_position_mismatch(self, e: PositionMismatch) -> None:
        detail = f"internal {e.internal_quantity} vs broker {e.broker_quantity}"
        self._risk(e.ts, "position_mismatch", e.symbol, detail)
