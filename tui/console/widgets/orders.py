"""Orders pane: today's orders, newest first, reject reasons in plain view."""

from __future__ import annotations

from datetime import tzinfo

from textual.app import ComposeResult
from textual.widget import Widget

from core.backend import OrderRow, SystemSnapshot
from core.model import OrderStatus
from tui.console.widgets.base import Cell, Column, DiffTable, Pane, seq_sort_key
from tui.console.widgets.format import MISSING, clock_time, price

COLUMNS = (
    # What decides "is this order OK?" comes first, so a narrow pane still shows it.
    Column("time", "Time", width=8),
    Column("symbol", "Sym", width=4),
    Column("side", "Side", width=4),
    Column("qty", "Qty", "right", 4),
    Column("status", "Status", width=9),
    Column("filled", "Filled", "right"),
    Column("message", "Message", width=16),
    Column("type", "Type"),
    Column("limit", "Limit", "right", 7),
    Column("seq", "#", "right", 3),
    Column("id", "Client id", width=21),
)

# Short words an operator reads at a glance; a reject shouts.
STATUS_WORDS: dict[OrderStatus, str] = {
    OrderStatus.PENDING_SUBMIT: "Sending",
    OrderStatus.SUBMITTED: "Working",
    OrderStatus.PARTIALLY_FILLED: "Partial",
    OrderStatus.PENDING_CANCEL: "Cancelling",
    OrderStatus.FILLED: "Filled",
    OrderStatus.CANCELLED: "Cancelled",
    OrderStatus.REJECTED: "REJECTED",
}

_STATUS_CLASS: dict[OrderStatus, str | None] = {
    OrderStatus.REJECTED: "cell--alert",
    OrderStatus.CANCELLED: "cell--dim",
    OrderStatus.FILLED: "cell--positive",
}


def order_cells(row: OrderRow, seq: int, tz: tzinfo) -> tuple[Cell, ...]:
    status_class = _STATUS_CLASS.get(row.status, "cell--warn")
    rejected = row.status is OrderStatus.REJECTED
    return (
        clock_time(row.created_at, tz),
        row.symbol,
        str(row.side),
        str(row.quantity),
        # The status word says it; the class only adds emphasis.
        (STATUS_WORDS[row.status], status_class),
        str(row.filled),
        (row.message, "cell--alert") if rejected else row.message,
        str(row.order_type),
        price(row.limit_price) if row.limit_price is not None else MISSING,
        str(seq),
        row.client_order_id,
    )


class OrdersPane(Pane):
    def __init__(self, tz: tzinfo) -> None:
        super().__init__(4, "Orders", id="orders")
        self._tz = tz
        # A per-session number gives "newest first" a stable sort key that
        # survives refreshes; DataTable can only append rows.
        self._seq: dict[str, int] = {}
        self.table = DiffTable(
            COLUMNS, sort_column="seq", sort_key=seq_sort_key, sort_reverse=True, id="orders-table"
        )

    def compose(self) -> ComposeResult:
        yield self.table

    def focus_target(self) -> Widget:
        return self.table

    def _number(self, client_order_id: str) -> int:
        seq = self._seq.get(client_order_id)
        if seq is None:
            seq = self._seq[client_order_id] = len(self._seq) + 1
        return seq

    def update_snapshot(self, snapshot: SystemSnapshot) -> None:
        # Number oldest first so the newest order gets the highest number.
        for row in reversed(snapshot.orders):
            self._number(row.client_order_id)
        self.table.sync(
            (row.client_order_id, order_cells(row, self._seq[row.client_order_id], self._tz))
            for row in snapshot.orders
        )
