"""Orders pane: today's orders, newest first, reject reasons in plain view.

Each order reads as IB describes it (``STP LMT 99.50/99.40 GTC``), with a marker
for the orders that close a position (``SL`` stop-loss, ``TP`` take-profit: a
bracket's children and the protective stops). An exit held while the broker is
disconnected reads ``Queued (disconnected)``, and the pane's title counts them.
"""

from __future__ import annotations

from datetime import tzinfo

from textual.app import ComposeResult
from textual.widget import Widget

from core.backend import OrderRow, SystemSnapshot
from core.model import OrderRole, OrderStatus, OrderType, TimeInForce
from tui.console.widgets.base import Cell, Column, DiffTable, Pane, seq_sort_key
from tui.console.widgets.format import clock_time, price

COLUMNS = (
    # What decides "is this order OK?" comes first, so a narrow pane still shows it:
    # at 120 columns the orders pane shows up to the status, at 80 up to Filled.
    Column("time", "Time", width=8),
    Column("symbol", "Sym", width=4),
    Column("side", "Side", width=4),
    Column("qty", "Qty", "right", 4),
    Column("role", "Role", width=4),
    Column("status", "Status", width=9),
    Column("type", "Type", width=13),  # "STP 182.40 GTC"; a stop-limit widens it
    Column("filled", "Filled", "right"),
    Column("message", "Message", width=16),
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
QUEUED = "Queued (disconnected)"

_STATUS_CLASS: dict[OrderStatus, str | None] = {
    OrderStatus.REJECTED: "cell--alert",
    OrderStatus.CANCELLED: "cell--dim",
    OrderStatus.FILLED: "cell--positive",
}

ROLE_MARKS: dict[OrderRole, str] = {
    OrderRole.ENTRY: "",
    OrderRole.STOP_LOSS: "SL",
    OrderRole.TAKE_PROFIT: "TP",
}


def order_type_text(row: OrderRow) -> str:
    """``MKT``, ``LMT 101.20``, ``STP 99.50``, ``STP LMT 99.50/99.40``; `` GTC`` after it
    for an order that outlives the day (DAY, the usual, is left unsaid)."""
    kind = row.order_type
    if kind is OrderType.LIMIT:
        text = f"{kind} {price(row.limit_price)}"
    elif kind is OrderType.STOP:
        text = f"{kind} {price(row.stop_price)}"
    elif kind is OrderType.STOP_LIMIT:
        text = f"{kind} {price(row.stop_price)}/{price(row.limit_price)}"
    else:
        text = str(kind)
    return f"{text} GTC" if row.tif is TimeInForce.GTC else text


def order_cells(row: OrderRow, seq: int, tz: tzinfo) -> tuple[Cell, ...]:
    rejected = row.status is OrderStatus.REJECTED
    # The status word says it; the class only adds emphasis.
    status: Cell = (
        (QUEUED, "cell--queued")
        if row.queued
        else (STATUS_WORDS[row.status], _STATUS_CLASS.get(row.status, "cell--warn"))
    )
    role = ROLE_MARKS[row.role]
    return (
        clock_time(row.created_at, tz),
        row.symbol,
        str(row.side),
        str(row.quantity),
        (role, "cell--role") if role else role,
        status,
        order_type_text(row),
        str(row.filled),
        (row.message, "cell--alert")
        if rejected
        else ("" if row.queued and row.message == QUEUED else row.message),  # said once
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
        # The cells last made for each shown order, reused while its row is unchanged:
        # a new order re-formats itself, not the 200 rows below it.
        self._cells: dict[str, tuple[OrderRow, tuple[Cell, ...]]] = {}
        self._rows: tuple[OrderRow, ...] | None = None
        self.queued = 0  # exits held while disconnected, as the title says
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

    def _row_cells(self, row: OrderRow) -> tuple[Cell, ...]:
        known = self._cells.get(row.client_order_id)
        if known is not None and known[0] == row:
            return known[1]
        cells = order_cells(row, self._seq[row.client_order_id], self._tz)
        self._cells[row.client_order_id] = (row, cells)
        return cells

    def update_snapshot(self, snapshot: SystemSnapshot) -> None:
        rows = snapshot.orders
        # The core hands out the same tuple until an order changes: nothing to do.
        if rows is self._rows:
            return
        self._rows = rows
        # Number oldest first so the newest order gets the highest number.
        for row in reversed(rows):
            self._number(row.client_order_id)
        self.table.sync((row.client_order_id, self._row_cells(row)) for row in rows)
        if len(self._cells) > len(rows):
            shown = {row.client_order_id for row in rows}
            self._cells = {k: v for k, v in self._cells.items() if k in shown}
        queued = sum(1 for row in rows if row.queued)
        if queued != self.queued:
            self.queued = queued
            self.set_alarm(f"{queued} {QUEUED.lower()}" if queued else "")
