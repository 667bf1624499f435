"""Positions pane: each position with its protective stop and its reconciliation mark.

An open position is only protected while its stop rests at the broker (a GTC order
that outlives the console): the Stop column says where it is and whether the
broker holds it, and an open position without one is marked in words
(``NO STOP``) as well as in colour, in its row and in the pane's title.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widget import Widget

from core.backend import PositionRow, StopState, SystemSnapshot
from tui.console.widgets.base import Cell, Column, DiffTable, Pane
from tui.console.widgets.format import MISSING, price, sign_class, signed_money, signed_qty

# The marks after a stop's price. Colour only adds emphasis: the mark is the message.
STOP_MARKS: dict[StopState, str] = {
    StopState.RESTING: "●",  # acknowledged: rests at the broker
    StopState.PENDING: "…",  # sent and not acknowledged yet, or queued while disconnected
}
NO_STOP = "NO STOP"
NO_STOP_WANTED = "none"

COLUMNS = (
    # What says "is this position safe" first (its stop, the broker agreeing), then
    # the money: 65 cells at usual figures, 69 with four-figure prices, inside the 70
    # the wide grid leaves (69 beside a scrollbar).
    Column("symbol", "Sym", width=4),
    Column("qty", "Qty", "right", 4),
    Column("avg", "Avg cost", "right", 8),
    # Beside the average cost, so the stop's distance reads at a glance.
    Column("stop", "Stop", "right", 8),
    # Reconciliation: "ok" when the broker holds what we hold (its quantity would
    # only repeat Qty); otherwise MISMATCH and the broker's quantity.
    Column("recon", "Bkr", width=3),
    Column("value", "Mkt value", "right", 9),
    Column("unrealized", "Unreal.", "right", 7),
    Column("realized", "Real.", "right", 6),
)


def unprotected(row: PositionRow) -> bool:
    """An open position that should have a stop and has none at the broker or on its way."""
    return row.quantity != 0 and row.stop_state is StopState.NONE and row.stop_expected


def stop_cell(row: PositionRow) -> Cell:
    if row.stop_state is StopState.NONE:
        if not row.quantity:
            return MISSING
        # Nobody asked for one (PROTECTIVE_STOP_PCT off): a fact, shown quietly.
        return (NO_STOP, "cell--alert") if row.stop_expected else (NO_STOP_WANTED, "cell--dim")
    text = f"{price(row.stop_price)} {STOP_MARKS[row.stop_state]}"
    covered, held = abs(row.stop_quantity), abs(row.quantity)
    if covered != held:
        # Say how much it covers. Less than the position happens for a moment while an
        # exit works (stop and exits never exceed the position); more, or a stop left
        # for a flat symbol, could open a position of its own.
        return (f"{text} {covered}sh", "cell--warn" if covered < held else "cell--alert")
    return (text, "cell--positive" if row.stop_state is StopState.RESTING else "cell--warn")


def recon_cell(row: PositionRow) -> Cell:
    if row.reconciled:
        return "ok"
    broker = MISSING if row.broker_quantity is None else signed_qty(row.broker_quantity)
    return (f"MISMATCH {broker}", "cell--alert")


def position_cells(row: PositionRow) -> tuple[Cell, ...]:
    return (
        (row.symbol, "cell--alert") if unprotected(row) else row.symbol,
        signed_qty(row.quantity),
        price(row.avg_cost) if row.quantity else MISSING,
        stop_cell(row),
        recon_cell(row),
        signed_money(row.market_value),
        (signed_money(row.unrealized), sign_class(row.unrealized)),
        (signed_money(row.realized), sign_class(row.realized)),
    )


def _symbol_key(cell: object) -> str:
    return getattr(cell, "plain", str(cell))


class PositionsPane(Pane):
    def __init__(self) -> None:
        super().__init__(3, "Positions", id="positions")
        self.table = DiffTable(
            COLUMNS, sort_column="symbol", sort_key=_symbol_key, id="positions-table"
        )
        self._rows: tuple[PositionRow, ...] | None = None
        self.unprotected = 0  # open positions without a stop, as the title says

    def compose(self) -> ComposeResult:
        yield self.table

    def focus_target(self) -> Widget:
        return self.table

    def update_snapshot(self, snapshot: SystemSnapshot) -> None:
        rows = snapshot.positions
        if rows == self._rows:  # a handful of rows: comparing is cheaper than formatting
            return
        self._rows = rows
        self.table.sync((row.symbol, position_cells(row)) for row in rows)
        count = sum(1 for row in rows if unprotected(row))
        if count != self.unprotected:
            self.unprotected = count
            self.set_alarm(f"{count} {NO_STOP}" if count else "")
